"""The lean gpt-oss runtime: onnxruntime + numpy + tiktoken (+ click for the `gptoss` CLI), nothing else.

    from gptoss.runtime import Model
    model = Model.load("bundle/")
    print(model.chat([{"role": "user", "content": "Hi!"}]).final)

It reads a bundle's manifest.json (docs/bundle-format.md) and never imports torch, onnx or the exporter.
"""

from .cache import KVCache
from .chat import ChatEvent, ChatResult, ChatStream, Conversation
from .errors import BundleError, ContextOverflowError, ProviderError, RuntimeErrorBase
from .manifest import Manifest, load_manifest
from .model import Model, TokenEvent
from .sampling import SamplingParams

__all__ = [
    "BundleError", "ChatEvent", "ChatResult", "ChatStream", "ContextOverflowError", "Conversation", "KVCache",
    "Manifest", "Model", "ProviderError", "RuntimeErrorBase", "SamplingParams", "TokenEvent", "load_manifest",
]
