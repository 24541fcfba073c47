"""The portable gpt-oss graph: `model.py` written out as ONNX, custom ops as `gptoss`-domain functions.

    input_ids [B,T] ──Gather(embedding)──> x [B,T,H]           position_ids [B,T] ──> cos, sin [B,T,hd/2]
    for each layer i:                                                                 (YaRN, shared by all layers)
        h = RMSNorm(x) ; q,k,v = Split(h @ Wqkv + b)
        out, present_key.i, present_value.i = gptoss.Attention(q,k,v, past_key.i, past_value.i, cos, sin, sinks;
                                                               window = 128 | 0)
        x = x + out @ Wo + bo
        h = RMSNorm(x) ; r = h @ Wrouter + b
        x = x + gptoss.MoE(h, r, MXFP4 gate_up / down blocks, scales, biases; top_k, swiglu_limit)
    logits = RMSNorm(x) [last position only, if asked] @ Wunembedding

The graph is built from the config alone; weights are `LazyTensor`s read from the checkpoint when the
bundle is written, so the whole export streams one tensor at a time. Dense weights are stored as the
MatMul's B operand ([in, out], fp32) in this portable form; target lowering passes repack them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from .config import ModelConfig
from .onnx_builder import GPTOSS_DOMAIN, Graph, LazyTensor
from .onnx_ops import attention_function, moe_function

Reader = Callable[[str], np.ndarray]   # canonical name -> array (see layout.py)

# Which positions get logits: every one ("all"), the last one ("last"), or from the position given by the
# graph input `logits_from` [1] on ("selectable": 0 to score a sequence, T-1 to generate). The unembedding
# is the largest matmul of a decode step and, for a prompt, T times that: compute only what is needed.
LOGITS_MODES = ("all", "last", "selectable")

PART_OF = {
    "embedding": "embedding", "unembedding": "unembedding",
    "qkv": "attention", "out": "attention", "sinks": "attention",
    "router": "router", "experts": "experts",
}


def part_of(canonical: str) -> str:
    """Which part (experts, attention, router, embedding, unembedding, other) a canonical tensor belongs to."""
    key = canonical.split(".")[2] if canonical.startswith("layers.") else canonical
    return PART_OF.get(key, "other")


def _as_f32(read: Reader, name: str, transpose: bool = False) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        a = np.asarray(read(name), dtype=np.float32)
        return np.ascontiguousarray(a.T) if transpose else a
    return produce


def _raw(read: Reader, name: str) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(read(name))


class PortableGraphBuilder:
    """Emits the portable graph of a config; weights come from `read(canonical_name)`."""

    def __init__(self, cfg: ModelConfig, read: Reader, logits: str = "all"):
        """`read` serves MXFP4 experts (bundle.mxfp4_reader re-encodes those of dense checkpoints)."""
        if logits not in LOGITS_MODES:
            raise ValueError(f"logits must be one of {LOGITS_MODES}, got {logits!r}")
        self.cfg, self.read, self.logits = cfg, read, logits
        self.g = Graph(source=read)

    # ------------------------------------------------------------------ weights
    def dense(self, canonical: str, in_dim: int, out_dim: int) -> str:
        """A Linear weight [out, in] as the MatMul B operand [in, out] (fp32)."""
        return self.g.weight(LazyTensor(f"model.{canonical}", (in_dim, out_dim), np.float32,
                                        _as_f32(self.read, canonical, transpose=True), part_of(canonical)))

    def vector(self, canonical: str, size: int | tuple) -> str:
        shape = (size,) if isinstance(size, int) else size
        return self.g.weight(LazyTensor(f"model.{canonical}", shape, np.float32, _as_f32(self.read, canonical),
                                        part_of(canonical)))

    def packed(self, canonical: str, shape: tuple) -> str:
        return self.g.weight(LazyTensor(f"model.{canonical}", shape, np.uint8, _raw(self.read, canonical),
                                        "experts"))

    # ------------------------------------------------------------------ blocks
    def rms_norm(self, x: str, canonical: str, name: str) -> str:
        """RMSNorm in fp32 (ONNX RMSNormalization, opset 23): x * rsqrt(mean(x^2) + eps) * scale."""
        scale = self.vector(canonical, self.cfg.hidden_size)
        return self.g.op("RMSNormalization", [x, scale], name, axis=-1, epsilon=float(self.cfg.rms_norm_eps),
                         stash_type=1)

    def linear(self, x: str, canonical: str, in_dim: int, out_dim: int, name: str, bias: bool = True) -> str:
        g = self.g
        y = g.op("MatMul", [x, self.dense(f"{canonical}.weight", in_dim, out_dim)], f"{name}/MatMul")
        return g.op("Add", [y, self.vector(f"{canonical}.bias", out_dim)], f"{name}/Add") if bias else y

    def rotary_tables(self, position_ids: str) -> tuple[str, str]:
        from .model import yarn_inv_freq  # torch only for the tables' exact fp32 values

        g = self.g
        inv_freq, concentration = yarn_inv_freq(self.cfg)
        pos = g.op("Unsqueeze", [g.op("Cast", [position_ids], "/model/rotary/pos", to=TensorProto.FLOAT),
                                 g.const([-1])], "/model/rotary/pos_col")
        freqs = g.op("Mul", [pos, g.const(inv_freq.numpy(), np.float32)], "/model/rotary/freqs")
        conc = g.const(concentration, np.float32)
        cos = g.op("Mul", [g.op("Cos", [freqs], "/model/rotary/cos_raw"), conc], "/model/rotary/cos")
        sin = g.op("Mul", [g.op("Sin", [freqs], "/model/rotary/sin_raw"), conc], "/model/rotary/sin")
        return cos, sin

    def attention(self, x: str, i: int, cos: str, sin: str, past_k: str, past_v: str) -> str:
        cfg, g, p = self.cfg, self.g, f"/model/layers.{i}/attn"
        h = self.rms_norm(x, f"layers.{i}.attn_norm", f"{p}/norm")
        qkv = self.linear(h, f"layers.{i}.qkv", cfg.hidden_size, cfg.qkv_dim, f"{p}/qkv")
        q, k, v = g.node("Split", [qkv, g.const([cfg.q_dim, cfg.kv_dim, cfg.kv_dim])], f"{p}/split", 3, axis=-1)
        sinks = self.vector(f"layers.{i}.sinks", cfg.num_attention_heads)
        out, _, _ = g.node("Attention", [q, k, v, past_k, past_v, cos, sin, sinks], f"{p}/attention",
                           [f"{p}/attention/out", f"present_key.{i}", f"present_value.{i}"], domain=GPTOSS_DOMAIN,
                           num_heads=cfg.num_attention_heads, kv_num_heads=cfg.num_key_value_heads,
                           window=cfg.window(i))
        o = self.linear(out, f"layers.{i}.out", cfg.q_dim, cfg.hidden_size, f"{p}/out")
        return g.op("Add", [x, o], f"{p}/residual")

    def moe(self, x: str, i: int) -> str:
        cfg, g, p = self.cfg, self.g, f"/model/layers.{i}/mlp"
        E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        h = self.rms_norm(x, f"layers.{i}.mlp_norm", f"{p}/norm")
        rows = g.op("Reshape", [h, g.const([-1, H])], f"{p}/flatten")                   # [B*T, H]
        router_logits = self.linear(rows, f"layers.{i}.router", H, E, f"{p}/router")
        e = f"layers.{i}.experts"
        weights = [self.packed(f"{e}.gate_up.blocks", (E, 2 * I, H // 32, 16)),
                   self.packed(f"{e}.gate_up.scales", (E, 2 * I, H // 32)),
                   self.vector(f"{e}.gate_up.bias", (E, 2 * I)),
                   self.packed(f"{e}.down.blocks", (E, H, I // 32, 16)),
                   self.packed(f"{e}.down.scales", (E, H, I // 32)),
                   self.vector(f"{e}.down.bias", (E, H))]
        y = g.op("MoE", [rows, router_logits, *weights], f"{p}/experts", domain=GPTOSS_DOMAIN,
                 top_k=cfg.experts_per_token, swiglu_limit=float(cfg.swiglu_limit))
        y = g.op("Reshape", [y, g.op("Shape", [x], f"{p}/shape")], f"{p}/unflatten")
        return g.op("Add", [x, y], f"{p}/residual")

    # ------------------------------------------------------------------ whole graph
    def build(self) -> Graph:
        cfg, g = self.cfg, self.g
        g.use_function(moe_function())
        g.use_function(attention_function())
        ids = g.add_input("input_ids", TensorProto.INT64, ["batch", "seq"])
        pos = g.add_input("position_ids", TensorProto.INT64, ["batch", "seq"])
        cos, sin = self.rotary_tables(pos)
        emb = g.weight(LazyTensor("model.embedding", (cfg.vocab_size, cfg.hidden_size), np.float32,
                                  _as_f32(self.read, "embedding"), "embedding"))
        x = g.op("Gather", [emb, ids], "/model/embedding", axis=0)
        for i in range(cfg.num_hidden_layers):
            cache_shape = ["batch", cfg.num_key_value_heads, f"past_{i}", cfg.head_dim]
            past_k = g.add_input(f"past_key.{i}", TensorProto.FLOAT, cache_shape)
            past_v = g.add_input(f"past_value.{i}", TensorProto.FLOAT, cache_shape)
            x = self.attention(x, i, cos, sin, past_k, past_v)
            x = self.moe(x, i)
            present_shape = ["batch", cfg.num_key_value_heads, f"present_{i}", cfg.head_dim]
            g.add_output(f"present_key.{i}", TensorProto.FLOAT, present_shape)
            g.add_output(f"present_value.{i}", TensorProto.FLOAT, present_shape)
        x = self.rms_norm(x, "final_norm", "/model/norm")
        if self.logits == "last":
            x = g.op("Slice", [x, g.const([-1]), g.const([1 << 62]), g.const([1])], "/model/last_position")
        elif self.logits == "selectable":
            start = g.add_input("logits_from", TensorProto.INT64, [1])
            x = g.op("Slice", [x, start, g.const([1 << 62]), g.const([1])], "/model/logits_positions")
        unemb = self.dense("unembedding", cfg.hidden_size, cfg.vocab_size)
        g.node("MatMul", [x, unemb], "/model/unembedding", ["logits"])
        rows = {"all": "seq", "last": 1, "selectable": "logits_seq"}[self.logits]
        g.outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                          ["batch", rows, cfg.vocab_size]))
        return g


def build_portable_graph(cfg: ModelConfig, read: Reader, logits: str = "all") -> Graph:
    return PortableGraphBuilder(cfg, read, logits).build()
