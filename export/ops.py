"""The two gpt-oss custom ops, each defined once: an eager reference body and a fake (shape) function.

    gptoss::mxfp4_moe   sparse mixture of experts on packed MXFP4 weights (router logits in)
    gptoss::dense_moe   the same math on float expert weights (dense Hugging Face checkpoints)
    gptoss::attention   banded (sliding-window) grouped-query attention with sinks, RoPE, KV cache

These are the seams the ONNX exporter maps to custom-domain ops; the model calls nothing else for
these two blocks. Each body is the readable reference of the math, checked against OpenAI's and
Hugging Face's implementations in tests/test_golden.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gptoss.quant.mxfp4 import decode_mxfp4

SWIGLU_ALPHA = 1.702


# --------------------------------------------------------------------------- MXFP4
def dequantize_mxfp4(blocks: Tensor, scales: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """MXFP4 -> float, through the project's one decoder (gptoss.quant.mxfp4.decode_mxfp4, bit-exact with
    OpenAI's reference; its bf16 cast equals the reference decoded in bf16).

    blocks: uint8 [..., G, 16]   two FP4 codes per byte, low nibble = even element
    scales: uint8 [..., G]       block exponent e, value 2^(e - 127)
    returns dtype [..., G * 32]
    """
    decoded = decode_mxfp4(blocks.cpu().numpy(), scales.cpu().numpy(), name="mxfp4 experts")
    return torch.from_numpy(decoded).to(device=blocks.device, dtype=dtype)


# --------------------------------------------------------------------------- MoE
def swiglu(h: Tensor, limit: float) -> Tensor:
    """h: [T, 2*inter] with gate/linear interleaved (gate at even columns) -> [T, inter]."""
    glu, lin = h[..., 0::2], h[..., 1::2]
    glu = glu.clamp(max=limit)
    lin = lin.clamp(min=-limit, max=limit)
    return glu * torch.sigmoid(SWIGLU_ALPHA * glu) * (lin + 1)


def route(router_logits: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Top-k of the logits, then softmax over those k. -> (weights [T, k], expert ids [T, k])."""
    top = torch.topk(router_logits, k=top_k, dim=-1, sorted=True)
    return torch.softmax(top.values, dim=-1), top.indices


def _moe(x: Tensor, router_logits: Tensor, top_k: int, limit: float, expert_weights, gate_up_bias: Tensor,
         down_bias: Tensor) -> Tensor:
    """Sparse MoE: each expert is materialised once, for the tokens routed to it, and only if any are.

    x: [T, hidden]; router_logits: [T, experts]; expert_weights(e) -> (W1 [2*inter, hidden], W2 [hidden, inter])
    """
    weights, experts = route(router_logits, top_k)                       # [T, k], [T, k]
    out = torch.zeros_like(x)
    for e in torch.unique(experts).tolist():
        token, slot = torch.nonzero(experts == e, as_tuple=True)
        w1, w2 = expert_weights(e)
        h = x[token] @ w1.T + gate_up_bias[e]                            # [n, 2*inter]
        y = swiglu(h, limit) @ w2.T + down_bias[e]                        # [n, hidden]
        out.index_add_(0, token, y * weights[token, slot].unsqueeze(-1))
    return out


@torch.library.custom_op("gptoss::mxfp4_moe", mutates_args=())
def mxfp4_moe(x: Tensor, router_logits: Tensor, gate_up_blocks: Tensor, gate_up_scales: Tensor,
              gate_up_bias: Tensor, down_blocks: Tensor, down_scales: Tensor, down_bias: Tensor,
              top_k: int, swiglu_limit: float) -> Tensor:
    """x [T, H], router_logits [T, E]; gate_up_* [E, 2I, H/32, 16|-], down_* [E, H, I/32, 16|-] -> [T, H]."""
    def expert(e: int) -> tuple[Tensor, Tensor]:
        return (dequantize_mxfp4(gate_up_blocks[e], gate_up_scales[e], x.dtype),
                dequantize_mxfp4(down_blocks[e], down_scales[e], x.dtype))
    return _moe(x, router_logits, top_k, swiglu_limit, expert, gate_up_bias.to(x.dtype), down_bias.to(x.dtype))


@mxfp4_moe.register_fake
def _(x, router_logits, gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales, down_bias,
      top_k, swiglu_limit):
    return torch.empty_like(x)


