"""The IDX file format of MNIST: a 4-byte magic number, big-endian dimension sizes, then raw unsigned bytes."""
import gzip
import os
import struct
import zlib

import numpy as np

__all__ = ["GZIP_MAGIC", "IDX_UBYTE", "read_raw_bytes", "decompress_if_gzip", "parse_idx", "read_idx", "write_idx"]

GZIP_MAGIC = b"\x1f\x8b"  # first two bytes of every gzip stream
IDX_UBYTE = 0x08  # IDX type code for unsigned 8-bit integers, the only one MNIST uses


def decompress_if_gzip(data, name="<bytes>"):
    """Return the raw bytes: gunzip when `data` starts with the gzip magic bytes, else `data` unchanged."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{name}: starts like a gzip file but cannot be decompressed "
                         f"({type(exc).__name__}: {exc}); the file is probably truncated or corrupt") from exc


def read_raw_bytes(path):
    """The uncompressed content of `path`; gzip is detected from the magic bytes, not from the file name."""
    with open(path, "rb") as f:
        data = f.read()
    return decompress_if_gzip(data, os.fspath(path))


def parse_idx(data, name="<bytes>", expected_ndim=None):
    """Decode raw (uncompressed) IDX bytes into a uint8 array of the shape given by the header.

    Header: bytes 0-1 are zero, byte 2 is the type code (0x08 = ubyte), byte 3 the number of
    dimensions d; then d big-endian uint32 sizes; then prod(sizes) data bytes, nothing more.
    MNIST images have magic 0x00000803 (d=3), labels 0x00000801 (d=1).
    """
    if len(data) < 4:
        raise ValueError(f"{name}: only {len(data)} bytes, too short for an IDX header (at least 4)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or type_code != IDX_UBYTE or ndim == 0:
        raise ValueError(f"{name}: bad IDX magic number 0x{magic:08x}; expected 0x00000803 (images) "
                         f"or 0x00000801 (labels): two zero bytes, type code 0x08 (ubyte), then the number of dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{name}: IDX magic number 0x{magic:08x} says {ndim} dimension(s), "
                         f"expected {expected_ndim} (magic 0x{0x800 + expected_ndim:08x})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{name}: {len(data)} bytes, too short for an IDX header with {ndim} dimensions "
                         f"({header_len} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    expected_len = header_len + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_len:
        what = "truncated" if len(data) < expected_len else "has trailing bytes"
        raise ValueError(f"{name}: file length {len(data)} bytes does not match the IDX header: "
                         f"shape {tuple(shape)} needs {header_len} + {expected_len - header_len} = "
                         f"{expected_len} bytes (the file {what})")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def read_idx(path, expected_ndim=None):
    """Read an IDX file (raw or gzip) into a uint8 NumPy array; every inconsistency is a ValueError naming the file."""
    return parse_idx(read_raw_bytes(path), os.fspath(path), expected_ndim)


def idx_bytes(array):
    """Encode a uint8 array as raw IDX bytes (header + data)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writing supports uint8 arrays only, got dtype {array.dtype}")
    if array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got shape {array.shape}")
    header = struct.pack(">HBB", 0, IDX_UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path, array, compress=False):
    """Write a uint8 array as an IDX file; compress=True gzips it with mtime=0 so the bytes are reproducible."""
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
