"""Optimizer base: parameter groups, per-parameter state, and state_dict in PyTorch's layout."""
from ..ops.inplace import bump_version
from ..tensor import Tensor


def subtract_update(p, delta, alpha):
    """p.sub_(delta, alpha=alpha) for a parameter p and an array delta of its shape, with no Tensor op in between:
    the same bits (alpha * delta in delta's dtype, then the subtraction in place) and the same version bump.

    NOTE: sub_ with an alpha multiplies through a Tensor op and checks its operands, 21 us a call against 3.6 for the
    arithmetic alone: 0.3 ms of a LeNet step with layer norm (18 parameters)."""
    xp = p.xp
    xp.subtract(p.data, alpha * delta, out=p.data, casting="unsafe")
    bump_version(p, "sub_")


class Optimizer:
    """Holds parameter groups (each a dict of hyper-parameters and 'params') and per-parameter state."""

    # The state kept per parameter: name -> (kind, required). "tensor" entries have the parameter's shape and dtype.
    state_spec = {}

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list; pass model.parameters()")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise ValueError(f"{type(self).__name__} can only optimize tensors that require grad (got "
                                 f"{type(p).__name__})")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self):
        raise NotImplementedError

    def _params_with_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state.setdefault(p, {})

    def state_dict(self):
        """{'state': {index: {name: Tensor or number}}, 'param_groups': [{hyper-parameters, 'params': [index]}]}."""
        index, groups = {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: Tensor._wrap(v, p.device, False, None) if hasattr(v, "shape") else v
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state and hyper-parameters saved by state_dict.

        The state must come from the same kind of optimizer over parameters of the same shapes and
        dtypes: anything else is refused before anything changes, naming the parameter and both shapes.
        """
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        params = {}
        for g, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded state dict has a group of {len(saved['params'])} parameters where this "
                                 f"optimizer's group {g} has {len(group['params'])}")
            theirs, ours = set(saved) - {"params", "initial_lr"}, set(self.defaults)
            if theirs != ours:
                raise ValueError(f"{name}.load_state_dict: the state belongs to another kind of optimizer: its "
                                 f"parameter group {g} has {sorted(theirs)} where {name} has {sorted(ours)}")
            params.update((i, (g, p)) for i, p in zip(saved["params"], group["params"]))
        state = {}
        for i, entries in state_dict["state"].items():
            if int(i) not in params:
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which no parameter group holds")
            g, p = params[int(i)]
            state[p] = self._checked_state(entries, p, f"parameter {i} (group {g}, shape {tuple(p.shape)})")
        for saved, group in zip(groups, self.param_groups):
            group.update((k, v) for k, v in saved.items() if k != "params")
        self.state = state

    def _checked_state(self, entries, p, which):
        """One parameter's saved state as arrays on its device, checked against state_spec."""
        name = type(self).__name__
        unknown = set(entries) - set(self.state_spec)
        missing = {k for k, (_, required) in self.state_spec.items() if required} - set(entries)
        if unknown or missing:
            raise ValueError(f"{name}.load_state_dict: the state of {which} has {sorted(entries)}; {name} keeps "
                             f"{sorted(self.state_spec)}" + (f" and needs {sorted(missing)}" if missing else "")
                             + ": the state belongs to another kind of optimizer")
        out = {}
        for key, value in entries.items():
            if isinstance(value, Tensor):
                value = value.numpy()
            if self.state_spec[key][0] == "tensor":
                shape, dtype = tuple(getattr(value, "shape", ())), getattr(value, "dtype", None)
                if shape != tuple(p.shape) or dtype != p.dtype:
                    raise ValueError(f"{name}.load_state_dict: '{key}' of {which} has shape {shape} and dtype "
                                     f"{dtype}, but the parameter has shape {tuple(p.shape)} and dtype {p.dtype}: "
                                     "the state belongs to another model")
                value = p.device.backend.asarray(value, dtype=p.dtype)
            elif hasattr(value, "shape"):
                value = value.item()
            out[key] = value
        return out

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
