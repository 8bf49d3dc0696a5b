"""Random inputs shared by the CUDA kernel tests (host emulation and device): pooling windows with ties, NaNs and
infinities, and matrix products with ragged tiles, transposed views and broadcast batches."""
import numpy as np
from hypothesis import strategies as st


@st.composite
def pool_cases(draw):
    """(N, C, H, W, KH, KW, SH, SW, PH, PW, seed): padding at most half the window, window inside the padded input."""
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2))
    H, W = draw(st.integers(max(1, KH - 2 * PH), 7)), draw(st.integers(max(1, KW - 2 * PW), 7))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return N, C, H, W, KH, KW, SH, SW, PH, PW, draw(st.integers(0, 2 ** 31 - 1))


def pool_input(rng, shape, dtype, values):
    """normal: N(0, 1). ties: small integers, many equal values (the first maximum in row-major order wins).
    nans: small integers with NaN (several payloads and both signs), +inf and -inf mixed in, often several
    NaNs to a window (a NaN anywhere wins, the last one in row-major order)."""
    if values == "normal":
        return rng.standard_normal(shape).astype(dtype)
    x = rng.integers(-2, 3, shape).astype(dtype)
    if values == "nans":
        bits = x.view(np.uint32 if dtype == np.float32 else np.uint64)
        nan = [0x7FC00000, 0xFFC00000, 0x7FC00123] if dtype == np.float32 else \
            [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000123]
        pick = rng.random(shape)
        bits[pick < 0.3] = rng.choice(np.array(nan, bits.dtype), size=int((pick < 0.3).sum()))
        x[(pick >= 0.3) & (pick < 0.4)] = np.inf
        x[(pick >= 0.4) & (pick < 0.5)] = -np.inf
    return x


def same_bits(a, b):
    """Equal arrays bit for bit: a NaN must be the same NaN (sign and payload), -0.0 is not 0.0."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def gemm_cases(draw):
    """(a, b): shapes with ragged tiles, views with other strides (transposed), broadcast batch dimensions."""
    M, N, K = draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.integers(1, 40))
    batch_a, batch_b = draw(st.sampled_from([((), ()), ((2,), (2,)), ((3,), ()), ((2, 1), (1, 2))]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    a = rng.standard_normal(batch_a + (M, K)).astype(dtype)
    b = rng.standard_normal(batch_b + (K, N)).astype(dtype)
    if draw(st.booleans()):  # a as the transpose of a contiguous (K, M) array: column strides
        a = np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    if draw(st.booleans()):
        b = np.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2)
    return a, b
