/* Batch normalisation in training mode on the GPU: the CUDA twin of batchnorm.py, in two launches each way.

Notation:
    N, C    images, channels          H, W    height, width;  HW = H*W
    M       values per channel = N*HW  S       slices each channel is cut into for the sums
Layout (C-contiguous): x, y, gy, gx (N, C, H, W); x[n, c, hw] at (n*C + c)*HW + hw.
    Value j (0 <= j < M) of channel c is x[n = j / HW, c, hw = j % HW].

With `relu` set, the layer normalises relu(x) instead of x (a ReLU fused in front: its own launches and
its output array saved): every read of x below reads relu(x), and the backward pass ends with
gx *= [x > 0], the ReLU's gradient. With `drop` set, a dropout layer is fused behind it: y[i] is
multiplied by mask[i] (dropout.cu's hash of (key, i): scale where kept, 0 where dropped) and the
backward pass reads gy[i] * mask[i] wherever it reads gy[i].

The formulas (batchnorm.py; sums in double, k[c] = x[0, c, 0] a value of the channel):
    mean[c]   = k + sum(x - k) / M          var[c] = sum((x - k)^2) / M - (sum(x - k) / M)^2
    invstd[c] = 1 / sqrt(var[c] + eps)      y = (x - mean[c]) * (invstd[c] * gamma[c]) + beta[c]
    backward: xhat = (x - mean[c]) * invstd[c];  dbeta[c] = sum gy;  dgamma[c] = sum gy * xhat
              gx = gamma[c] * invstd[c] * (gy - dbeta[c] / M - xhat * dgamma[c] / M)

Why two launches: a sum over a channel needs every thread that touched the channel, and threads of
different blocks cannot wait for each other inside one launch.
  1. *_sums: ONE BLOCK PER (channel c, slice s), C*S blocks. Thread t of the block adds the values
     j = s*B + t, s*B + t + S*B, ... (B = blockDim.x; consecutive threads read consecutive addresses),
     then the block adds its B partial sums in shared memory, as a tree:
         half = P/2, P/4, ..., 1  (P = blockDim.x rounded up to a power of two)
         thread t < half adds part[t + half] into part[t]; all threads wait (__syncthreads) each round
     and thread 0 writes the block's two sums to partial[(c*S + s)*2 + 0/1].
  2. the elementwise pass: ONE THREAD PER VALUE (n, c, hw). It adds the S partial sums of its channel
     (s = 0..S-1, the same order in every thread, so every thread gets the same bits), forms the
     channel's statistics and writes its output; the thread of value j = 0 also writes the per-channel
     results (mean, var, invstd, and the running statistics when `update`; or dgamma, dbeta). The
     statistics are fused into this pass: there is no launch of their own.
    running_mean <- (1 - momentum) * running_mean + momentum * mean;  running_var likewise with var * M / (M - 1)
No atomics anywhere: the result is the same run to run.

Types: x, y, gy, gx, gamma, beta, mean, var, invstd float (suffix _f32) or double (suffix _f64); partial
double. The blocks have at most BN_MAX_THREADS threads (the size of the shared arrays).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

#define BN_MAX_THREADS 256

/* dropout.cu's mask, copied verbatim (each .cu file compiles alone; tests/test_gpu.py checks the two copies
   are the same text): is value i kept under `key`, with threshold T on its 24 random bits? */
