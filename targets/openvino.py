"""`openvino`: Intel's OpenVINO through its plugin EP for the stock onnxruntime (onnxruntime-ep-openvino), the same
static graph family as `qnn` (fixed chunks, fixed-capacity cache with explicit masks, attention and sparse MoE in
plain ops, MatMulNBits) with RMSNormalization written out (OpenVINO has no kernel for it). The session forbids CPU
fallback: every node runs on OpenVINO. The device (CPU, GPU or NPU) is the provider option `device_type`; the
default, CPU, is what runs here. `--aot` compiles OpenVINO EP context models."""

from . import _static_family as family
from .aot import EpContextAot
from .base import ExecutionProvider, Split, Target, frozen
from .passes.norm import RMSNormToOps

TARGET = Target(
    name="openvino",
    description="OpenVINO plugin EP (Intel CPU / GPU / NPU), static shapes, no CPU fallback: the qnn graph family "
                "with RMSNorm in plain ops.",
    provider=ExecutionProvider("OpenVINOExecutionProvider", package="onnxruntime-ep-openvino", plugin=True),
    passes=family.PASSES + (RMSNormToOps(),),
    quant=family.QUANT,
    allowed=family.ALLOWED,
    shapes=family.SHAPES,
    split=Split(layers_per_part=4),
    provider_options=frozen(device_type="CPU"),
    session_options=family.NO_CPU_FALLBACK,
    aot=EpContextAot("OpenVINOExecutionProvider", "onnxruntime_ep_openvino"),
)
