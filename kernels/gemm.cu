/* Matrix product on the GPU, the textbook way: 16 x 16 tiles through shared memory (gemm.py holds the CPU side).

The GPU backend multiplies with this kernel (kernels/gpu.py matmul_route "gemm"; cuBLAS through
cupy.matmul on request): an eager training step of a small network is bound by the host's time per
launch, not by the GPU, and CuPy cannot capture cuBLAS calls into a CUDA graph. It is also the
plainest fast GEMM there is, and worth reading once. sum_rows (at the end) is the product with a
vector of ones: a convolution's bias gradient.

Notation:
    batch   independent products       M, N, K   C (M x N) = A (M x K) @ B (K x N)
    sAb, sAm, sAk   element strides of A along batch, row, column (any layout: a transposed view
    sBb, sBk, sBn   is just other strides), likewise for B; C is written C-contiguous
    S, KS   split-K: the sum over k is cut into S slices of KS values (KS a multiple of TILE);
            slice s writes its own partial product Cp[b, s] = A[b, :, sKS:(s+1)KS] @ B[b, sKS:(s+1)KS, :],
            and gemm_sum_slices adds the S partial products in slice order (so the result is repeatable)
    bias    optional (has_bias): bias[i] is added to row i of every product, once, to the finished sum
            (by gemm itself when S == 1, else by gemm_sum_slices): a convolution's bias, with no launch of its own

    Cp[(b*S + s)*M*N + i*N + j] = sum over k in slice s of A[b*sAb + i*sAm + k*sAk] * B[b*sBb + k*sBk + j*sBn]

Thread mapping: ONE BLOCK OF TILE*TILE = 256 THREADS PER OUTPUT TILE (b, s, tile row, tile column);
thread (ty, tx) = (threadIdx.x / TILE, threadIdx.x % TILE) owns output (i, j) = (tile row*TILE + ty,
tile column*TILE + tx). For each step of TILE values of k:
    1. every thread loads ONE value of A's tile (row i, column k + tx) and ONE of B's (row k + ty,
       column j) into shared memory (zero outside the matrices), then waits for the others; for an
       operand that is a transposed view the roles of tx and ty swap, so that a warp still reads
       consecutive addresses (one memory transaction instead of sixteen);
    2. every thread adds the TILE products of its row of As with its column of Bs, then waits again
       before the tiles are overwritten.
Each value loaded from global memory is so used TILE times. Accumulation in T (float or double), as
cuBLAS does. Blocks run a grid-stride loop over the tiles, so any grid size covers any product.

Types: float (suffix _f32) and double (suffix _f64).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

#define TILE 16

template <typename T>
__device__ void gemm_impl(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ Cp,
                          const T* __restrict__ bias, int has_bias, int batch, int M, int N, int K, int S, int KS,
                          long long sAb, long long sAm, long long sAk, long long sBb, long long sBk, long long sBn)
{
    __shared__ T As[TILE][TILE + 1];   /* +1: a warp writing a column of a tile hits 16 different banks */
    __shared__ T Bs[TILE][TILE + 1];
    const int tx = threadIdx.x % TILE, ty = threadIdx.x / TILE;
    const long long tilesM = (M + TILE - 1) / TILE, tilesN = (N + TILE - 1) / TILE;
    const long long tiles = (long long)batch * S * tilesM * tilesN;
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {   /* the same t for the whole block */
        const long long tn = t % tilesN, tm = (t / tilesN) % tilesM;
        const long long s = (t / (tilesN * tilesM)) % S, b = t / (tilesN * tilesM * S);
        const long long i = tm * TILE + ty, j = tn * TILE + tx;
        const long long k0 = s * KS, k1 = k0 + KS < K ? k0 + KS : K;
        const T* a = A + b * sAb;
        const T* bb = B + b * sBb;
        T acc = (T)0;
        for (long long kk = k0; kk < k1; kk += TILE) {
            /* Each thread loads one value of each tile. Which one: consecutive threads (tx) should read
               consecutive addresses, so the mapping follows the operand's contiguous direction. */
            if (sAk == 1 || sAm != 1) {      /* A row-major: tx walks along k */
                const long long ka = kk + tx;
                As[ty][tx] = (i < M && ka < k1) ? a[i * sAm + ka * sAk] : (T)0;
            } else {                          /* A a transposed view: tx walks along i */
                const long long ia = tm * TILE + tx, ka = kk + ty;
                As[tx][ty] = (ia < M && ka < k1) ? a[ia * sAm + ka * sAk] : (T)0;
            }
            if (sBn == 1 || sBk != 1) {      /* B row-major: tx walks along j */
                const long long kb = kk + ty;
                Bs[ty][tx] = (kb < k1 && j < N) ? bb[kb * sBk + j * sBn] : (T)0;
            } else {                          /* B a transposed view: tx walks along k */
                const long long kb = kk + tx, jb = tn * TILE + ty;
                Bs[tx][ty] = (kb < k1 && jb < N) ? bb[kb * sBk + jb * sBn] : (T)0;
            }
            __syncthreads();
            for (int q = 0; q < TILE; ++q)
                acc += As[ty][q] * Bs[q][tx];
            __syncthreads();
        }
        if (i < M && j < N)   /* with one slice (S == 1) the sum is complete: the row's bias goes on here */
            Cp[((b * S + s) * M + i) * N + j] = (has_bias && S == 1) ? acc + bias[i] : acc;
    }
}

