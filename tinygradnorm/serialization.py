"""save/load nested dicts and lists of tensors and numbers as .npz files: no pickle, written atomically, checksummed.

Arrays become npz entries ``a0``, ``a1``, ...; everything else (the nesting, the keys, numbers,
strings, None) is described by a JSON document stored as the ``__structure__`` entry. The zip
archive's comment holds the sha256 of every byte before it, so that load detects any change to
the file, even one zip itself would not notice.
"""
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from .atomic import atomic_write
from .backend import device as as_device
from .tensor import Tensor

FORMAT = "tinygradnorm.save/2"
_LEGACY = "tinygradnorm.save/1"          # written before the checksum; still loaded
_DIGEST = 64                             # hex characters of a sha256, the last bytes of the file
_EOCD = 22                               # the zip's end-of-central-directory record, without its comment


class CheckpointError(ValueError):
    """A file that load cannot trust: corrupt, truncated, or not written by save."""


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
    with atomic_write(os.fspath(path)) as f:              # any name: "model.pt" is as good as "model.npz"
        np.savez(f, **arrays)
        _sign(f)


def _sign(f):
    """Give the zip written to f a comment holding the sha256 of every byte before it."""
    with zipfile.ZipFile(f, "a") as z:
        z.comment = b"0" * _DIGEST
    size = f.seek(0, io.SEEK_END)
    digest = hashlib.sha256()
    f.seek(0)
    remaining = size - _DIGEST
    while remaining:
        chunk = f.read(min(remaining, 1 << 20))
        digest.update(chunk)
        remaining -= len(chunk)
    f.write(digest.hexdigest().encode())


def load(path, device=None, map_location=None):
    """Read what save() wrote; tensors go to ``map_location`` (or ``device``), a device or its name, default the
    CPU. A file that is not intact raises CheckpointError, naming the file and what is wrong with it."""
    path = os.fspath(path)
    if device is not None and map_location is not None:
        raise TypeError("load: pass device or map_location, not both")
    with open(path, "rb") as f:                 # FileNotFoundError stays itself
        raw = f.read()
    dev = as_device(map_location or device or "cpu")
    try:
        signed = _signature_ok(raw)
        files = np.load(io.BytesIO(raw), allow_pickle=False)
        structure = json.loads(bytes(files["__structure__"]).decode())
        kind = structure.get("format") if isinstance(structure, dict) else None
        if kind not in (FORMAT, _LEGACY):
            raise CheckpointError(f"its format is {kind!r}, expected {FORMAT!r}")
        if kind == FORMAT and not signed:
            raise CheckpointError("its checksum does not match its content: the file was changed or damaged "
                                  "after it was written")
        return _decode(structure["root"], files, dev)
    except CheckpointError as e:
        raise CheckpointError(f"load: {path!r} cannot be trusted: {e}") from None
    except Exception as e:          # noqa: BLE001  (zip, npy, json and key errors all mean a damaged file)
        raise CheckpointError(f"load: {path!r} is damaged or was not written by tinygradnorm.save "
                              f"({type(e).__name__}: {e})") from None


def _signature_ok(raw):
    """True when raw ends in a zip comment holding the sha256 of everything before it."""
    if len(raw) < _EOCD + _DIGEST:
        return False
    eocd = raw[-(_EOCD + _DIGEST):-_DIGEST]
    if eocd[:4] != b"PK\x05\x06" or int.from_bytes(eocd[20:22], "little") != _DIGEST:
        return False
    return hashlib.sha256(raw[:-_DIGEST]).hexdigest().encode() == raw[-_DIGEST:]


def _decode(node, files, dev):
    if not isinstance(node, dict):
        raise CheckpointError(f"its structure holds {node!r} where an entry was expected")
    if "tensor" in node:
        t = Tensor(_array(files, node["tensor"]), device=dev)
        return t.requires_grad_() if node.get("requires_grad") else t
    if "array" in node:
        return _array(files, node["array"])
    if "dict" in node:
        return {k: _decode(v, files, dev) for k, v in node["dict"]}
    if "list" in node:
        return [_decode(v, files, dev) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, files, dev) for v in node["tuple"])
    if "value" in node:
        return node["value"]
    raise CheckpointError(f"its structure holds an entry of unknown kind {sorted(node)}")


def _array(files, name):
    if name not in files.files:
        raise CheckpointError(f"its structure names the array {name!r}, which the file does not hold")
    return files[name]


def get_rng_state():
    """The CPU generator's state (a JSON-friendly dict), for checkpoints."""
    return as_device("cpu").backend.get_rng_state()


def set_rng_state(state):
    as_device("cpu").backend.set_rng_state(state)
