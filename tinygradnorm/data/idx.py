"""Reading IDX files (the MNIST family's format), gzipped or not, with every check a corrupt file fails."""
import gzip
import hashlib
import zlib

import numpy as np


class DatasetError(RuntimeError):
    """A data file is missing, corrupt, truncated or not what it claims to be."""


_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path):
    """The decompressed content of path (.gz files are decompressed); corrupt or truncated gzip is an error."""
    path = str(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot be decompressed ({type(e).__name__}: {e}); the file is corrupt or "
                           "truncated: delete it and download it again") from None


def parse_idx(content, expected_ndim, source="<bytes>"):
    """A NumPy array from IDX bytes: magic 0x0000 <dtype> <ndim>, then ndim big-endian sizes, then the data."""
    if len(content) < 4:
        raise DatasetError(f"{source}: only {len(content)} bytes, too short for an IDX header")
    zero, code, ndim = int.from_bytes(content[:2], "big"), content[2], content[3]
    if zero != 0 or code not in _DTYPES or ndim != expected_ndim:
        raise DatasetError(f"{source}: wrong magic number 0x{content[:4].hex()}: expected an IDX file of "
                           f"{expected_ndim} dims (0x0000080{expected_ndim} for unsigned bytes)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DatasetError(f"{source}: truncated IDX header ({len(content)} bytes)")
    shape = tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(content) != expected:
        raise DatasetError(f"{source}: {len(content)} bytes but its header {shape} promises {expected}; the file is "
                           "truncated or has trailing data")
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def read_idx(path, expected_ndim, expected_sha256=None):
    """Read and check an IDX file; with expected_sha256, the decompressed content must hash to it."""
    content = read_bytes(path)
    if expected_sha256 is not None:
        got = sha256(content)
        if got != expected_sha256:
            raise DatasetError(f"{path}: sha256 of the decompressed content is {got}, expected {expected_sha256}; "
                               "the file is corrupt or not the real dataset: delete it and download it again")
    return parse_idx(content, expected_ndim, str(path))
