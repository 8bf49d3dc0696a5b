/* Dropout on the GPU: the CUDA twin of dropout.py (inverted dropout, mask from a counter-based hash).

Notation:
    n      number of values (the activations or their gradient, flattened)
    key    64-bit key drawn on the host once per dropout call (minicnn.random.draw_key), plus the value
           at `key_offset`: a pointer to a zero when the step runs eagerly; when a CUDA graph replays
           the step, a slot the host rewrites with the step's key before each replay (minicnn/cuda_graph.py)
    T      keep threshold ceil(p * 2^24);   scale = 1 / (1 - p), already rounded to the type T_

    z       = key + (i + 1) * 0x9E3779B97F4A7C15   (all unsigned 64-bit, wrapping)
    z       = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z       = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z       = z ^ (z >> 31)
    keep[i] = (z >> 40) >= T
    y[i]    = x[i] * (keep[i] ? scale : 0)          (the formulas of dropout.py)

Thread mapping: ONE THREAD PER VALUE i (grid-stride loop). Each thread hashes its own index, so no
random state is shared between threads and the result does not depend on the launch size: the
forward pass (x = activations) and the backward pass (x = gradient) use the same key and so the
same mask, and the CPU computes the same bits.

Types: x and y float (suffix _f32) or double (suffix _f64).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

__device__ __forceinline__ bool dropout_kept(unsigned long long key, long long i, unsigned long long T)
{
    unsigned long long z = key + ((unsigned long long)i + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (z >> 40) >= T;
}

template <typename T_>
__device__ void dropout_apply_impl(const T_* __restrict__ x, T_* __restrict__ y, unsigned long long key,
                                   unsigned long long T, T_ scale, long long n)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = x[i] * (dropout_kept(key, i, T) ? scale : (T_)0);
}

extern "C" __global__ void dropout_apply_f32(const float* x, float* y, unsigned long long key,
                                             const unsigned long long* key_offset, unsigned long long T,
                                             float scale, long long n)
{ dropout_apply_impl<float>(x, y, key + *key_offset, T, scale, n); }

extern "C" __global__ void dropout_apply_f64(const double* x, double* y, unsigned long long key,
                                             const unsigned long long* key_offset, unsigned long long T,
                                             double scale, long long n)
{ dropout_apply_impl<double>(x, y, key + *key_offset, T, scale, n); }
