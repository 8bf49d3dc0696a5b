/* Optimizer updates on the GPU: the CUDA twins of optim.py, one launch over ONE flat buffer per step.

Notation: P parameters in one flat vector p (every Parameter of the model is a view into it),
gradient g, step t (from 1), learning rate lr; bc1 = 1 - beta1^t and bc2 = 1 - beta2^t are computed
once per step on the host and passed in.
Adam:   g' = g + wd * p            (L2 weight decay, Adam)      or  p -= lr * wd * p  (decoupled, AdamW)
        m = b1 * m + (1 - b1) * g';   v = b2 * v + (1 - b2) * g'^2
        p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
SGD:    g' = g + wd * p;  buf = mu * buf + g';  step = g' + mu * buf (Nesterov) or buf;  p -= lr * step
Accumulate (the end of a backward pass): dst_k[i] += src_k[i] for K pairs of arrays, in one launch;
        the host passes a table of K rows (dst address, src address, length) in device memory.

Thread mapping: ONE THREAD PER PARAMETER i (grid-stride loop over 0 <= i < P). Accumulate: each thread
    walks the K rows of the table in order and, in each, the values i = thread, thread + grid, ... Each thread reads
    p[i], g[i] and its moment(s), updates them and writes them back: no two threads touch the same
    element, so one launch updates the whole model.

Arithmetic follows the Numba loop operation by operation: the hyper-parameters are double, the
    arithmetic is done in double and each stored value (p, m, v, buf) is rounded to T when it is
    written -- and read back from T when used again, as the Numba kernel reads m[i] after storing it.

Types: float (suffix _f32) and double (suffix _f64).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

template <typename T>
__device__ void adam_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                          long long n, double lr, double b1, double b2, double eps,
                          double bc1, double bc2, double wd, int decoupled)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        double gi = (double)g[i];
        T pi = p[i];
        if (decoupled)
            pi = (T)((double)pi - lr * wd * (double)pi);
        else
            gi += wd * (double)pi;
        const T mi = (T)(b1 * (double)m[i] + (1.0 - b1) * gi);
        const T vi = (T)(b2 * (double)v[i] + (1.0 - b2) * gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = (T)((double)pi - lr * ((double)mi / bc1) / (sqrt((double)vi / bc2) + eps));
    }
}

template <typename T>
__device__ void sgd_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, long long n,
                         double lr, double mu, double wd, int nesterov)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const T pi = p[i];
        double gi = (double)g[i] + wd * (double)pi;
        if (mu != 0.0) {
            const T bi = (T)(mu * (double)buf[i] + gi);
            buf[i] = bi;
            gi = nesterov ? gi + mu * (double)bi : (double)bi;
        }
        p[i] = (T)((double)pi - lr * gi);
    }
}

template <typename T>
__device__ void accumulate_impl(const long long* __restrict__ table, int K)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (int k = 0; k < K; ++k) {
        T* dst = (T*)table[3 * k];
        const T* src = (const T*)table[3 * k + 1];
        const long long n = table[3 * k + 2];
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
            dst[i] += src[i];
    }
}

#define MINICNN_OPTIM_ENTRIES(T, SUFFIX)                                                         \
extern "C" __global__ void adam_update_##SUFFIX(T* p, const T* g, T* m, T* v, long long n,         \
        double lr, double b1, double b2, double eps, double bc1, double bc2, double wd, int decoupled) \
{ adam_impl<T>(p, g, m, v, n, lr, b1, b2, eps, bc1, bc2, wd, decoupled); }                         \
extern "C" __global__ void sgd_update_##SUFFIX(T* p, const T* g, T* buf, long long n,              \
        double lr, double mu, double wd, int nesterov)                                             \
{ sgd_impl<T>(p, g, buf, n, lr, mu, wd, nesterov); }                                              \
extern "C" __global__ void accumulate_grads_##SUFFIX(const long long* table, int K)                \
{ accumulate_impl<T>(table, K); }

MINICNN_OPTIM_ENTRIES(float, f32)
MINICNN_OPTIM_ENTRIES(double, f64)
