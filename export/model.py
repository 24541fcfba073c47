"""gpt-oss in plain PyTorch: the one readable model every other form is checked against.

    tokens [B, T]
      -> embedding                                          [B, T, H]
      -> L x Block:
           x += out(attention(qkv(rmsnorm(x)), cache, sinks, window_l))   window_l = 128 on even layers, 0 on odd
           x += mixture_of_experts(rmsnorm(x))                             router top-k -> softmax -> MXFP4 SwiGLU experts
      -> rmsnorm -> unembedding (untied)                    [B, T, vocab]

The MoE and the attention go through the custom ops of `ops.py`, the seams the ONNX exporter maps.
RMSNorm runs in fp32 whatever the compute dtype. MXFP4 expert weights stay packed (uint8) in the module,
memory-mapped from the checkpoint when loaded from one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gptoss.bundle.kv import keep_for

from . import ops
from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(size, dtype=torch.float32), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x.float()
        t = t * torch.rsqrt(torch.mean(t * t, dim=-1, keepdim=True) + self.eps)
        return (t * self.scale).to(x.dtype)


class YarnRotary(nn.Module):
    """YaRN-scaled RoPE tables (NTK-by-parts, concentration folded into cos/sin), half-split."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inv_freq, self.concentration = yarn_inv_freq(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions: int [B, T] -> cos, sin: fp32 [B, T, head_dim/2]."""
        freqs = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq
        return freqs.cos() * self.concentration, freqs.sin() * self.concentration


def yarn_inv_freq(cfg: ModelConfig) -> tuple[Tensor, float]:
    """Inverse frequencies [head_dim/2] (fp32) and the YaRN attention concentration."""
    d = cfg.head_dim
    freq = cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    if cfg.rope_scaling_factor <= 1.0:
        return 1.0 / freq, 1.0
    concentration = 0.1 * math.log(cfg.rope_scaling_factor) + 1.0
    d_half = d / 2
    low = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(cfg.rope_theta)
    interpolation = 1.0 / (cfg.rope_scaling_factor * freq)
    extrapolation = 1.0 / freq
    ramp = (torch.arange(d_half, dtype=torch.float32) - low) / (high - low)
    mask = 1 - ramp.clamp(0, 1)
    return interpolation * (1 - mask) + extrapolation * mask, concentration


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, dtype: torch.dtype):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.window = cfg.window(layer)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.qkv = nn.Linear(cfg.hidden_size, cfg.qkv_dim, dtype=dtype)
        self.out = nn.Linear(cfg.q_dim, cfg.hidden_size, dtype=dtype)
        self.sinks = nn.Parameter(torch.zeros(cfg.num_attention_heads, dtype=torch.float32), requires_grad=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor):
        """x: [B, T, H]; past_*: [B, kv, P, hd] -> (x + attn [B, T, H], present_k, present_v)."""
        qkv = self.qkv(self.norm(x))                                      # [B, T, q + 2*kv]
        q, k, v = qkv.split([self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                             self.num_kv_heads * self.head_dim], dim=-1)
        t, present_k, present_v = ops.attention(q, k, v, past_k, past_v, cos, sin, self.sinks,
                                                self.num_heads, self.num_kv_heads, self.window)
        return x + self.out(t), present_k, present_v


