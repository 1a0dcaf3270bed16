"""Tensor: an array on a device, plus what autograd needs (requires_grad, grad, the op that made it)."""
import copy

from . import autograd
from .backend import Device, default_device, device as as_device, device_of_array, is_array, transfer
from .dtypes import as_dtype, float16, float32, float64, int64, is_floating


class MemoryFormat:
    """PyTorch's memory formats, named for compatibility: a tinygradnorm array is always row-major, and a format
    changes no value, so clone and contiguous accept every one."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"tinygradnorm.{self.name}"


contiguous_format, preserve_format = MemoryFormat("contiguous_format"), MemoryFormat("preserve_format")
channels_last, channels_last_3d = MemoryFormat("channels_last"), MemoryFormat("channels_last_3d")


class Size(tuple):
    """A tensor's shape: a tuple of ints, with ``numel()``, as torch.Size."""

    __slots__ = ()

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self):
        return f"tinygradnorm.Size({list(self)})"


class Tensor:
    """An n-dimensional array with reverse-mode autograd, in PyTorch's image."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_oi", "_device", "_vc", "_base", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        dtype = as_dtype(dtype)
        if isinstance(data, Tensor):
            data, src = data.data, data.device
        elif is_array(data):
            src = device_of_array(data)
        else:
            src = None
        dev = as_device(device) if device is not None else (src or default_device())
        if src is None:
            arr = dev.backend.asarray(data)
            if dtype is None and arr.dtype == float64:
                dtype = float32  # Python floats default to float32, as in PyTorch
            elif arr.dtype.kind in "OUS":
                raise TypeError(f"Tensor() got data of unsupported type {type(data).__name__}: "
                                "expected numbers, nested lists of numbers, or a NumPy/CuPy array")
        else:
            arr = transfer(data, src, dev)
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
        elif not arr.flags.writeable:
            arr = arr.copy()  # NOTE: a read-only array (np.broadcast_to, say) could never be updated in place
        self.data = arr
        self._device = dev
        self.grad = None
        self._ctx, self._oi = None, 0
        self._vc = autograd.new_version()
        self._base = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, data, device, requires_grad, ctx):
        """Fast constructor for op outputs: no conversion, no checks."""
        t = object.__new__(cls)
        t.data, t._device, t.requires_grad, t._ctx, t._oi = data, device, requires_grad, ctx, 0
        t.grad, t._vc, t._base = None, autograd.new_version(), None
        return t

    # ---- attributes -------------------------------------------------------------
    @property
    def shape(self):
        return Size(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self):
        return self._device.type == "cuda"

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def _version(self):
        """How many in-place ops have changed this tensor's memory (shared with its views)."""
        if self._vc is None:
            raise RuntimeError("Inference tensors do not track version counter.")
        return self._vc.value

    def is_inference(self):
        """True for a tensor made under inference_mode."""
        return self._vc is None

    @property
    def retains_grad(self):
        return autograd.retains_grad(self)

    @property
    def xp(self):
        """The array module (numpy or cupy) of this tensor's device."""
        return self._device.backend.xp

    def size(self, dim=None):
        """The shape (a Size), or the size of one dim."""
        return self.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return self.data.size

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---- conversion -------------------------------------------------------------
    def numpy(self):
        """A host NumPy array with this tensor's values (shared with it on the CPU)."""
        return self._device.backend.to_host(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"a Tensor with {self.data.size} elements cannot be converted to a Python "
                             f"scalar (shape {tuple(self.shape)}); index or reduce it first")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.data.size} elements is ambiguous")
        return bool(self.item())

    def __dlpack__(self, *args, **kwargs):
        """Export this tensor's memory through DLPack (for torch.from_dlpack, np.from_dlpack, ...), without a copy."""
        if self.requires_grad:
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def to(self, *args, dtype=None, device=None):
        """A copy on another device and/or with another dtype (self when nothing changes)."""
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        return ops.to(self, as_device(device) if device is not None else self._device, as_dtype(dtype))

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def half(self):
        return self.to(float16)

    def is_contiguous(self):
        return bool(self.data.flags.c_contiguous)

    def long(self):
        return self.to(int64)

    def type(self, dtype):
        return self.to(as_dtype(dtype))

    def astype(self, dtype):
        return self.to(as_dtype(dtype))

    # ---- autograd ---------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if requires_grad and not is_floating(self.dtype):
            raise RuntimeError(f"only floating-point tensors can require gradients (got dtype {self.dtype}); "
                               "convert it first, e.g. t.float()")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; use .detach()")
        self.requires_grad = requires_grad
        return self

    def detach(self):
        """The same values (the same memory and version counter), cut from the graph."""
        t = Tensor._wrap(self.data, self._device, False, None)
        t._vc = self._vc
        return t

    def clone(self, *, memory_format=preserve_format):
        """A copy, differentiable (the gradient flows back to self)."""
        if not isinstance(memory_format, MemoryFormat):
            raise TypeError(f"clone(): memory_format must be a tinygradnorm memory format, not "
                            f"{type(memory_format).__name__}")
        return ops.clone(self)

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward."""
        if self._ctx is not None:
            autograd.retain(self)
        elif not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (or only into ``inputs``'), weighted by ``gradient``;
        with ``create_graph``, the gradients carry a graph of their own, to be differentiated again."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad and has no grad_fn; "
                               "create the leaves with requires_grad=True")
        if gradient is None and self.data.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs (got shape "
                               f"{tuple(self.shape)}); pass backward(gradient=...) of that shape")
        autograd.backward(self, gradient, retain_graph, create_graph, inputs)

    def register_hook(self, hook):
        """Call hook(grad) whenever this tensor's gradient is computed; a Tensor it returns replaces that gradient.
        Returns a handle: handle.remove() takes the hook off."""
        return autograd.register_hook(self, hook)

    # ---- in place (see ops/inplace.py for the rules that keep gradients honest) --------
    def add_(self, other, *, alpha=1): return inplace.add_(self, other, alpha)
    def sub_(self, other, *, alpha=1): return inplace.sub_(self, other, alpha)
    def mul_(self, other): return inplace.mul_(self, other)
    def div_(self, other): return inplace.div_(self, other)
    def clamp_(self, min=None, max=None): return inplace.clamp_(self, min, max)
    clip_ = clamp_
    def zero_(self): return inplace.fill_(self, 0, "zero_")
    def fill_(self, value): return inplace.fill_(self, value)
    def copy_(self, src): return inplace.copy_(self, src)
    def normal_(self, mean=0.0, std=1.0): return inplace.normal_(self, mean, std)
    def uniform_(self, from_=0.0, to=1.0): return inplace.uniform_(self, from_, to)
    def __iadd__(self, other): return inplace.add_(self, other, 1)
    def __isub__(self, other): return inplace.sub_(self, other, 1)
    def __imul__(self, other): return inplace.mul_(self, other)
    def __itruediv__(self, other): return inplace.div_(self, other)
    def __setitem__(self, index, value): inplace.setitem_(self, index, value)

    # ---- copying and pickling -----------------------------------------------------
    def __reduce_ex__(self, protocol):
        # NOTE: the device is stored by name and the graph is not stored: a non-leaf comes back as a
        # leaf with its requires_grad, as in PyTorch. Nothing thread-local or pooled is reachable.
        return _rebuild, (type(self), self.data, str(self._device), self.requires_grad)

    def __deepcopy__(self, memo):
        if self._ctx is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
                               f"protocol at the moment (got a non-leaf of shape {tuple(self.shape)} made by "
                               f"{type(self._ctx).__name__}); deepcopy t.detach() instead")
        t = _rebuild(type(self), copy.deepcopy(self.data, memo), str(self._device), self.requires_grad)
        memo[id(self)] = t
        if self.grad is not None:
            t.grad = copy.deepcopy(self.grad, memo)
        return t

    # ---- printing ---------------------------------------------------------------
    def __repr__(self):
        body = repr(self.numpy()).replace("array(", "tensor(", 1)
        body = body[: body.rfind(")")] if body.endswith(")") else body
        extra = []
        if self.dtype not in (float32, int64) and "dtype=" not in body:
            extra.append(f"dtype={self.dtype}")
        if self._device.type != "cpu":
            extra.append(f"device='{self._device}'")
        if self._ctx is not None:
            extra.append(f"grad_fn=<{self._ctx.name()}>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return body + "".join(", " + e for e in extra) + ")"

    # ---- arithmetic -------------------------------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return ops.abs(self)
    def __lt__(self, other): return ops.lt(self, other)
    def __le__(self, other): return ops.le(self, other)
    def __gt__(self, other): return ops.gt(self, other)
    def __ge__(self, other): return ops.ge(self, other)
    def __eq__(self, other): return ops.eq(self, other)
    def __ne__(self, other): return ops.ne(self, other)
    def __and__(self, other): return ops.bitwise_and(self, other)
    def __rand__(self, other): return ops.bitwise_and(other, self)
    def __or__(self, other): return ops.bitwise_or(self, other)
    def __ror__(self, other): return ops.bitwise_or(other, self)
    def __xor__(self, other): return ops.bitwise_xor(self, other)
    def __rxor__(self, other): return ops.bitwise_xor(other, self)
    def __invert__(self): return ops.bitwise_not(self)
    __hash__ = object.__hash__

    def __getitem__(self, index): return ops.getitem(self, index)

    def add(self, other): return ops.add(self, other)
    def sub(self, other): return ops.sub(self, other)
    def mul(self, other): return ops.mul(self, other)
    def div(self, other, *, rounding_mode=None): return ops.div(self, other, rounding_mode=rounding_mode)
    def pow(self, other): return ops.pow(self, other)
    def neg(self): return ops.neg(self)
    def matmul(self, other): return ops.matmul(self, other)
    def eq(self, other): return ops.eq(self, other)
    def ne(self, other): return ops.ne(self, other)
    def lt(self, other): return ops.lt(self, other)
    def le(self, other): return ops.le(self, other)
    def gt(self, other): return ops.gt(self, other)
    def ge(self, other): return ops.ge(self, other)

    # ---- elementwise ------------------------------------------------------------
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def rsqrt(self): return ops.rsqrt(self)
    def abs(self): return ops.abs(self)
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def square(self): return ops.mul(self, self)
    def maximum(self, other): return ops.maximum(self, other)
    def minimum(self, other): return ops.minimum(self, other)
    def clip(self, min=None, max=None): return ops.clip(self, min, max)
    clamp = clip
    def where(self, condition, other): return ops.where(condition, self, other)

    # ---- reductions -------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, *, axis=None): return ops.sum(self, dim, keepdim, axis=axis)
    def mean(self, dim=None, keepdim=False, *, axis=None): return ops.mean(self, dim, keepdim, axis=axis)
    def var(self, dim=None, *, correction=None, keepdim=False, axis=None, unbiased=None):
        return ops.var(self, dim, correction=correction, keepdim=keepdim, axis=axis, unbiased=unbiased)
    def std(self, dim=None, *, correction=None, keepdim=False, axis=None, unbiased=None):
        return ops.sqrt(ops.var(self, dim, correction=correction, keepdim=keepdim, axis=axis, unbiased=unbiased))
    def max(self, dim=None, keepdim=False, *, axis=None): return ops.max(self, dim, keepdim, axis=axis)
    def min(self, dim=None, keepdim=False, *, axis=None): return ops.min(self, dim, keepdim, axis=axis)
    def amax(self, dim=None, keepdim=False): return ops.amax(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return ops.amin(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False, *, axis=None): return ops.argmax(self, dim, keepdim, axis=axis)
    def argmin(self, dim=None, keepdim=False, *, axis=None): return ops.argmin(self, dim, keepdim, axis=axis)
    def logsumexp(self, dim, keepdim=False): return ops.logsumexp(self, dim, keepdim)
    def softmax(self, dim, dtype=None): return ops.softmax(self, dim, dtype)
    def log_softmax(self, dim, dtype=None): return ops.log_softmax(self, dim, dtype)

    # ---- movement ---------------------------------------------------------------
    def reshape(self, *shape): return ops.reshape(self, *shape)
    def view(self, *shape): return ops.reshape(self, *shape)
    def permute(self, *dims): return ops.permute(self, *dims)
    def transpose(self, dim0, dim1): return ops.transpose(self, dim0, dim1)
    def t(self): return ops.t(self)
    def flatten(self, start_dim=0, end_dim=-1): return ops.flatten(self, start_dim, end_dim)
    def squeeze(self, dim=None): return ops.squeeze(self, dim)
    def unsqueeze(self, dim): return ops.unsqueeze(self, dim)
    def expand(self, *shape): return ops.expand(self, *shape)
    def broadcast_to(self, shape): return ops.broadcast_to(self, shape)
    def expand_as(self, other): return ops.broadcast_to(self, other.shape)
    def contiguous(self, memory_format=contiguous_format):
        """self when already row-major, else a row-major copy (differentiable), as in PyTorch."""
        return self if self.data.flags.c_contiguous else ops.clone(self)


def _rebuild(cls, data, device_name, requires_grad):
    t = cls._wrap(data, as_device(device_name), requires_grad, None)
    return t


from . import ops  # noqa: E402  (the ops need Tensor defined first)
from .ops import inplace  # noqa: E402
