"""Tensor layouts of the published gpt-oss checkpoints, as data.

Every reader, writer and validator works from these tables; nothing else spells a checkpoint key.

Canonical names (what the model consumes), per layer `i`:

    embedding                              [vocab, hidden]           bf16
    layers.i.attn_norm                     [hidden]
    layers.i.qkv.weight / .bias            [q_dim + 2*kv_dim, hidden] / [q_dim + 2*kv_dim]
    layers.i.sinks                         [heads]
    layers.i.out.weight / .bias            [hidden, q_dim] / [hidden]
    layers.i.mlp_norm                      [hidden]
    layers.i.router.weight / .bias         [experts, hidden] / [experts]
    layers.i.experts.gate_up.blocks        [experts, 2*inter, hidden/32, 16]  uint8 (MXFP4, rows interleaved gate/linear)
    layers.i.experts.gate_up.scales        [experts, 2*inter, hidden/32]      uint8 (exponent, bias 127)
    layers.i.experts.gate_up.bias          [experts, 2*inter]
    layers.i.experts.down.blocks / .scales [experts, hidden, inter/32, 16] / [experts, hidden, inter/32]
    layers.i.experts.down.bias             [experts, hidden]
    final_norm                             [hidden]
    unembedding                            [vocab, hidden]

Dense (dequantized) Hugging Face checkpoints replace blocks+scales with
    layers.i.experts.gate_up.weight        [experts, 2*inter, hidden]   (file: [experts, hidden, 2*inter])
    layers.i.experts.down.weight           [experts, hidden, inter]     (file: [experts, inter, hidden])

A `Source` says how one canonical tensor is made from file tensors: one key as is, several keys
concatenated on dim 0 (Hugging Face's split q/k/v), or one key with its last two dims swapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ModelConfig

Layout = Literal["hf", "original", "hf-dense"]
LAYOUTS: tuple[str, ...] = ("hf", "original", "hf-dense")

BF16, U8 = "BF16", "U8"


@dataclass(frozen=True)
class FileTensor:
    """One tensor as stored in a checkpoint file."""

    key: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string


@dataclass(frozen=True)
class Source:
    """How a canonical tensor is assembled from file tensors."""

    canonical: str
    shape: tuple[int, ...]
    dtype: str
    keys: tuple[FileTensor, ...]
    combine: Literal["one", "concat0", "swap_last2"] = "one"


def canonical_specs(cfg: ModelConfig, dense_experts: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every canonical tensor, in model order (layer by layer)."""
    H, V, E, I = cfg.hidden_size, cfg.vocab_size, cfg.num_experts, cfg.intermediate_size
    out = [("embedding", (V, H), BF16)]
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        out += [
            (p + "attn_norm", (H,), BF16),
            (p + "qkv.weight", (cfg.qkv_dim, H), BF16),
            (p + "qkv.bias", (cfg.qkv_dim,), BF16),
            (p + "sinks", (cfg.num_attention_heads,), BF16),
            (p + "out.weight", (H, cfg.q_dim), BF16),
            (p + "out.bias", (H,), BF16),
            (p + "mlp_norm", (H,), BF16),
            (p + "router.weight", (E, H), BF16),
            (p + "router.bias", (E,), BF16),
        ]
        if dense_experts:
            out += [(p + "experts.gate_up.weight", (E, 2 * I, H), BF16)]
        else:
            out += [(p + "experts.gate_up.blocks", (E, 2 * I, H // 32, 16), U8),
                    (p + "experts.gate_up.scales", (E, 2 * I, H // 32), U8)]
        out += [(p + "experts.gate_up.bias", (E, 2 * I), BF16)]
        if dense_experts:
            out += [(p + "experts.down.weight", (E, H, I), BF16)]
        else:
            out += [(p + "experts.down.blocks", (E, H, I // 32, 16), U8),
                    (p + "experts.down.scales", (E, H, I // 32), U8)]
        out += [(p + "experts.down.bias", (E, H), BF16)]
    out += [("final_norm", (H,), BF16), ("unembedding", (V, H), BF16)]
    return out


# One table of names: canonical -> (Hugging Face key, original/ key, key in the reference module's state dict).
# Global tensors are named as they are; per-layer ones after the prefix `model.layers.{i}.` (HF), `block.{i}.`
# (original) and `blocks.{i}.` (module). HF has no fused qkv: it stores q_proj, k_proj and v_proj (see sources).
_GLOBAL_NAMES = {
    "embedding": ("model.embed_tokens.weight", "embedding.weight", "embedding.weight"),
    "final_norm": ("model.norm.weight", "norm.scale", "norm.scale"),
    "unembedding": ("lm_head.weight", "unembedding.weight", "unembedding.weight"),
}
_LAYER_NAMES = {
    "attn_norm": ("input_layernorm.weight", "attn.norm.scale", "attn.norm.scale"),
    "qkv.weight": (None, "attn.qkv.weight", "attn.qkv.weight"),
    "qkv.bias": (None, "attn.qkv.bias", "attn.qkv.bias"),
    "sinks": ("self_attn.sinks", "attn.sinks", "attn.sinks"),
    "out.weight": ("self_attn.o_proj.weight", "attn.out.weight", "attn.out.weight"),
    "out.bias": ("self_attn.o_proj.bias", "attn.out.bias", "attn.out.bias"),
    "mlp_norm": ("post_attention_layernorm.weight", "mlp.norm.scale", "mlp.norm.scale"),
    "router.weight": ("mlp.router.weight", "mlp.gate.weight", "mlp.router.weight"),
    "router.bias": ("mlp.router.bias", "mlp.gate.bias", "mlp.router.bias"),
    "experts.gate_up.blocks": ("mlp.experts.gate_up_proj_blocks", "mlp.mlp1_weight.blocks",
                               "mlp.experts.gate_up_blocks"),
    "experts.gate_up.scales": ("mlp.experts.gate_up_proj_scales", "mlp.mlp1_weight.scales",
                               "mlp.experts.gate_up_scales"),
    "experts.gate_up.bias": ("mlp.experts.gate_up_proj_bias", "mlp.mlp1_bias", "mlp.experts.gate_up_bias"),
    "experts.gate_up.weight": ("mlp.experts.gate_up_proj", None, "mlp.experts.gate_up_weight"),
    "experts.down.blocks": ("mlp.experts.down_proj_blocks", "mlp.mlp2_weight.blocks", "mlp.experts.down_blocks"),
    "experts.down.scales": ("mlp.experts.down_proj_scales", "mlp.mlp2_weight.scales", "mlp.experts.down_scales"),
    "experts.down.bias": ("mlp.experts.down_proj_bias", "mlp.mlp2_bias", "mlp.experts.down_bias"),
    "experts.down.weight": ("mlp.experts.down_proj", None, "mlp.experts.down_weight"),
}
_COLUMN = {"hf": 0, "original": 1, "module": 2}
_LAYER_PREFIX = {"hf": "model.layers.{}.", "original": "block.{}.", "module": "blocks.{}."}


def key_of(canonical: str, naming: str) -> str:
    """The name of a canonical tensor in a checkpoint (`naming` "hf" or "original") or in the reference module's
    state dict ("module")."""
    column = _COLUMN[naming]
    if not canonical.startswith("layers."):
        return _GLOBAL_NAMES[canonical][column]
    _, i, rest = canonical.split(".", 2)
    return _LAYER_PREFIX[naming].format(i) + _LAYER_NAMES[rest][column]


def sources(cfg: ModelConfig, layout: str) -> list[Source]:
    """How each canonical tensor is read from a checkpoint of `layout`, in model order."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {list(LAYOUTS)}")
    dense = layout == "hf-dense"
    out = []
    for name, shape, dtype in canonical_specs(cfg, dense_experts=dense):
        if layout == "original":
            out.append(Source(name, shape, dtype, (FileTensor(key_of(name, "original"), shape, dtype),)))
        elif name.endswith(("qkv.weight", "qkv.bias")):
            i, kind = name.split(".")[1], name.rsplit(".", 1)[1]
            rows = (cfg.q_dim, cfg.kv_dim, cfg.kv_dim)
            keys = tuple(FileTensor(f"model.layers.{i}.self_attn.{p}_proj.{kind}", (r,) + shape[1:], dtype)
                         for p, r in zip("qkv", rows))
            out.append(Source(name, shape, dtype, keys, "concat0"))
        elif name.endswith((".gate_up.weight", ".down.weight")):
            file_shape = shape[:-2] + (shape[-1], shape[-2])
            out.append(Source(name, shape, dtype, (FileTensor(key_of(name, "hf"), file_shape, dtype),), "swap_last2"))
        else:
            out.append(Source(name, shape, dtype, (FileTensor(key_of(name, "hf"), shape, dtype),)))
    return out


def file_tensors(cfg: ModelConfig, layout: str) -> list[FileTensor]:
    """Every tensor a checkpoint of `layout` holds, in the order the synthetic writer stores them."""
    return [ft for src in sources(cfg, layout) for ft in src.keys]


def layer_of(canonical: str) -> int | None:
    """The layer index of a canonical name, or None for embedding / final_norm / unembedding."""
    return int(canonical.split(".")[1]) if canonical.startswith("layers.") else None