class Experts(nn.Module):
    """The experts of one layer: packed MXFP4 (uint8 blocks + exponents) or, from dense checkpoints, float."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, dense: bool):
        super().__init__()
        E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        self.top_k, self.limit, self.dense = cfg.experts_per_token, cfg.swiglu_limit, dense
        if dense:
            self.register_buffer("gate_up_weight", torch.zeros(E, 2 * I, H, dtype=dtype))
            self.register_buffer("down_weight", torch.zeros(E, H, I, dtype=dtype))
        else:
            self.register_buffer("gate_up_blocks", torch.zeros(E, 2 * I, H // 32, 16, dtype=torch.uint8))
            self.register_buffer("gate_up_scales", torch.full((E, 2 * I, H // 32), 127, dtype=torch.uint8))
            self.register_buffer("down_blocks", torch.zeros(E, H, I // 32, 16, dtype=torch.uint8))
            self.register_buffer("down_scales", torch.full((E, H, I // 32), 127, dtype=torch.uint8))
        self.register_buffer("gate_up_bias", torch.zeros(E, 2 * I, dtype=dtype))
        self.register_buffer("down_bias", torch.zeros(E, H, dtype=dtype))

    def forward(self, x: Tensor, router_logits: Tensor) -> Tensor:
        """x: [T, H], router_logits: [T, E] -> [T, H]."""
        if self.dense:
            return ops.dense_moe(x, router_logits, self.gate_up_weight, self.gate_up_bias,
                                 self.down_weight, self.down_bias, self.top_k, self.limit)
        return ops.mxfp4_moe(x, router_logits, self.gate_up_blocks, self.gate_up_scales, self.gate_up_bias,
                             self.down_blocks, self.down_scales, self.down_bias, self.top_k, self.limit)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, dense: bool):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.router = nn.Linear(cfg.hidden_size, cfg.num_experts, dtype=dtype)
        self.experts = Experts(cfg, dtype, dense)

    def forward(self, x: Tensor) -> Tensor:
        t = self.norm(x).flatten(0, -2)                                   # [B*T, H]
        return x + self.experts(t, self.router(t)).view_as(x)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, dtype: torch.dtype, dense: bool):
        super().__init__()
        self.attn = Attention(cfg, layer, dtype)
        self.mlp = MLP(cfg, dtype, dense)

    def forward(self, x, cos, sin, past_k, past_v):
        x, present_k, present_v = self.attn(x, cos, sin, past_k, past_v)
        return self.mlp(x), present_k, present_v


@dataclass
class ReferenceCache:
    """The reference model's cache: per-layer rotated keys/values [B, kv, S, hd] and the absolute position of
    the next token. Sliding-window layers keep only what the next query can see (bundle.kv.keep_for, the rule
    every cache of the project follows; the runtime's caches live in gptoss.runtime)."""

    keys: list[Tensor]
    values: list[Tensor]
    windows: list[int]
    position: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int = 1, dtype: torch.dtype = torch.float32) -> "ReferenceCache":
        shape = (batch, cfg.num_key_value_heads, 0, cfg.head_dim)
        n = cfg.num_hidden_layers
        return cls([torch.zeros(shape, dtype=dtype) for _ in range(n)],
                   [torch.zeros(shape, dtype=dtype) for _ in range(n)], cfg.windows)

    def update(self, layer: int, present_k: Tensor, present_v: Tensor) -> None:
        keep = keep_for(self.windows[layer])
        if keep is not None and present_k.shape[2] > keep:
            present_k, present_v = present_k[:, :, -keep:], present_v[:, :, -keep:]
        self.keys[layer], self.values[layer] = present_k, present_v


class GptOss(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype = torch.float32, dense_experts: bool = False):
        super().__init__()
        self.config, self.dtype = cfg, dtype
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.rotary = YarnRotary(cfg)
        self.blocks = nn.ModuleList(Block(cfg, i, dtype, dense_experts) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.unembedding = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype)

    def new_cache(self, batch: int = 1) -> ReferenceCache:
        return ReferenceCache.empty(self.config, batch, self.dtype)

    @torch.inference_mode()
    def forward(self, tokens: Tensor, cache: ReferenceCache | None = None) -> Tensor:
        """tokens: int [T] or [B, T] -> logits [T, vocab] or [B, T, vocab].

        With a cache the tokens continue the cached sequence and the cache is updated in place.
        """
        squeeze = tokens.dim() == 1
        tokens = tokens.unsqueeze(0) if squeeze else tokens
        B, T = tokens.shape
        if cache is None:
            cache = self.new_cache(B)
        positions = torch.arange(cache.position, cache.position + T).expand(B, T)
        cos, sin = self.rotary(positions)
        x = self.embedding(tokens)
        for i, block in enumerate(self.blocks):
            x, present_k, present_v = block(x, cos, sin, cache.keys[i], cache.values[i])
            cache.update(i, present_k, present_v)
        cache.position += T
        logits = self.unembedding(self.norm(x))
        return logits[0] if squeeze else logits
