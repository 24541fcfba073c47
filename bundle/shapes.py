"""The shape regime of a bundle's graphs: dynamic (any batch and length: CPUs, GPUs) or static (NPUs).

    Dynamic()                 one graph, "main": input_ids [B, T] for any T; the cache grows
    Static(chunk, context)    two graphs over the same weights: "prefill" takes exactly `chunk` tokens per call
                              (the runtime pads the last chunk), "decode" exactly one; batch 1; every cache
                              buffer has a fixed capacity and the context holds at most `context` positions
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .errors import BundleError


@dataclass(frozen=True)
class Dynamic:
    kind = "dynamic"

    def graph_tokens(self) -> dict[str, int | None]:
        """Graph role -> tokens per call (None: any)."""
        return {"main": None}

    def to_json(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class Static:
    chunk: int
    context: int
    kind = "static"

    def __post_init__(self):
        if not (isinstance(self.chunk, int) and isinstance(self.context, int)) or not 1 <= self.chunk <= self.context:
            raise BundleError(f"static shapes need 1 <= chunk <= context, got chunk={self.chunk!r}, "
                              f"context={self.context!r}")

    def graph_tokens(self) -> dict[str, int | None]:
        return {"prefill": self.chunk, "decode": 1}

    def to_json(self) -> dict:
        return {"kind": self.kind, "chunk": self.chunk, "context": self.context}


Shapes = Union[Dynamic, Static]
