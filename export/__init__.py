"""The exporter side: checkpoint readers, the PyTorch reference model, ONNX export (needs torch).

`load_model` is imported lazily so that `gptoss.export.config` & co. stay usable without torch.
"""


def load_model(checkpoint_dir, dtype=None, layout=None):
    """Load a gpt-oss checkpoint into the reference `GptOss` module (see gptoss.export.loading)."""
    import torch

    from .loading import load_model as _load

    return _load(checkpoint_dir, dtype=dtype or torch.float32, layout=layout)
