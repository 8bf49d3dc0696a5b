/* Affine warp with bilinear interpolation on the GPU: the CUDA twin of affine.py.

Notation:
    N  images in the batch        C  channels per image
    H  rows (height)              W  columns (width)
    x      input,  float32 (N, C, H, W)      x[n, c, i, j] at ((n*C + c)*H + i)*W + j
    theta  float32 (N, 2, 3): for image n, maps an OUTPUT pixel (column j, row i) to INPUT coordinates
    out    output, float32 (N, C, H, W)

Index formula (inverse mapping, so every output pixel gets exactly one value):
    x_in = theta[n,0,0]*j + theta[n,0,1]*i + theta[n,0,2]        (input column, fractional)
    y_in = theta[n,1,0]*j + theta[n,1,1]*i + theta[n,1,2]        (input row, fractional)
    j0 = floor(x_in), i0 = floor(y_in), a = x_in - j0, b = y_in - i0
    out[n,c,i,j] = (1-a)(1-b) x[n,c,i0,j0]   + a(1-b) x[n,c,i0,j0+1]
                 + (1-a) b    x[n,c,i0+1,j0] + a b    x[n,c,i0+1,j0+1]
where a neighbour outside 0 <= row < H, 0 <= col < W counts as 0 (zero padding).

Thread mapping: ONE THREAD PER OUTPUT PIXEL (n, i, j) (grid-stride loop); the thread computes the
    source position and the four weights once and loops over the C channels, as the Numba loop
    does for each pixel. (Numba gives a whole image n to each CPU thread.) Coordinates and weights
    are computed in double, in the same order as affine.py, and each value is rounded to float once.

Types: float32 only, like affine.py (the Python wrapper raises TypeError for anything else).
Self-contained on purpose (no #include): NVRTC (CuPy) and nvcc compile exactly this text.
*/

__device__ inline int clamp_index(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

extern "C" __global__ void affine_warp_f32(const float* __restrict__ x, const float* __restrict__ theta,
                                           float* __restrict__ out, int N, int C, int H, int W)
{
    const long long total = (long long)N * H * W;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const int j = (int)(t % W);
        const int i = (int)((t / W) % H);
        const int n = (int)(t / ((long long)H * W));
        const float* th = theta + 6LL * n;
        const double t00 = th[0], t01 = th[1], t02 = th[2];
        const double t10 = th[3], t11 = th[4], t12 = th[5];
        const double xs = t00 * j + t01 * i + t02;
        const double ys = t10 * j + t11 * i + t12;
        const double fj = floor(xs);
        const double fi = floor(ys);
        const double a = xs - fj;
        const double b = ys - fi;
        const int j0 = (int)fj, i0 = (int)fi;
        const int j1 = j0 + 1, i1 = i0 + 1;
        /* corner weights, zero for neighbours outside the image */
        double w00 = (1.0 - a) * (1.0 - b);
        double w01 = a * (1.0 - b);
        double w10 = (1.0 - a) * b;
        double w11 = a * b;
        const bool in_j0 = 0 <= j0 && j0 < W, in_j1 = 0 <= j1 && j1 < W;
        const bool in_i0 = 0 <= i0 && i0 < H, in_i1 = 0 <= i1 && i1 < H;
        if (!(in_i0 && in_j0)) w00 = 0.0;
        if (!(in_i0 && in_j1)) w01 = 0.0;
        if (!(in_i1 && in_j0)) w10 = 0.0;
        if (!(in_i1 && in_j1)) w11 = 0.0;
        /* clamped indices keep every read in bounds (their weight is already 0 when clamped) */
        const int cj0 = clamp_index(j0, W - 1), cj1 = clamp_index(j1, W - 1);
        const int ci0 = clamp_index(i0, H - 1), ci1 = clamp_index(i1, H - 1);
        for (int c = 0; c < C; ++c) {
            const float* xp = x + ((long long)n * C + c) * H * (long long)W;
            const double v = w00 * xp[ci0 * W + cj0] + w01 * xp[ci0 * W + cj1]
                           + w10 * xp[ci1 * W + cj0] + w11 * xp[ci1 * W + cj1];
            out[(((long long)n * C + c) * H + i) * W + j] = (float)v;
        }
    }
}
