"""Compiled CPU kernels for the hot paths that NumPy can only spell as many passes over memory.

Each kernel is a plain loop over the maths, compiled by Numba, and runs without the GIL. Where to read:

- ``norm.py``: the normalization layers (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm, and
  eval mode's frozen statistics), forward and backward. Each kernel is the closed form of
  docs/normalization.md, one statistic at a time; its comments name the steps. Numba's own threads
  run these (``prange``).
- ``pointwise.py``: erf, sigmoid and its backward, average pooling.
- ``conv.py``: convolution as im2col, the GEMMs (NumPy's BLAS) and col2im, a cache-sized chunk of
  samples at a time; depthwise convolution as direct loops over each plane (Numba's threads).
- ``memory.py``: per-thread scratch arrays and recycled memory for large outputs.
- ``_jit.py``: how they are compiled, and the thread count.

The NumPy backend uses them when Numba imports (``NumpyBackend.kernels``). Without Numba, or with
TINYGRADNORM_JIT=0, every op falls back to its array code, and the tests check the two against each
other.
"""
from ._jit import ThreadCount
from .conv import ConvKernels
from .memory import MemoryKernels
from .norm import NormKernels
from .pointwise import PointwiseKernels


class CpuKernels(NormKernels, PointwiseKernels, ConvKernels, MemoryKernels):
    """The compiled kernels, called with C-contiguous float32 or float64 arrays.

    ``split`` (the backend's ``parallel_range``) runs a kernel written for a range [lo, hi) on the
    backend's own threads: pointwise, pooling and convolution work that way. The normalization
    kernels run their loops on Numba's threads, ``threads()`` of them (the backend's count).
    """

    def __init__(self, split, threads=lambda: 1):
        self.split = split
        self.thread_count = ThreadCount(threads)
        self._start_memory()
        self._start_norm()
