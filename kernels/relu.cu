/* ReLU on the GPU: the CUDA twin of relu.py, one pass each way.

Notation: n values (the activations or their gradient, flattened).
    y[i]  = x[i]  if x[i] > 0, else 0       (written "not x <= 0", so NaN passes through, as in relu.py)
    gx[i] = gy[i] * (y[i] > 0 ? 1 : 0)      (a product, as in gy * (y > 0): NaN and inf in gy propagate)

Thread mapping: ONE THREAD PER VALUE i (grid-stride loop). The backward pass reads the forward's
OUTPUT y as its mask: y > 0 exactly where x > 0, so x need not be kept.

Types: float (suffix _f32) and double (suffix _f64).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

template <typename T>
__device__ void relu_forward_impl(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const T v = x[i];
        y[i] = !(v <= (T)0) ? v : (T)0;
    }
}

template <typename T>
__device__ void relu_backward_impl(const T* __restrict__ gy, const T* __restrict__ y, T* __restrict__ gx,
                                   long long n)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        gx[i] = gy[i] * (y[i] > (T)0 ? (T)1 : (T)0);
}

#define MINICNN_RELU_ENTRIES(T, SUFFIX)                                                              \
extern "C" __global__ void relu_forward_##SUFFIX(const T* x, T* y, long long n)                       \
{ relu_forward_impl<T>(x, y, n); }                                                                    \
extern "C" __global__ void relu_backward_##SUFFIX(const T* gy, const T* y, T* gx, long long n)        \
{ relu_backward_impl<T>(gy, y, gx, n); }

MINICNN_RELU_ENTRIES(float, f32)
MINICNN_RELU_ENTRIES(double, f64)