/* C[b, :, :] = sum over s = 0..S-1, in that order, of Cp[b, s, :, :]: one thread per value of C (MN = M*N). */
template <typename T>
__device__ void sum_slices_impl(const T* __restrict__ Cp, T* __restrict__ Cm, const T* __restrict__ bias,
                                int has_bias, long long MN, long long N, int S, long long total)
{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long b = i / MN, r = i - b * MN;
        const T* p = Cp + b * S * MN + r;
        T acc = p[0];
        for (int s = 1; s < S; ++s)
            acc += p[s * MN];
        Cm[i] = has_bias ? acc + bias[r / N] : acc;   /* the bias of row r / N, onto the finished sum */
    }
}

/* out[r] = sum over j < L of A[r*L + j], for R rows: ONE BLOCK PER ROW (grid-stride over rows); thread t adds
   j = t, t + blockDim.x, ... in double, then the block adds its partial sums as a tree in shared memory,
   half = P/2, P/4, ..., 1 (P = blockDim.x rounded up to a power of two): the same order every run. */
#define SUM_MAX_THREADS 256

template <typename T>
__device__ void sum_rows_impl(const T* __restrict__ A, T* __restrict__ out, int R, long long L)
{
    __shared__ double part[SUM_MAX_THREADS];
    const int t = threadIdx.x;
    int P = 1;
    while (P < (int)blockDim.x) P *= 2;
    for (int r = blockIdx.x; r < R; r += gridDim.x) {   /* the same r for the whole block */
        double sum = 0.0;
        for (long long j = t; j < L; j += blockDim.x)
            sum += (double)A[(long long)r * L + j];
        part[t] = sum;
        __syncthreads();
        for (int half = P / 2; half > 0; half /= 2) {
            if (t < half && t + half < (int)blockDim.x)
                part[t] += part[t + half];
            __syncthreads();
        }
        if (t == 0)
            out[r] = (T)part[0];
        __syncthreads();
    }
}

#define MINICNN_GEMM_ENTRIES(T, SUFFIX)                                                              \
extern "C" __global__ void gemm_##SUFFIX(const T* A, const T* B, T* Cp, const T* bias, int has_bias,     \
        int batch, int M, int N, int K, int S, int KS, long long sAb, long long sAm, long long sAk,    \
        long long sBb, long long sBk, long long sBn)                                                  \
{ gemm_impl<T>(A, B, Cp, bias, has_bias, batch, M, N, K, S, KS, sAb, sAm, sAk, sBb, sBk, sBn); }       \
extern "C" __global__ void gemm_sum_slices_##SUFFIX(const T* Cp, T* Cm, const T* bias, int has_bias,   \
        long long MN, long long N, int S, long long total)                                           \
{ sum_slices_impl<T>(Cp, Cm, bias, has_bias, MN, N, S, total); }                                       \
extern "C" __global__ void sum_rows_##SUFFIX(const T* A, T* out, int R, long long L)                   \
{ sum_rows_impl<T>(A, out, R, L); }

MINICNN_GEMM_ENTRIES(float, f32)
MINICNN_GEMM_ENTRIES(double, f64)
