"""The bundle contract as code: what `gptoss-export` writes and the runtime reads (docs/bundle-format.md).

    manifest.py   Manifest (versioned, validating from_json / to_json), GraphContract, TargetSpec, ...
    names.py      the graph's input and output names
    kv.py         the KV-cache contract: mode, dtype, layout, window / keep / capacity per layer, device
    shapes.py     Dynamic | Static(chunk, context)
    tokenizer.py  the tokenizer folder format
    files.py      sha256, paths confined to the bundle folder

Imports neither torch nor onnx nor anything else of the project (but the root `errors`): it ships in the
runtime wheel.
"""

from .errors import BundleError, TokenizerError
from .kv import KVContract, keep_for
from .manifest import (FORMAT, FORMAT_VERSION, LOGITS_MODES, MANIFEST, GraphContract, GraphFile, Manifest,
                       TargetSpec, TokenizerSpec, load_manifest)
from .shapes import Dynamic, Shapes, Static

__all__ = ["BundleError", "Dynamic", "FORMAT", "FORMAT_VERSION", "GraphContract", "GraphFile", "KVContract",
           "LOGITS_MODES", "MANIFEST", "Manifest", "Shapes", "Static", "TargetSpec", "TokenizerError",
           "TokenizerSpec", "keep_for", "load_manifest"]
