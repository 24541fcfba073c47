"""The KV-cache contract between a graph and the runtime that drives it, decided once by the exporter.

Per layer `i` of window `W_i` (tokens a query sees, itself included; 0 = every earlier token):

    keep_i      cached positions that can still matter: W_i - 1 on a sliding layer, None (all) on a full one
    capacity_i  rows of the layer's buffer when the contract fixes them (None: the runtime grows it)

and one mode for the whole graph, in which `past_*` goes in and `present_*` comes out [B, kv, rows, head_dim]:

    concat   past = the last min(N, keep_i) positions; present = past + the T new rows. The runtime keeps the
             last keep_i rows of present as the next past. (The portable graph.)
    shared   ONE buffer per layer, bound as both past and present; the graph writes the new rows in place at
             their absolute positions (from position_ids). A layer without a capacity (every full layer): the
             runtime keeps more rows than N + T (it may grow the buffer); a sliding layer with one: exactly
             capacity_i >= W_i rows that the attention op manages itself (ONNX Runtime's GroupQueryAttention
             window cache: the cpu target). A sliding layer without one keeps every position, the window being a
             mask only.
    static   past = a fixed buffer of capacity_i rows (full layers: the context; sliding: a ring of
             >= W_i - 1 rows); present = ONLY the T new rows. The runtime writes them into the buffer (slot
             = position on full layers, position % capacity_i on sliding ones) and tells the graph which
             rows are visible with an explicit mask per window (names.attention_bias). (NPUs.)

`device` says where the runtime keeps the buffers: "host" (numpy) or "device" (OrtValues on the execution
provider's device).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BundleError

MODES = ("concat", "shared", "static")
MASKED = -1.0e4
"""What a static graph's additive mask holds where a key is not visible: finite on every backend (NPUs mishandle
-inf, and float16 has no room for float32's lowest), yet exp() of it is 0 in any float precision: exact."""
DTYPES = ("float32", "float16", "int8")
"""The cache's element type. int8 (shared mode only): ONNX Runtime's quantized GroupQueryAttention cache, one scale
per (KV head, channel) that the graph holds as constants; the runtime only allocates int8 buffers."""
LAYOUTS = ("BNSH",)
DEVICES = ("host", "device")


def keep_for(window: int) -> int | None:
    """Cached positions a layer of `window` can still use: a query sees itself and window - 1 before it."""
    return window - 1 if window > 0 else None


def static_capacity(window: int, context: int) -> int:
    """Rows of a layer's fixed buffer in "static" mode: a ring of window - 1 rows, or the whole context."""
    return window - 1 if window > 0 else context


@dataclass(frozen=True)
class KVContract:
    mode: str
    dtype: str
    num_kv_heads: int
    head_dim: int
    window: tuple[int, ...]
    keep: tuple[int | None, ...]
    capacity: tuple[int | None, ...]
    layout: str = "BNSH"
    device: str = "host"

    @classmethod
    def for_windows(cls, mode: str, windows, *, dtype: str, num_kv_heads: int, head_dim: int,
                    capacity=None, device: str = "host") -> "KVContract":
        """The contract of a model whose layers have `windows`; `capacity` per layer (default: none fixed)."""
        windows = tuple(int(w) for w in windows)
        capacity = tuple(capacity) if capacity is not None else (None,) * len(windows)
        contract = cls(mode, dtype, num_kv_heads, head_dim, windows, tuple(keep_for(w) for w in windows),
                       capacity, device=device)
        contract.validate()
        return contract

    @property
    def num_layers(self) -> int:
        return len(self.window)

    def validate(self, where: str = "kv_cache") -> None:
        """Raise BundleError (naming `where`) unless the contract is consistent."""
        def bad(msg: str):
            raise BundleError(f"{where}: {msg}")

        for name, value, known in (("mode", self.mode, MODES), ("dtype", self.dtype, DTYPES),
                                   ("layout", self.layout, LAYOUTS), ("device", self.device, DEVICES)):
            if value not in known:
                bad(f"{name} is {value!r}; known: {list(known)}")
        if self.num_kv_heads < 1 or self.head_dim < 1:
            bad(f"num_kv_heads ({self.num_kv_heads}) and head_dim ({self.head_dim}) must be positive")
        if self.dtype == "int8" and self.mode != "shared":
            bad(f"dtype int8 needs mode 'shared' (the attention op quantizes the rows it writes), not {self.mode!r}")
        n = self.num_layers
        for name, values in (("keep", self.keep), ("capacity", self.capacity)):
            if len(values) != n:
                bad(f"{name} has {len(values)} entries for {n} layers (window has {n})")
        for i, (w, k, c) in enumerate(zip(self.window, self.keep, self.capacity)):
            if w < 0:
                bad(f"layer {i}: negative window {w}")
            if k != keep_for(w):
                bad(f"layer {i}: keep {k} does not fit window {w} (a sliding layer keeps window - 1, a full "
                    f"layer null)")
            self._check_capacity(i, w, c, bad)

    def _check_capacity(self, i: int, w: int, c: int | None, bad) -> None:
        if self.mode == "concat" and c is not None:
            bad(f"layer {i}: capacity {c}: a concat cache has no fixed capacity (null)")
        if self.mode == "shared" and c is not None and (w == 0 or c < w):
            bad(f"layer {i}: capacity {c} does not fit window {w} (shared: a sliding layer's capacity is null or "
                f">= window, a full layer's null)")
        if self.mode == "static" and (c is None or c < 1 or (w > 0 and c < w - 1)):
            bad(f"layer {i}: capacity {c} does not fit window {w} (static: every layer has a fixed capacity, "
                f">= window - 1 on sliding layers)")
        if self.device == "device" and self.mode != "shared":
            bad(f"a {self.mode} cache lives on the host; only a shared cache can live on the device")

    def to_json(self) -> dict:
        return {"mode": self.mode, "dtype": self.dtype, "layout": self.layout, "device": self.device,
                "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim, "window": list(self.window),
                "keep": list(self.keep), "capacity": list(self.capacity)}
