"""The CPU backend: NumPy arrays."""
import numpy as np


class NumpyBackend:
    """Array module and the few operations NumPy spells its own way."""

    name = "numpy"
    xp = np

    def __init__(self):
        self.rng = np.random.default_rng()

    def available(self):
        return True, ""

    def asarray(self, data, dtype=None):
        if hasattr(data, "__cuda_array_interface__"):
            data = data.get()
        return np.asarray(data, dtype=dtype)

    def to_host(self, array):
        return np.asarray(array)

    def scatter_add(self, target, index, values):
        """target[index] += values, accumulating repeated indices."""
        np.add.at(target, index, values)

    def windows(self, array, window_shape, axis):
        """Read-only strided view of every window along the given axes."""
        return np.lib.stride_tricks.sliding_window_view(array, window_shape, axis=axis)

    def seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def get_rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def synchronize(self):
        pass
