"""Containers of modules: Sequential, ModuleList and ModuleDict, as in PyTorch."""
from collections import OrderedDict

from .module import Module


def _check_module(container, value):
    if not isinstance(value, Module):
        raise TypeError(f"{container} holds Modules only (got {type(value).__name__})")
    return value


class Sequential(Module):
    """Modules applied one after another; indexable like a list."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, _check_module("Sequential", m))
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), _check_module("Sequential", m))

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i):
        items = list(self._modules.values())
        return Sequential(*items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), _check_module("Sequential", module))
        return self


class ModuleList(Module):
    """A list of modules, registered so that their parameters belong to the owner (a plain list would hide them)."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def _key(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a ModuleList of {n} modules")
        return str(i % n)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return self._modules[self._key(i)]

    def __setitem__(self, i, module):
        self._modules[self._key(i)] = _check_module("ModuleList", module)

    def __delitem__(self, i):
        items = list(self._modules.values())
        del items[i]
        self._modules.clear()
        for k, m in enumerate(items):
            self._modules[str(k)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __repr__(self):
        """Runs of identical modules are folded, as PyTorch prints them: "(0-3): 4 x Linear(...)"."""
        runs = []                                         # [first index, last index, repr]
        for i, m in enumerate(self._modules.values()):
            text = repr(m)
            if runs and runs[-1][2] == text:
                runs[-1][1] = i
            else:
                runs.append([i, i, text])
        if not runs:
            return "ModuleList()"
        lines = [(f"({a}): " if a == b else f"({a}-{b}): {b - a + 1} x ") + text.replace("\n", "\n  ")
                 for a, b, text in runs]
        return "ModuleList(\n  " + "\n  ".join(lines) + "\n)"

    def append(self, module):
        self._modules[str(len(self))] = _check_module("ModuleList", module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, _check_module("ModuleList", module))
        self._modules.clear()
        for k, m in enumerate(items):
            self._modules[str(k)] = m


class ModuleDict(Module):
    """A dict of modules by name, registered so that their parameters belong to the owner."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict keys must be strings (got {type(key).__name__} {key!r})")
        self._modules[key] = _check_module("ModuleDict", module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for key, m in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = m

    def pop(self, key):
        return self._modules.pop(key)

    def clear(self):
        self._modules.clear()
