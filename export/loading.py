"""Checkpoint -> `GptOss` module, without a second copy of the weights.

The module is built on the meta device and every parameter is then assigned from the checkpoint:
packed MXFP4 experts (and any tensor already in the compute dtype) stay memory-mapped from the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint
from .layout import key_of
from .model import GptOss, YarnRotary


def to_torch(array: np.ndarray) -> torch.Tensor:
    """numpy (bf16 as ml_dtypes.bfloat16, possibly a read-only memmap) -> torch, sharing memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmaps: we never write to them
        if array.dtype.name == "bfloat16":
            return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(array)


def load_model(checkpoint_dir: str | Path, dtype: torch.dtype = torch.float32, layout: str | None = None) -> GptOss:
    """Read a gpt-oss checkpoint (Hugging Face, original/ or dense layout) into the reference module.

    Returns the module in eval mode; `model(tokens)` gives logits.
    """
    ckpt = Checkpoint.open(checkpoint_dir, layout=layout)
    with torch.device("meta"):
        model = GptOss(ckpt.config, dtype=dtype, dense_experts=ckpt.dense_experts)
    model.rotary = YarnRotary(ckpt.config)
    expected = model.state_dict()
    state = {}
    for name in ckpt.canonical_names():
        key = key_of(name, "module")
        tensor = to_torch(ckpt.read(name))
        want = expected[key].dtype
        state[key] = tensor if tensor.dtype == want else tensor.to(want)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
