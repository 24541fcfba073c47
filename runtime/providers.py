"""The execution providers the runtime knows: what a user may call each, how it is obtained, how it is attached.

    built in   the provider is part of the installed onnxruntime flavour (CPU everywhere; CUDA in onnxruntime-gpu)
    plugin     a library beside the stock onnxruntime, in its own pip package: the runtime imports the package,
               registers its library (onnxruntime.register_execution_provider_library), picks one of the devices
               it offers (onnxruntime.get_ep_devices) and attaches it (SessionOptions.add_provider_for_devices)

A provider may be named by its ONNX Runtime name ("QNNExecutionProvider") or by the target that uses it ("qnn").
A provider whose package is missing is a ProviderError that says which `pip install` line brings it.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import onnxruntime as ort

from .errors import ProviderError


@dataclass(frozen=True)
class Provider:
    ep: str                                     # ONNX Runtime's name
    names: tuple[str, ...]                      # the targets' names for it
    install: str                                # the pip line that brings it
    plugin: str | None = None                   # the plugin package's module (None: built into onnxruntime)
    device_types: tuple[str, ...] = ()          # OrtHardwareDeviceType names to prefer, in order ("NPU", "GPU")
    memory: str | None = None                   # the OrtValue device of its memory, for a cache kept on the device
    options: Callable[[Any], dict[str, str]] = field(default=lambda module: {})   # defaults from the module


PROVIDERS: tuple[Provider, ...] = (
    Provider("CPUExecutionProvider", ("cpu", "portable"), "pip install gptoss-runtime"),
    Provider("CUDAExecutionProvider", ("cuda",), "pip install gptoss-runtime-gpu", memory="cuda"),
    Provider("DmlExecutionProvider", ("dml",), "pip install onnxruntime-directml (Windows)"),
    Provider("CoreMLExecutionProvider", ("coreml",), "pip install onnxruntime (macOS wheels include CoreML)"),
    Provider("QNNExecutionProvider", ("qnn",), "pip install 'gptoss-runtime[qnn]'  (onnxruntime-qnn)",
             plugin="onnxruntime_qnn", device_types=("NPU",),
             options=lambda m: {"backend_path": m.get_qnn_htp_path()}),
    Provider("OpenVINOExecutionProvider", ("openvino",),
             "pip install 'gptoss-runtime[openvino]'  (onnxruntime-ep-openvino)", plugin="onnxruntime_ep_openvino",
             device_types=("NPU", "GPU", "CPU")),
    Provider("WebGpuExecutionProvider", ("webgpu",), "pip install 'gptoss-runtime[webgpu]'  (onnxruntime-ep-webgpu)",
             plugin="onnxruntime_ep_webgpu", device_types=("GPU",), memory="webgpu"),
    Provider("NvTensorRTRTXExecutionProvider", ("trt-rtx",),
             "pip install 'gptoss-runtime[trt-rtx]'  (onnxruntime-ep-nv-tensorrt-rtx)",
             plugin="onnxruntime_ep_nv_tensorrt_rtx", device_types=("GPU",), memory="cuda"),
)

_lock = threading.Lock()


def resolve(name: str) -> Provider:
    """The provider called `name` (an ONNX Runtime EP name or a target name); unknown EP names pass through as a
    built-in provider, so that any provider of the installed onnxruntime can still be asked for."""
    for p in PROVIDERS:
        if name == p.ep or name in p.names:
            return p
    if name.endswith("ExecutionProvider"):
        return Provider(name, (), "the onnxruntime flavour that has it")
    known = sorted(n for p in PROVIDERS for n in (p.ep, *p.names))
    raise ProviderError(f"unknown execution provider {name!r}; known: {', '.join(known)}")


def _module(p: Provider):
    try:
        return importlib.import_module(p.plugin)
    except ImportError:
        raise ProviderError(f"{p.ep} needs the {p.plugin.replace('_', '-')} package, which is not installed: "
                            f"{p.install}") from None


def attach_plugin(p: Provider, so: ort.SessionOptions, options: dict[str, str]) -> None:
    """Register the plugin's library once per process, pick its device, attach it to `so` with `options` (the
    plugin's defaults first, `options` over them)."""
    module = _module(p)
    with _lock:
        if not any(d.ep_name == p.ep for d in ort.get_ep_devices()):   # registered once per process, by anyone
            try:
                ort.register_execution_provider_library(p.ep, module.get_library_path())
            except Exception as e:  # ORT raises its own exception types
                raise ProviderError(f"{p.ep}: onnxruntime could not register {module.get_library_path()}: "
                                    f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    options = {k: str(v) for k, v in options.items()}
    device = _pick_device(p, options.pop("device_type", None))
    so.add_provider_for_devices([device], {**p.options(module), **options})


def _pick_device(p: Provider, wanted: str | None):
    """The plugin's device of type `wanted` (the provider option "device_type": CPU, GPU, NPU), else its best one."""
    devices = [d for d in ort.get_ep_devices() if d.ep_name == p.ep]
    if not devices:
        raise ProviderError(f"{p.ep} is installed but offers no device on this machine")
    if wanted is not None:
        match = [d for d in devices if _device_type(d) == wanted.upper()]
        if not match:
            raise ProviderError(f"{p.ep} offers no {wanted} device here; it offers: "
                                f"{sorted({_device_type(d) for d in devices})}")
        return match[0]
    rank = {t: i for i, t in enumerate(p.device_types)}
    return min(devices, key=lambda d: rank.get(_device_type(d), len(rank)))


def _device_type(device) -> str:
    kind = getattr(device.device, "type", None)
    return getattr(kind, "name", str(kind)).upper()