__device__ __forceinline__ bool dropout_kept(unsigned long long key, long long i, unsigned long long T)
{
    unsigned long long z = key + ((unsigned long long)i + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (z >> 40) >= T;
}

/* The fused dropout's mask applied to value i (v itself without one): the output forward, gy backward. */
struct BnDropout { int on; unsigned long long key, threshold; double scale; };

template <typename T>
__device__ __forceinline__ T bn_dropout(T v, long long i, BnDropout d)
{
    return d.on ? v * (dropout_kept(d.key, i, d.threshold) ? (T)d.scale : (T)0) : v;
}

/* What the layer normalises: x itself, or relu(x) = x where x > 0, else 0 (NaN passes, as in relu.cu). */
template <typename T>
__device__ __forceinline__ T bn_input(T v, int relu)
{
    return (relu && v <= (T)0) ? (T)0 : v;
}

/* Add a[t] and b[t] over the threads of the block; every thread returns with a[0], b[0] the totals. */
__device__ void block_sum2(double* a, double* b)
{
    const int t = threadIdx.x;
    int P = 1;
    while (P < (int)blockDim.x) P *= 2;
    __syncthreads();
    for (int half = P / 2; half > 0; half /= 2) {
        if (t < half && t + half < (int)blockDim.x) {
            a[t] += a[t + half];
            b[t] += b[t + half];
        }
        __syncthreads();
    }
}

/* The block adds its threads' (sa, sb) and thread 0 stores the two totals at out[0], out[1]; a and b are
   free again when it returns (the next block of a grid-stride loop refills them). */
__device__ void store_block_sums(double* a, double* b, double sa, double sb, double* __restrict__ out)
{
    a[threadIdx.x] = sa;
    b[threadIdx.x] = sb;
    block_sum2(a, b);
    if (threadIdx.x == 0) {
        out[0] = a[0];
        out[1] = b[0];
    }
    __syncthreads();
}

/* Channel c's two sums: its S slices' partial sums added in slice order (the same bits in every thread). */
__device__ void add_slices(const double* __restrict__ partial, int c, int S, double* a, double* b)
{
    double sa = 0.0, sb = 0.0;
    for (int s = 0; s < S; ++s) {
        sa += partial[(c * S + s) * 2];
        sb += partial[(c * S + s) * 2 + 1];
    }
    *a = sa;
    *b = sb;
}

/* Forward sums of block (c, s): sum(x - k) and sum((x - k)^2) over the slice. */
template <typename T>
__device__ void forward_sums_impl(const T* __restrict__ x, double* __restrict__ partial,
                                  int N, int C, int HW, int S, int relu)
{
    __shared__ double a[BN_MAX_THREADS], b[BN_MAX_THREADS];
    const int M = N * HW;                   /* 32-bit index arithmetic: gpu.py keeps x below 2^31 values */
    const int B = blockDim.x;
    for (int blk = blockIdx.x; blk < C * S; blk += gridDim.x) {  /* the same for the whole block */
        const int c = blk / S, s = blk % S;
        const double k = (double)bn_input(x[c * HW], relu);
        double sd = 0.0, sq = 0.0;
        for (int j = s * B + threadIdx.x; j < M; j += S * B) {
            const double d = (double)bn_input(x[((j / HW) * C + c) * HW + j % HW], relu) - k;
            sd += d;
            sq += d * d;
        }
        store_block_sums(a, b, sd, sq, partial + blk * 2);
    }
}

/* Forward elementwise pass: the channel's statistics from its S partial sums, then y. */
template <typename T>
__device__ void forward_impl(const T* __restrict__ x, const double* __restrict__ partial,
                             const T* __restrict__ gamma, const T* __restrict__ beta,
                             T* __restrict__ y, T* __restrict__ mean, T* __restrict__ var, T* __restrict__ invstd,
                             T* __restrict__ running_mean, T* __restrict__ running_var,
                             int N, int C, int HW, int S, int update, int relu, double eps, double momentum,
                             BnDropout drop)
{
    const long long total = (long long)N * C * HW;
    const double M = (double)N * HW;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int c = ((int)i / HW) % C;
        double sd, sq;
        add_slices(partial, c, S, &sd, &sq);
        const double k = (double)bn_input(x[c * HW], relu);
        const double mu = k + sd / M;
        double v = sq / M - (sd / M) * (sd / M);
        v = v > 0.0 ? v : 0.0;
        const double r = 1.0 / sqrt(v + eps);
        y[i] = bn_dropout((T)(((double)bn_input(x[i], relu) - mu) * (r * (double)gamma[c]) + (double)beta[c]), i, drop);
        if ((int)i == c * HW) {  /* value j = 0 of channel c: n = 0, hw = 0 */
            mean[c] = (T)mu;
            var[c] = (T)v;
            invstd[c] = (T)r;
            if (update) {  /* the running statistics, in place; the variance unbiased */
                running_mean[c] = (T)((double)running_mean[c] * (1.0 - momentum) + momentum * mu);
                running_var[c] = (T)((double)running_var[c] * (1.0 - momentum) + momentum * v * (M / (M > 1.0 ? M - 1.0 : 1.0)));
            }
        }
    }
}

