/* im2col and col2im on the GPU: the CUDA twins of the Numba loops in im2col.py.

Notation (the same in every kernel of minicnn):
    N   images in the batch          C   input channels
    H, W    input height and width   KH, KW  kernel height and width
    SH, SW  stride                   PH, PW  zero padding (each side)
    DH, DW  dilation                 OH, OW  output height and width
    OH = (H + 2*PH - DH*(KH-1) - 1) / SH + 1   (same for OW)

Layouts (all C-contiguous, row-major):
    x   (N, C, H, W)                     x[n, c, ih, iw]   at ((n*C + c)*H + ih)*W + iw
    col (C, KH, KW, N, OH, OW)           read as the (C*KH*KW, N*OH*OW) matrix of the GEMM
    col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]   (0 outside the image)

im2col, thread mapping: ONE THREAD PER COLUMN ENTRY.
    Thread i (a grid-stride loop, so any grid size covers any tensor) owns col[i]; it splits i into
    (c, kh, kw, n, oh, ow) with / and %, computes (ih, iw) by the formula above and copies one value.
    The index arithmetic is 32-bit (gpu.py keeps every array below 2^31 values): a GPU divides in
    software, and a 64-bit division costs several 32-bit ones. (Measured on an H200 for eip4, this
    kernel is memory-bound and hardly changed; col2im, which divides more, ran 1.7 times faster.)
    Consecutive threads write consecutive col entries (coalesced stores). The Numba version
    gives one row r = (c, kh, kw) of the column matrix to each CPU thread instead.

col2im, thread mapping: ONE THREAD PER INPUT ELEMENT (n, c, ih, iw) -- a GATHER.
    col2im is the adjoint of im2col: dx[n, c, ih, iw] = sum of every col entry copied from (ih, iw).
    The Numba loop scatters (each entry adds itself onto its pixel); on the GPU a scatter would need
    atomicAdd, whose order changes from run to run. Instead each thread pulls in what lands on its
    own pixel. For a tap (kh, kw) the output row that reads row ih solves ih = oh*SH - PH + kh*DH:
        oh = (ih + PH - kh*DH) / SH     only when the division is exact and 0 <= oh < OH
    (the same for ow). Each thread loops over kh, then kw, in increasing order -- the order in
    which the Numba loop adds the same terms onto this pixel -- so the sum is deterministic (bit
    for bit the same every run) and, for float32, rounds exactly like the CPU kernel. No atomics.

Types: float (suffix _f32) and double (suffix _f64), one template instantiated twice.
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

template <typename T>
__device__ void im2col_impl(const T* __restrict__ x, T* __restrict__ col,
                            int N, int C, int H, int W, int KH, int KW,
                            int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW)
{
    const long long total = (long long)C * KH * KW * N * OH * OW;   /* < 2^31: checked by gpu.py */
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        int r = (int)i;                           /* 32-bit: a 64-bit division costs several times more */
        const int ow = r % OW; r /= OW;
        const int oh = r % OH; r /= OH;
        const int n = r % N;   r /= N;
        const int kw = r % KW; r /= KW;
        const int kh = r % KH;
        const int c = r / KH;
        const int ih = oh * SH - PH + kh * DH;
        const int iw = ow * SW - PW + kw * DW;
        T v = (T)0;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = x[((n * C + c) * H + ih) * W + iw];
        col[i] = v;
    }
}

template <typename T>
__device__ void col2im_impl(const T* __restrict__ col, T* __restrict__ dx,
                            int N, int C, int H, int W, int KH, int KW,
                            int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;   /* this and the size of col < 2^31: checked by gpu.py */
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        int r = (int)i;
        const int iw = r % W; r /= W;
        const int ih = r % H; r /= H;
        const int c = r % C;
        const int n = r / C;
        T acc = (T)0;
        for (int kh = 0; kh < KH; ++kh) {
            const int th = ih + PH - kh * DH;   /* = oh*SH when tap kh of output row oh reads row ih */
            if (th < 0) break;                  /* th only decreases with kh */
            int oh = th;
            if (SH != 1) {                      /* (skip the division for stride 1, the usual case) */
                if (th % SH != 0) continue;
                oh = th / SH;
            }
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int tw = iw + PW - kw * DW;
                if (tw < 0) break;
                int ow = tw;
                if (SW != 1) {
                    if (tw % SW != 0) continue;
                    ow = tw / SW;
                }
                if (ow >= OW) continue;
                acc += col[((((c * KH + kh) * KW + kw) * N + n) * OH + oh) * OW + ow];
            }
        }
        dx[i] = acc;
    }
}

#define MINICNN_IM2COL_ENTRIES(T, SUFFIX)                                                        \
extern "C" __global__ void im2col_##SUFFIX(const T* x, T* col,                                   \
        int N, int C, int H, int W, int KH, int KW,                                              \
        int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW)                          \
{ im2col_impl<T>(x, col, N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW); }                   \
extern "C" __global__ void col2im_##SUFFIX(const T* col, T* dx,                                  \
        int N, int C, int H, int W, int KH, int KW,                                              \
        int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW)                          \
{ col2im_impl<T>(col, dx, N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW); }

MINICNN_IM2COL_ENTRIES(float, f32)
MINICNN_IM2COL_ENTRIES(double, f64)
