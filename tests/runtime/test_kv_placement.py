"""KV storage on a device: the shared cache's buffers as OrtValues (here on ONNX Runtime's CPU device, the same code
path a GPU takes), bound with I/O binding, read and written in place by the graph.

Golden: greedy decoding with device buffers equals decoding with host numpy buffers, past the window, and so does
prefix reuse through a checkpoint (the only time a device buffer crosses to the host)."""

import numpy as np
import onnxruntime as ort
import pytest

from gptoss.runtime import Model, Placement
from gptoss.runtime.kv.storage import DeviceBuffer, HostBuffer
from helpers import FP32

PROMPT = np.random.default_rng(5).integers(1000, 199000, 30).tolist()


@pytest.fixture(scope="module")
def models(tiny_bundle):
    bundle = tiny_bundle("cpu", quant=FP32)
    return Model.load(bundle), Model.load(bundle, placement=Placement("cpu"), max_context=256)


def greedy(model, ids, n, cache=None):
    return [e.token_id for e in model.generate(ids, max_new_tokens=n, temperature=0, stop_tokens=(), cache=cache)]


def test_device_buffers_are_ortvalues_of_the_whole_context(models):
    host, device = models
    cache = device.new_cache()
    key, value = cache.buffers(1)                          # a full-attention layer
    assert isinstance(key, DeviceBuffer) and isinstance(key.value, ort.OrtValue)
    assert key.value.device_name() == "cpu" and key.shape == (1, 2, device.max_context + 1, 64)
    assert isinstance(host.new_cache().buffers(1)[0], HostBuffer)


def test_device_cache_generates_what_the_host_cache_does(models):
    host, device = models
    assert greedy(device, PROMPT, 40) == greedy(host, PROMPT, 40)


def test_prefix_reuse_through_a_device_checkpoint(models):
    host, device = models
    cache = device.new_cache()
    first = greedy(device, PROMPT, 20, cache=cache)         # 50 cached: the sliding layers have compacted
    longer = PROMPT + first[:10] + [4321]
    again = greedy(device, longer, 8, cache=cache)
    assert cache.last_reuse == len(PROMPT)
    assert again == greedy(host, longer, 8)


def test_buffer_round_trip():
    buf = DeviceBuffer((1, 2, 4, 3), np.float32, "cpu")
    data = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3)
    buf.write(data)
    copy = buf.read()
    buf.write_rows(-data[:, :, :2])
    assert np.array_equal(copy, data)                       # a read is a copy, not a view of the device memory
    assert np.array_equal(buf.read()[:, :, :2], -data[:, :, :2]) and np.array_equal(buf.read()[:, :, 2:], data[:, :, 2:])
