"""Where a cache buffer lives: host memory (numpy) or the execution provider's device (an OrtValue), behind one
interface, so a cache and the engine bind whichever they are given.

    buffer = HostBuffer(shape, dtype)                    numpy, bound by pointer
    buffer = DeviceBuffer(shape, dtype, "cuda", 0)       OrtValue.ortvalue_from_shape_and_type on that device
    buffer.bind_input(binding, name) / bind_output(binding, name)
    buffer.read() -> np.ndarray (a host copy)   buffer.write(array) (host -> buffer, in place)
    buffer.write_rows(data)                    the first data.shape[2] positions only

A device buffer is never resized and never read back per step: the graph reads and writes it in place; only
checkpoints (copies of a sliding layer's buffer, for prefix reuse) cross to the host.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def bind_array(bind, name: str, array: np.ndarray) -> None:
    """Bind a host numpy array (by pointer: it must outlive the run) as an input or output."""
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class HostBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.array = np.zeros(shape, dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def bind_input(self, binding: ort.IOBinding, name: str) -> None:
        bind_array(binding.bind_input, name, self.array)

    def bind_output(self, binding: ort.IOBinding, name: str) -> None:
        bind_array(binding.bind_output, name, self.array)

    def read(self) -> np.ndarray:
        return self.array.copy()

    def write(self, array: np.ndarray) -> None:
        self.array[...] = array

    def write_rows(self, data: np.ndarray) -> None:
        """Overwrite the first data.shape[2] rows (positions) with `data`."""
        self.array[:, :, :data.shape[2]] = data


class DeviceBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device: str, device_id: int = 0):
        self.value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type, device, device_id)
        self.value.update_inplace(np.zeros(shape, dtype))
        self._shape, self._dtype = tuple(shape), np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def nbytes(self) -> int:
        return int(np.prod(self._shape)) * self._dtype.itemsize

    def bind_input(self, binding: ort.IOBinding, name: str) -> None:
        binding.bind_ortvalue_input(name, self.value)

    def bind_output(self, binding: ort.IOBinding, name: str) -> None:
        binding.bind_ortvalue_output(name, self.value)

    def read(self) -> np.ndarray:
        return np.array(self.value.numpy(), copy=True)    # on the CPU device numpy() may share the memory

    def write(self, array: np.ndarray) -> None:
        self.value.update_inplace(np.ascontiguousarray(array, dtype=self._dtype))

    def write_rows(self, data: np.ndarray) -> None:
        full = self.read()
        full[:, :, :data.shape[2]] = data
        self.write(full)


class Placement:
    """Where a cache makes its buffers: host numpy (`Placement()`), or a device (`Placement("cuda", 0)`)."""

    def __init__(self, device: str | None = None, device_id: int = 0):
        self.device, self.device_id = device, device_id

    @property
    def on_device(self) -> bool:
        return self.device is not None

    def buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> HostBuffer | DeviceBuffer:
        if self.device is None:
            return HostBuffer(shape, dtype)
        return DeviceBuffer(shape, dtype, self.device, self.device_id)


HOST = Placement()