@torch.library.custom_op("gptoss::dense_moe", mutates_args=())
def dense_moe(x: Tensor, router_logits: Tensor, gate_up_weight: Tensor, gate_up_bias: Tensor,
              down_weight: Tensor, down_bias: Tensor, top_k: int, swiglu_limit: float) -> Tensor:
    """x [T, H], router_logits [T, E], gate_up_weight [E, 2I, H], down_weight [E, H, I] -> [T, H]."""
    def expert(e: int) -> tuple[Tensor, Tensor]:
        return gate_up_weight[e].to(x.dtype), down_weight[e].to(x.dtype)
    return _moe(x, router_logits, top_k, swiglu_limit, expert, gate_up_bias.to(x.dtype), down_bias.to(x.dtype))


@dense_moe.register_fake
def _(x, router_logits, gate_up_weight, gate_up_bias, down_weight, down_bias, top_k, swiglu_limit):
    return torch.empty_like(x)


# --------------------------------------------------------------------------- attention
def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split RoPE. x: [B, T, heads, hd]; cos/sin: [B, T, hd/2] (fp32, YaRN-scaled)."""
    cos = cos.unsqueeze(-2).to(x.dtype)
    sin = sin.unsqueeze(-2).to(x.dtype)
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def band_mask(new: int, total: int, window: int, device=None) -> Tensor:
    """Additive mask [new, total] for the last `new` of `total` cached positions.

    Query i sits at cache index total-new+i; it sees key j when j <= that index and, with a window W > 0,
    when it is one of the W positions ending at itself. Indices are relative to the cache, so a cache
    that keeps only the last W-1 keys of a sliding layer gives the same answer as the full one.
    """
    q = torch.arange(total - new, total, device=device).unsqueeze(1)
    k = torch.arange(total, device=device).unsqueeze(0)
    visible = k <= q
    if window > 0:
        visible &= (q - k) < window
    return torch.zeros(new, total, device=device).masked_fill(~visible, float("-inf"))


@torch.library.custom_op("gptoss::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, cos: Tensor, sin: Tensor,
              sinks: Tensor, num_heads: int, num_kv_heads: int, window: int) -> tuple[Tensor, Tensor, Tensor]:
    """Grouped-query attention with sinks over a KV cache, one layer.

    q: [B, T, heads*hd]  k, v: [B, T, kv_heads*hd]  (projected, not yet rotated)
    past_k, past_v: [B, kv_heads, P, hd] (rotated keys of earlier positions; P may be 0)
    cos, sin: [B, T, hd/2] for the positions of the T new tokens
    sinks: [heads] one logit per head, added to each softmax's denominator
    window: tokens a query sees, itself included (0 = all)
    returns out [B, T, heads*hd], present_k, present_v [B, kv_heads, P+T, hd]
    """
    B, T, _ = q.shape
    hd = q.shape[-1] // num_heads
    group = num_heads // num_kv_heads
    q = apply_rotary(q.view(B, T, num_heads, hd), cos, sin)
    k = apply_rotary(k.view(B, T, num_kv_heads, hd), cos, sin)
    present_k = torch.cat((past_k, k.transpose(1, 2).to(past_k.dtype)), dim=2)     # [B, kv, S, hd]
    present_v = torch.cat((past_v, v.view(B, T, num_kv_heads, hd).transpose(1, 2).to(past_v.dtype)), dim=2)
    S = present_k.shape[2]

    qh = q.transpose(1, 2).reshape(B, num_kv_heads, group, T, hd)                  # [B, kv, g, T, hd]
    scores = torch.einsum("bngtd,bnsd->bngts", qh, present_k.to(q.dtype)) / math.sqrt(hd)
    scores = scores + band_mask(T, S, window, q.device).to(scores.dtype)
    sink = sinks.to(scores.dtype).view(1, num_kv_heads, group, 1, 1).expand(B, -1, -1, T, 1)
    probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]      # drop the sink column
    out = torch.einsum("bngts,bnsd->bngtd", probs, present_v.to(q.dtype))           # [B, kv, g, T, hd]
    out = out.reshape(B, num_heads, T, hd).transpose(1, 2).reshape(B, T, num_heads * hd)
    return out, present_k, present_v


@attention.register_fake
def _(q, k, v, past_k, past_v, cos, sin, sinks, num_heads, num_kv_heads, window):
    B, T, _ = q.shape
    hd = q.shape[-1] // num_heads
    S = past_k.shape[2] + T
    present = past_k.new_empty(B, num_kv_heads, S, hd)
    return q.new_empty(q.shape), present, torch.empty_like(present)
