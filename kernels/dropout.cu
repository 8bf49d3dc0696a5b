/* The dropout mask on the GPU: the CUDA twin of dropout.py (inverted dropout).

Notation:
    n      number of values (the mask has the shape of the activations, flattened)
    u[i]   uniform numbers in [0, 1), float32, drawn beforehand by the generator
           (cupy.random.Generator.random(shape, dtype=float32) on the device, or a NumPy
           Generator on the host -- dropout.py's uniform_float32 -- copied to the device)
    p      drop probability;   scale = 1 / (1 - p), already rounded to the mask's type T

    mask[i] = scale  if u[i] >= p,  else 0              (the formula of dropout.py)

Thread mapping: ONE THREAD PER MASK ENTRY i (grid-stride loop). Each thread reads one u[i] and
    writes one mask[i]: an elementwise threshold, no interaction between threads.

The comparison is done in double against `threshold`, which the Python wrapper sets to exactly
the value NumPy compares with in dropout.py (NumPy 2 compares a float32 array with a Python float
in float32, so the wrapper passes float32(p)); hence the same u gives the same mask, bit for bit.

Types: mask float (suffix _f32) or double (suffix _f64); u is always float32, as on the CPU.
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

template <typename T>
__device__ void dropout_mask_impl(const float* __restrict__ u, T* __restrict__ mask,
                                  double threshold, T scale, long long n)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        mask[i] = ((double)u[i] >= threshold) ? scale : (T)0;
}

extern "C" __global__ void dropout_mask_f32(const float* u, float* mask, double threshold, float scale,
                                            long long n)
{ dropout_mask_impl<float>(u, mask, threshold, scale, n); }

extern "C" __global__ void dropout_mask_f64(const float* u, double* mask, double threshold, double scale,
                                            long long n)
{ dropout_mask_impl<double>(u, mask, threshold, scale, n); }
