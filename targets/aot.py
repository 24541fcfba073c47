"""Ahead-of-time compilation into EP context models: each graph file of a written bundle is compiled by the target's
execution provider (session config `ep.context_enable=1`) into `<file>_ctx.onnx`, an ONNX model whose one node
holds the compiled graph, plus the provider's binary beside it (`ep.context_embed_mode=0`: a separate file, since
embedding would meet protobuf's 2 GB limit). The runtime then loads the context models without compiling anything.

The compiled binaries carry the weights, so the graphs and the weights file they replace are removed from the
bundle. Each graph gets its own context: a prefill and a decode graph compiled into one shared context
(`ep.share_ep_contexts`) would hold one copy of their common weights, but the x86 HTP simulator refuses to load a
context of several graphs (contextCreateFromBinary: QNN_COMMON_ERROR_NOT_SUPPORTED), so that saving is not taken.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .base import Target, TargetError

@dataclass(frozen=True)
class EpContextAot:
    ep: str                                                     # the provider's ONNX Runtime name
    plugin: str                                                 # its plugin package's module
    options: Callable[[object], dict] = lambda module: {}       # provider options derived from the module

    def __call__(self, bundle_dir: Path, graph_files: Mapping[str, tuple[str, ...]],
                 target: Target) -> dict[str, tuple[str, ...]]:
        import onnxruntime as ort

        module = self._module()
        if not any(d.ep_name == self.ep for d in ort.get_ep_devices()):      # not registered in this process yet
            ort.register_execution_provider_library(self.ep, module.get_library_path())
        options = {**self.options(module), **{k: str(v) for k, v in target.provider_options.items()}}
        wanted = options.pop("device_type", None)
        device = next((d for d in ort.get_ep_devices() if d.ep_name == self.ep and
                       (wanted is None or str(getattr(d.device.type, "name", "")).upper() == wanted.upper())), None)
        if device is None:
            raise TargetError(f"{self.ep} offers no {wanted or ''} device on this machine: cannot compile ahead "
                              f"of time")
        compiled = {}
        for role, parts in graph_files.items():
            compiled[role] = tuple(self._compile(ort, bundle_dir, part, device, options, target) for part in parts)
        for parts in graph_files.values():
            for part in parts:
                (bundle_dir / part).unlink()
        return compiled

    def _module(self):
        try:
            return importlib.import_module(self.plugin)
        except ImportError:
            raise TargetError(f"--aot for {self.ep} needs the {self.plugin.replace('_', '-')} package on the "
                              f"exporting machine: pip install {self.plugin.replace('_', '-')}") from None

    @staticmethod
    def _compile(ort, bundle_dir: Path, part: str, device, options: dict, target: Target) -> str:
        out = part.removesuffix(".onnx") + "_ctx.onnx"
        so = ort.SessionOptions()
        for key, value in {**target.session_options, "ep.context_enable": "1", "ep.context_embed_mode": "0",
                           "ep.context_file_path": str(bundle_dir / out)}.items():
            if "." in key:
                so.add_session_config_entry(key, str(value))
        so.add_provider_for_devices([device], options)
        try:
            ort.InferenceSession(str(bundle_dir / part), so)
        except Exception as e:  # ORT raises its own exception types
            raise TargetError(f"{bundle_dir / part}: {target.provider.name} could not compile it: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        return out