/* Backward sums of block (c, s): sum(gy) and sum(gy * (x - mean)) over the slice. */
template <typename T>
__device__ void backward_sums_impl(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ mean,
                                   double* __restrict__ partial, int N, int C, int HW, int S, int relu,
                                   BnDropout drop)
{
    __shared__ double a[BN_MAX_THREADS], b[BN_MAX_THREADS];
    const int M = N * HW;
    const int B = blockDim.x;
    for (int blk = blockIdx.x; blk < C * S; blk += gridDim.x) {
        const int c = blk / S, s = blk % S;
        const double m = (double)mean[c];
        double sg = 0.0, sgx = 0.0;
        for (int j = s * B + threadIdx.x; j < M; j += S * B) {
            const int at = ((j / HW) * C + c) * HW + j % HW;
            const double g = (double)bn_dropout(gy[at], at, drop);
            sg += g;
            sgx += g * ((double)bn_input(x[at], relu) - m);
        }
        store_block_sums(a, b, sg, sgx, partial + blk * 2);
    }
}

/* Backward elementwise pass: dbeta, dgamma of the channel from its partial sums, then gx. */
template <typename T>
__device__ void backward_impl(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ mean,
                              const T* __restrict__ invstd, const T* __restrict__ gamma,
                              const double* __restrict__ partial, T* __restrict__ gx,
                              T* __restrict__ dgamma, T* __restrict__ dbeta, int N, int C, int HW, int S,
                              int relu, BnDropout drop)
{
    const long long total = (long long)N * C * HW;
    const double M = (double)N * HW;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int c = ((int)i / HW) % C;
        double db, dg;
        add_slices(partial, c, S, &db, &dg);
        const double m = (double)mean[c], k = (double)invstd[c];
        dg *= k;  /* sum gy * xhat = invstd * sum gy * (x - mean) */
        const double xhat = ((double)bn_input(x[i], relu) - m) * k;
        const T g = (T)((double)gamma[c] * k * ((double)bn_dropout(gy[i], i, drop) - db / M - xhat * dg / M));
        gx[i] = relu ? g * (x[i] > (T)0 ? (T)1 : (T)0) : g;  /* the ReLU's gradient, as relu.cu writes it */
        if ((int)i == c * HW) {
            dgamma[c] = (T)dg;
            dbeta[c] = (T)db;
        }
    }
}

/* The entry points' dropout arguments as one value. The key used is key + *key_offset: key_offset points to a
   zero when the step runs eagerly, and to a slot the host rewrites before each replay of a CUDA graph
   (minicnn/cuda_graph.py: a replay cannot change the key passed by value). Read only when dropout is on. */
#define BN_DROPOUT BnDropout{drop, drop ? key + *key_offset : 0ULL, threshold, scale}

#define MINICNN_BN_ENTRIES(T, SUFFIX)                                                                    \
extern "C" __global__ void batch_norm_forward_sums_##SUFFIX(const T* x, double* partial,                  \
        int N, int C, int HW, int S, int relu)                                                            \
{ forward_sums_impl<T>(x, partial, N, C, HW, S, relu); }                                                \
extern "C" __global__ void batch_norm_forward_##SUFFIX(const T* x, const double* partial, const T* gamma, \
        const T* beta, T* y, T* mean, T* var, T* invstd, T* running_mean, T* running_var,                 \
        int N, int C, int HW, int S, int update, int relu, double eps, double momentum,                   \
        int drop, unsigned long long key, const unsigned long long* key_offset,                            \
        unsigned long long threshold, double scale)                                                       \
{ forward_impl<T>(x, partial, gamma, beta, y, mean, var, invstd, running_mean, running_var,               \
                  N, C, HW, S, update, relu, eps, momentum, BN_DROPOUT); }                              \
extern "C" __global__ void batch_norm_backward_sums_##SUFFIX(const T* gy, const T* x, const T* mean,      \
        double* partial, int N, int C, int HW, int S, int relu,                                           \
        int drop, unsigned long long key, const unsigned long long* key_offset,                            \
        unsigned long long threshold, double scale)                                                       \
{ backward_sums_impl<T>(gy, x, mean, partial, N, C, HW, S, relu, BN_DROPOUT); }                         \
extern "C" __global__ void batch_norm_backward_##SUFFIX(const T* gy, const T* x, const T* mean,           \
        const T* invstd, const T* gamma, const double* partial, T* gx, T* dgamma, T* dbeta,              \
        int N, int C, int HW, int S, int relu,                                                            \
        int drop, unsigned long long key, const unsigned long long* key_offset,                            \
        unsigned long long threshold, double scale)                                                       \
{ backward_impl<T>(gy, x, mean, invstd, gamma, partial, gx, dgamma, dbeta, N, C, HW, S, relu,             \
                   BN_DROPOUT); }

MINICNN_BN_ENTRIES(float, f32)
MINICNN_BN_ENTRIES(double, f64)
