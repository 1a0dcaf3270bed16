"""The dtypes a Tensor can have. They are NumPy dtype objects, which CuPy shares."""
import numpy as _np

float16 = _np.dtype("float16")
float32 = _np.dtype("float32")
float64 = _np.dtype("float64")
int32 = _np.dtype("int32")
int64 = _np.dtype("int64")
uint8 = _np.dtype("uint8")
bool_ = _np.dtype("bool")


def as_dtype(dtype):
    """Normalize a dtype given as a tinygradnorm/NumPy dtype, a Python type or a string."""
    if dtype is None:
        return None
    try:
        return _np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}: expected one of tinygradnorm.float32, float64, "
                        "int64, bool, or a NumPy dtype") from None


def is_floating(dtype):
    return dtype.kind == "f"


def category(dtype):
    """0 for bool, 1 for integers, 2 for floating point, 3 for complex: PyTorch's order for type promotion."""
    return "bifc".index("i" if dtype.kind == "u" else dtype.kind)


def promote_types(a, b):
    """PyTorch's promotion of two dtypes: across categories (bool < int < float) the higher one's dtype wins
    (int64 with float32 is float32, where NumPy says float64); within one, NumPy's rule."""
    ca, cb = category(a), category(b)
    if {ca, cb} == {2, 3}:                  # float32 with complex128 is complex128, float64 with complex64 too
        return _np.promote_types(a, b)
    if ca != cb:
        return a if ca > cb else b
    return _np.promote_types(a, b)
