"""Optimizer base: parameter groups, per-parameter state, and state_dict in PyTorch's layout."""
from ..tensor import Tensor


class Optimizer:
    """Holds parameter groups (each a dict of hyper-parameters and 'params') and per-parameter state."""

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
        """Restore state and hyper-parameters saved by state_dict (groups must have the same sizes)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        params = {}
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded state dict has a group of {len(saved['params'])} parameters where this "
                                 f"optimizer's group has {len(group['params'])}")
            params.update(zip(saved["params"], group["params"]))
            for key, value in saved.items():
                if key != "params":
                    group[key] = value
        self.state = {}
        for i, entries in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {}
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    value = value.numpy()
                if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
                    value = p.device.backend.asarray(value, dtype=p.dtype)
                elif hasattr(value, "shape"):
                    value = value.item()
                self.state[p][key] = value

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
