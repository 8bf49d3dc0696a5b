/* Cross-entropy from logits on the GPU: the CUDA twin of cross_entropy.py, one launch each way.

Notation: N rows (images), K classes; x (N, K) logits, t (N,) labels (64-bit), gy the loss's gradient
(gy_step = 0: one value for a mean or a sum; gy_step = 1: N values), D = N for a mean, else 1.
    m[n]     = max_k x[n, k]
    s[n]     = sum_k exp(x[n, k] - m[n])                  (in double)
    loss[n]  = log(s[n]) - (x[n, t[n]] - m[n])
    p[n, k]  = exp(x[n, k] - m[n]) / s[n]
    gx[n, k] = (p[n, k] - [k == t[n]]) * (gy[n * gy_step] / D)
    reduced  = (sum_n loss[n]) / D                        (the mean or the sum: the forward's third output)
A label outside [0, K) gives a NaN loss and a NaN row of p (checking would need the host).

Thread mapping: forward, ONE BLOCK, each of its threads t handling rows n = t, t + blockDim.x, ...
(K is 10 for MNIST: a row is a few dozen operations) and adding its rows' losses; the block then adds
the threads' sums as a tree in shared memory (half = P/2, ..., 1), the same order every run, and
thread 0 writes `reduced`. One block is plenty for a batch: 128 rows are 128 threads' work. Backward,
ONE THREAD PER VALUE (n, k), grid-stride.

Types: float (suffix _f32) and double (suffix _f64); the row sums are double in both.
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

#define CE_MAX_THREADS 256

template <typename T>
__device__ void cross_entropy_forward_impl(const T* __restrict__ x, const long long* __restrict__ t,
                                           T* __restrict__ losses, T* __restrict__ p, T* __restrict__ reduced,
                                           int N, int K, double divisor)
{
    __shared__ double part[CE_MAX_THREADS];
    double total = 0.0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        const T* row = x + (long long)n * K;
        T* prow = p + (long long)n * K;
        const long long label = t[n];
        if (label < 0 || label >= K) {
            const T nan = (T)__longlong_as_double(0x7ff8000000000000LL);
            losses[n] = nan;
            for (int k = 0; k < K; ++k) prow[k] = nan;
            total += (double)nan;
            continue;
        }
        T m = row[0];
        for (int k = 1; k < K; ++k)
            if (row[k] > m) m = row[k];
        double s = 0.0;
        for (int k = 0; k < K; ++k) s += exp((double)row[k] - (double)m);
        for (int k = 0; k < K; ++k) prow[k] = (T)(exp((double)row[k] - (double)m) / s);
        losses[n] = (T)(log(s) - ((double)row[label] - (double)m));
        total += (double)losses[n];
    }
    const int th = threadIdx.x;
    int P = 1;
    while (P < (int)blockDim.x) P *= 2;
    part[th] = total;
    __syncthreads();
    for (int half = P / 2; half > 0; half /= 2) {
        if (th < half && th + half < (int)blockDim.x)
            part[th] += part[th + half];
        __syncthreads();
    }
    if (th == 0)
        reduced[0] = (T)(part[0] / divisor);
}

template <typename T>
__device__ void cross_entropy_backward_impl(const T* __restrict__ p, const long long* __restrict__ t,
                                            const T* __restrict__ gy, int gy_step, T divisor,
                                            T* __restrict__ gx, int N, int K)
{
    const int total = N * K;
    const int step = blockDim.x * gridDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int n = i / K, k = i - n * K;
        const T f = gy[n * gy_step] / divisor;
        gx[i] = (p[i] - (k == t[n] ? (T)1 : (T)0)) * f;
    }
}

#define MINICNN_CE_ENTRIES(T, SUFFIX)                                                                 \
extern "C" __global__ void cross_entropy_forward_##SUFFIX(const T* x, const long long* t, T* losses,     \
                                                          T* p, T* reduced, int N, int K, double divisor) \
{ cross_entropy_forward_impl<T>(x, t, losses, p, reduced, N, K, divisor); }                                               \
extern "C" __global__ void cross_entropy_backward_##SUFFIX(const T* p, const long long* t, const T* gy,  \
                                                           int gy_step, T divisor, T* gx, int N, int K) \
{ cross_entropy_backward_impl<T>(p, t, gy, gy_step, divisor, gx, N, K); }

MINICNN_CE_ENTRIES(float, f32)
MINICNN_CE_ENTRIES(double, f64)
