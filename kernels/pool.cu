/* Max and average pooling on the GPU: the CUDA twins of the Numba loops in pool.py.

Notation:
    N, C    images, channels          H, W    input height, width
    KH, KW  window height, width      SH, SW  stride
    PH, PW  padding (each side)       OH, OW  output height, width
    OH = (H + 2*PH - KH) / SH + 1     (same for OW; pooling has no dilation: DH = DW = 1)

Layouts (C-contiguous): x, gx (N, C, H, W); y, gy, argmax (N, C, OH, OW);
    x[n, c, ih, iw] at ((n*C + c)*H + ih)*W + iw,   y[n, c, oh, ow] at ((n*C + c)*OH + oh)*OW + ow.
Window (oh, ow) covers rows ih = oh*SH - PH + kh (0 <= kh < KH) and columns iw = ow*SW - PW + kw.

Max forward, thread mapping: ONE THREAD PER OUTPUT (n, c, oh, ow).
    The rule of pool.py (PyTorch's): the winner starts as the window's first real pixel; the thread
    scans the real pixels in row-major order (kh, then kw) and v becomes the winner when
    v > best || v != v (larger, or NaN). So the FIRST maximum wins ties, and a NaN anywhere in the
    window wins -- the LAST NaN when there are several. The thread stores y (the winner's value,
    a NaN bit for bit) and argmax = ih*W + iw of the winner. Padding is never read (it counts as
    minus infinity).

Max backward, thread mapping: ONE THREAD PER INPUT PIXEL (n, c, ih, iw) -- a GATHER.
    gx[n, c, ih, iw] = sum of gy[n, c, oh, ow] over the windows (oh, ow) that CONTAIN the pixel and
    whose argmax equals ih*W + iw. The windows containing row ih are those with
        oh*SH - PH <= ih <= oh*SH - PH + KH - 1,  i.e.  ceil((ih + PH - KH + 1)/SH) <= oh <= (ih + PH)/SH,
    clipped to 0 <= oh < OH (the same for columns). They are visited in increasing (oh, ow) order,
    the order in which the Numba loop adds onto the pixel: deterministic, no atomics.

Average forward, thread mapping: ONE THREAD PER OUTPUT; the window sum (padding counts as zeros)
    is accumulated in double, as Numba does, then multiplied by 1/(KH*KW).
Average backward, thread mapping: ONE THREAD PER INPUT PIXEL -- a gather over the windows that
    contain it, each adding gy[n, c, oh, ow] / (KH*KW), in increasing (oh, ow) order, each addition
    rounded to T like the Numba kernel's  gx += g  (g in double).

Types: float (suffix _f32) and double (suffix _f64); argmax is int32.
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

/* The range lo..hi (inclusive) of window indices o along one axis whose window contains pixel i. */
__device__ inline void windows_containing(int i, int P, int K, int S, int O, int* lo, int* hi)
{
    const int t = i + P - K + 1;            /* o*S >= t */
    *lo = t <= 0 ? 0 : (t + S - 1) / S;
    const int h = (i + P) / S;              /* o*S <= i + P  (i + P >= 0) */
    *hi = h < O - 1 ? h : O - 1;
}

template <typename T>
__device__ void max_forward_impl(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                                 int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                                 int PH, int PW, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = i / ((long long)OH * OW);        /* n*C + c */
        const T* xp = x + plane * H * (long long)W;
        const int ih0 = oh * SH - PH < 0 ? 0 : oh * SH - PH;     /* the window's first real pixel */
        const int iw0 = ow * SW - PW < 0 ? 0 : ow * SW - PW;
        int where = ih0 * W + iw0;
        T best = xp[where];
        for (int kh = 0; kh < KH; ++kh) {
            const int ih = oh * SH - PH + kh;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int iw = ow * SW - PW + kw;
                if (iw < 0 || iw >= W) continue;
                const T v = xp[ih * W + iw];
                if (v > best || v != v) {                        /* larger, or NaN (v != v for NaN only) */
                    best = v;
                    where = ih * W + iw;
                }
            }
        }
        y[i] = best;
        argmax[i] = where;
    }
}

template <typename T>
__device__ void max_backward_impl(const T* __restrict__ gy, const int* __restrict__ argmax, T* __restrict__ gx,
                                  int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                                  int PH, int PW, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int iw = (int)(i % W);
        const int ih = (int)((i / W) % H);
        const long long plane = i / ((long long)H * W);
        const int me = ih * W + iw;
        int oh0, oh1, ow0, ow1;
        windows_containing(ih, PH, KH, SH, OH, &oh0, &oh1);
        windows_containing(iw, PW, KW, SW, OW, &ow0, &ow1);
        const long long base = plane * OH * (long long)OW;
        T acc = (T)0;
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow) {
                const long long j = base + (long long)oh * OW + ow;
                if (argmax[j] == me) acc += gy[j];
            }
        gx[i] = acc;
    }
}

template <typename T>
__device__ void avg_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                 int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                                 int PH, int PW, int OH, int OW)
{
    const double scale = 1.0 / (double)(KH * KW);
    const long long total = (long long)N * C * OH * OW;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = i / ((long long)OH * OW);
        const T* xp = x + plane * H * (long long)W;
        double s = 0.0;
        for (int kh = 0; kh < KH; ++kh) {
            const int ih = oh * SH - PH + kh;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int iw = ow * SW - PW + kw;
                if (iw >= 0 && iw < W) s += (double)xp[ih * W + iw];
            }
        }
        y[i] = (T)(s * scale);
    }
}

template <typename T>
__device__ void avg_backward_impl(const T* __restrict__ gy, T* __restrict__ gx,
                                  int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                                  int PH, int PW, int OH, int OW)
{
    const double scale = 1.0 / (double)(KH * KW);
    const long long total = (long long)N * C * H * W;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int iw = (int)(i % W);
        const int ih = (int)((i / W) % H);
        const long long plane = i / ((long long)H * W);
        int oh0, oh1, ow0, ow1;
        windows_containing(ih, PH, KH, SH, OH, &oh0, &oh1);
        windows_containing(iw, PW, KW, SW, OW, &ow0, &ow1);
        const long long base = plane * OH * (long long)OW;
        T acc = (T)0;
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow)
                acc = (T)((double)acc + (double)gy[base + (long long)oh * OW + ow] * scale);
        gx[i] = acc;
    }
}

#define MINICNN_POOL_ENTRIES(T, SUFFIX)                                                          \
extern "C" __global__ void max_pool2d_forward_##SUFFIX(const T* x, T* y, int* argmax,             \
        int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) \
{ max_forward_impl<T>(x, y, argmax, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); }                \
extern "C" __global__ void max_pool2d_backward_##SUFFIX(const T* gy, const int* argmax, T* gx,    \
        int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) \
{ max_backward_impl<T>(gy, argmax, gx, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); }             \
extern "C" __global__ void avg_pool2d_forward_##SUFFIX(const T* x, T* y,                          \
        int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) \
{ avg_forward_impl<T>(x, y, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); }                        \
extern "C" __global__ void avg_pool2d_backward_##SUFFIX(const T* gy, T* gx,                       \
        int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) \
{ avg_backward_impl<T>(gy, gx, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); }

MINICNN_POOL_ENTRIES(float, f32)
MINICNN_POOL_ENTRIES(double, f64)
