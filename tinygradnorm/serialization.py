"""save/load nested dicts and lists of tensors and numbers as .npz files: no pickle, written atomically.

Arrays become npz entries ``a0``, ``a1``, ...; everything else (the nesting, the keys, numbers,
strings, None) is described by a JSON document stored as the ``__structure__`` entry.
"""
import io
import json
import os
import tempfile

import numpy as np

from .backend import device as as_device
from .tensor import Tensor

FORMAT = "tinygradnorm.save/1"


def save(obj, path):
    """Write obj (dicts, lists, tuples, Tensors, arrays, numbers, strings, None) to path atomically."""
    arrays = {}

    def encode(o):
        if isinstance(o, Tensor):
            name = f"a{len(arrays)}"
            arrays[name] = o.numpy()
            return {"tensor": name, "requires_grad": bool(o.requires_grad)}
        if isinstance(o, np.ndarray) or hasattr(o, "__cuda_array_interface__"):
            name = f"a{len(arrays)}"
            arrays[name] = o.get() if hasattr(o, "get") else o
            return {"array": name}
        if isinstance(o, np.generic):
            return {"value": o.item()}
        if isinstance(o, dict):
            return {"dict": [[encode_key(k), encode(v)] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return {"list" if isinstance(o, list) else "tuple": [encode(v) for v in o]}
        if o is None or isinstance(o, (bool, int, float, str)):
            return {"value": o}
        raise TypeError(f"save: cannot store a {type(o).__name__}; only dicts, lists, tuples, Tensors, arrays, "
                        "numbers, strings and None are saved (no pickled objects)")

    def encode_key(k):
        if not isinstance(k, (str, int)) or isinstance(k, bool):
            raise TypeError(f"save: dict keys must be str or int (got {type(k).__name__} {k!r})")
        return k

    structure = json.dumps({"format": FORMAT, "root": encode(obj)})
    arrays["__structure__"] = np.frombuffer(structure.encode(), dtype=np.uint8)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"save: path must end in .npz (got {path!r})")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # NOTE: atomic: readers see the old file or the new one, never half of one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, device=None):
    """Read what save() wrote; tensors go to ``device`` (default: the CPU)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        files = np.load(io.BytesIO(raw), allow_pickle=False)
        structure = json.loads(bytes(files["__structure__"]).decode())
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"load: {path!r} is not a file written by tinygradnorm.save ({type(e).__name__}: {e})") from None
    if structure.get("format") != FORMAT:
        raise ValueError(f"load: {path!r} has format {structure.get('format')!r}, expected {FORMAT!r}")
    dev = as_device(device or "cpu")

    def decode(node):
        if "tensor" in node:
            t = Tensor(files[node["tensor"]], device=dev)
            return t.requires_grad_() if node["requires_grad"] else t
        if "array" in node:
            return files[node["array"]]
        if "dict" in node:
            return {k: decode(v) for k, v in node["dict"]}
        if "list" in node:
            return [decode(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(decode(v) for v in node["tuple"])
        return node["value"]

    return decode(structure["root"])


def get_rng_state():
    """The CPU generator's state (a JSON-friendly dict), for checkpoints."""
    return as_device("cpu").backend.get_rng_state()


def set_rng_state(state):
    as_device("cpu").backend.set_rng_state(state)
