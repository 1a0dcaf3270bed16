"""Memory for the kernels: per-thread scratch arrays, and recycled memory for large outputs."""
import math
import sys
import threading

import numpy as np


class MemoryKernels:
    """``scratch`` and ``empty``, as methods of CpuKernels."""

    def _start_memory(self):
        self._scratch = threading.local()
        self._recycler = _Recycler()
        self.empty = self._recycler.empty

    def recycled(self, a):
        """True when a covers the whole of a block that ``empty`` handed out (so no other array shares it)."""
        return self._recycler.owns(a)

    def scratch(self, name, shape, dtype):
        """A reusable array for a temporary that dies inside one op call (im2col's columns, say), one per
        name and thread. Reusing it spares a fresh allocation, and its page faults, on every call."""
        nbytes = _nbytes(shape, dtype)
        buffers = self._scratch.__dict__
        buf = buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            block, offset = _aligned_block(max(nbytes, 1))
            buf = buffers[name] = block[offset:offset + max(nbytes, 1)]
        return _view(buf, nbytes, shape, dtype)


def _nbytes(shape, dtype):
    return math.prod(shape) * np.dtype(dtype).itemsize


def _view(block, nbytes, shape, dtype):
    """The first nbytes of a uint8 block as an array of this shape and dtype (a view: it keeps block alive)."""
    return block[:nbytes].view(dtype).reshape(shape)


_ALIGN = 64                 # bytes: a cache line, and an AVX-512 register


def _aligned_block(nbytes):
    """(a fresh uint8 block, the offset in it of nbytes that start on an _ALIGN-byte boundary)."""
    block = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    return block, -block.ctypes.data % _ALIGN


class _Recycler:
    """Hands out arrays whose memory is used again once no array refers to it any more.

    Every large fresh NumPy array is fresh pages from the operating system, and the first write to
    each page faults: about 4500 faults, some 7 ms, in one LeNet training step. A training step
    makes arrays of the same sizes every time, so the kernels' outputs come from here instead.
    Each array handed out is a view of a block kept here, and each view (and each view of a
    view) holds a reference to its block, so a block is free exactly when only this object
    refers to it. Blocks are kept per size; when the kept total passes ``limit``, a new
    allocation first lets go of the free ones.

    Arrays start on a 64-byte boundary. (A large np.empty starts 16 bytes past a page boundary, so
    every vector store of a compiled loop would straddle two cache lines: LayerNorm's output pass
    measured 10% slower.)
    """

    def __init__(self, min_bytes=1 << 17, limit=1 << 30):
        self.min_bytes, self.limit = min_bytes, limit
        self.blocks = {}                   # nbytes -> [(uint8 block of nbytes + _ALIGN, offset of the array), ...]
        self.total = 0
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """np.empty(shape, dtype), on recycled memory when the array is large."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            entry = self._free_block(nbytes)
            if entry is None:
                if self.total + nbytes > self.limit:
                    self._release_free()
                entry = _aligned_block(nbytes)
                self.blocks.setdefault(nbytes, []).append(entry)
                self.total += nbytes
        return np.ndarray(shape, dtype, buffer=entry[0], offset=entry[1])     # its base is the block

    def owns(self, a):
        """True when a is a whole array handed out here. (Only views of one reach its block, and within it only
        the array itself, or a view as long and C-contiguous, covers all nbytes.)"""
        block = a.base
        if block is None or block.base is not None or not a.flags.c_contiguous:
            return False
        return any(entry[0] is block for entry in self.blocks.get(a.nbytes, ()))

    def _free_block(self, nbytes):
        for entry in self.blocks.get(nbytes, ()):
            # NOTE: two references when free: the entry's and getrefcount's argument.
            if sys.getrefcount(entry[0]) == 2:
                return entry
        return None

    def _release_free(self):
        for nbytes, entries in self.blocks.items():
            kept = [e for e in entries if sys.getrefcount(e[0]) > 2]     # the entry, the argument
            self.total -= nbytes * (len(entries) - len(kept))
            entries[:] = kept
