"""Module and Parameter: the containers that layers are built from, in PyTorch's image."""
from collections import OrderedDict

from ..autograd import no_grad
from ..backend import Device, device as as_device, is_array, transfer
from ..dtypes import float16, float32, float64
from ..tensor import Tensor
from .hooks import add_hook, call_with_hooks


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = []
        super().__init__(data.detach() if isinstance(data, Tensor) else data)
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer: registers parameters, buffers and submodules as attributes are set."""

    _hooks = None               # a ModuleHooks once a hook is registered (nn/hooks.py)

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # ---- registration -----------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() call; call super().__init__() "
                                 "first in your module's __init__")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a parameter (None registers the name with no tensor, as PyTorch does)."""
        if param is None:
            self._parameters[name] = None
            self.__dict__.pop(name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not learnt (running statistics); persistent buffers go into state_dict."""
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        self._buffers[name] = tensor
        self.__dict__.pop(name, None)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        self._modules[name] = module

    # ---- traversal --------------------------------------------------------------
    def named_modules(self, prefix=""):
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            stack[0:0] = [((f"{name}.{k}" if name else k), c) for k, c in m._modules.items() if c is not None]

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def apply(self, fn):
        """Call fn on every submodule (children first) and then on this module, as torch.nn.Module.apply;
        the usual way to initialize a model's weights. Returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _named(self, store, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, m in mods:
            for k, v in getattr(m, store).items():
                if v is None or id(v) in seen:
                    continue
                seen.add(id(v))
                yield (f"{mod_name}.{k}" if mod_name else k), v

    def named_parameters(self, prefix="", recurse=True):
        return self._named("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ---- modes ------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode on this module and every submodule."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean (got {mode!r})")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    # ---- device and dtype -------------------------------------------------------
    def _apply(self, fn):
        """Replace every parameter's and buffer's array by fn(array), keeping the Tensor objects."""
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None:
                    continue
                data, dev = fn(t.data, t.device)
                t.data, t._device = data, dev
                if t.grad is not None:
                    t.grad.data, t.grad._device = fn(t.grad.data, t.grad.device)
        return self

    def to(self, *args, device=None, dtype=None):
        """Move (in place) to a device and/or cast floating-point state to a dtype."""
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        target = as_device(device) if device is not None else None

        def move(data, dev):
            if target is not None:
                data, dev = transfer(data, dev, target), target
            if dtype is not None and data.dtype.kind == "f":
                data = data.astype(dtype)
            return data, dev
        return self._apply(move)

    def double(self):
        return self.to(dtype=float64)

    def float(self):
        return self.to(dtype=float32)

    def half(self):
        return self.to(dtype=float16)

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def cpu(self):
        return self.to("cpu")

    # ---- state ------------------------------------------------------------------
    def state_dict(self, prefix=""):
        """Ordered name -> Tensor of every parameter and persistent buffer, with PyTorch's dotted names."""
        out = OrderedDict()
        for mod_name, m in self.named_modules(prefix.rstrip(".")):
            dot = f"{mod_name}." if mod_name else ""
            for k, v in m._parameters.items():
                if v is not None:
                    out[dot + k] = v.detach()
            for k, v in m._buffers.items():
                if v is not None and k not in m._non_persistent:
                    out[dot + k] = v.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing parameters and buffers (keeping their dtype and device).

        Returns (missing_keys, unexpected_keys). With strict, either list being non-empty is
        an error; a shape mismatch is always an error.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        for k, target in own.items():
            if k not in state_dict:
                continue
            value = state_dict[k]
            value = value.data if isinstance(value, Tensor) else value
            if not (is_array(value) or hasattr(value, "shape") or isinstance(value, (int, float))):
                errors.append(f'value for "{k}" must be a Tensor or an array, got {type(value).__name__}')
                continue
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(target.shape):
                errors.append(f"size mismatch for {k}: copying a param with shape {shape} from checkpoint, "
                              f"the shape in current model is {tuple(target.shape)}.")
        if strict:
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
            if unexpected:
                errors.insert(1 if missing else 0,
                              "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        with no_grad():
            for k, target in own.items():
                if k in state_dict:
                    value = state_dict[k]
                    if not isinstance(value, Tensor):
                        value = Tensor(target.device.backend.asarray(value), device=target.device)
                    target.copy_(value)
        return missing, unexpected

    # ---- calling and printing ---------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required \"forward\" function")

    def __call__(self, *args, **kwargs):
        if self._hooks:
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    # ---- hooks (nn/hooks.py), as in PyTorch; each returns a handle whose remove() takes the hook off -----------
    def register_forward_pre_hook(self, hook):
        """hook(module, args) before forward; a tuple (or a single value) it returns replaces the arguments."""
        return add_hook(self, "forward_pre", hook)

    def register_forward_hook(self, hook):
        """hook(module, args, output) after forward; a value it returns replaces the output."""
        return add_hook(self, "forward", hook)

    def register_full_backward_hook(self, hook):
        """hook(module, grad_input, grad_output) once the gradients with respect to the module's inputs are known
        (one entry per positional argument, None where there is none); a tuple it returns replaces grad_input."""
        return add_hook(self, "backward", hook)

    def register_full_backward_pre_hook(self, hook):
        """hook(module, grad_output) when the gradients of the module's outputs arrive; a tuple it returns
        replaces grad_output."""
        return add_hook(self, "backward_pre", hook)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"
