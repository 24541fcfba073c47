"""The lean gpt-oss runtime: onnxruntime + numpy + tiktoken (+ click for the `gptoss` CLI), nothing else.

    from gptoss.runtime import Model
    model = Model.load("bundle/")
    print(model.chat([{"role": "user", "content": "Hi!"}]).final)

It reads a bundle through the bundle contract (gptoss.bundle: manifest.json, docs/bundle-format.md) and never
imports torch, onnx, the exporter or the targets.

    model.py        Model: load, logits, generate, chat, conversation
    generation.py   the one generation loop (Sequence: prefill, then step by step)
    engine.py       DynamicEngine; static_engine.py StaticEngine (fixed chunks, explicit masks)
    kv/             KV caches per mode (concat, shared, static), on the host or a device (kv/storage.py)
    session.py      onnxruntime sessions on the bundle's execution provider
    chat.py, harmony/, tokenizer.py, sampling.py, cli.py, bench.py
"""

from gptoss.bundle import Manifest, load_manifest

from .chat import ChatEvent, ChatResult, ChatStream, Conversation
from .errors import BundleError, ContextOverflowError, ProviderError, RuntimeErrorBase
from .generation import TokenEvent
from .kv import KVCache, Placement
from .model import Model
from .sampling import SamplingParams

__all__ = [
    "BundleError", "ChatEvent", "ChatResult", "ChatStream", "ContextOverflowError", "Conversation", "KVCache",
    "Manifest", "Model", "Placement", "ProviderError", "RuntimeErrorBase", "SamplingParams", "TokenEvent",
    "load_manifest",
]
