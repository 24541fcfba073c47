"""The portable gpt-oss graph: `model.py` written out as ONNX, custom ops as `gptoss`-domain functions.

    input_ids [B,T] ──Gather(embedding)──> x [B,T,H]           position_ids [B,T] ──> cos, sin [B,T,hd/2]
    for each layer i:                                                                 (YaRN, shared by all layers)
        h = RMSNorm(x) ; q,k,v = Split(h @ Wqkv + b)
        out, present_key.i, present_value.i = gptoss.Attention(q,k,v, past_key.i, past_value.i, cos, sin, sinks;
                                                               window = 128 | 0)
        x = x + out @ Wo + bo
        h = RMSNorm(x) ; r = h @ Wrouter + b
        x = x + gptoss.MoE(h, r, MXFP4 gate_up / down blocks, scales, biases; top_k, swiglu_limit, swiglu_alpha)
    logits = RMSNorm(x) [positions asked for] @ Wunembedding

The graph is built from the config alone; weights are `LazyTensor`s read from the checkpoint when the bundle is
written, so the whole export streams one tensor at a time. Dense weights are stored as the MatMul's B operand
([in, out], fp32) in this portable form; target lowering passes repack them.

The target's activation dtype, KV dtype and shape regime shape the graph (and the contract it returns, which the
manifest records):
  * float16 activations (GPUs): the weights of the portable form, the hidden state and every op in float16 (norms
    accumulate in float32: RMSNormalization's stash_type); the logits are cast back to float32;
  * Dynamic: any batch and length, the "concat" cache (gptoss.Attention computes its band mask itself);
  * Static(chunk, context), for one graph of `tokens` (chunk or 1) per call: batch 1, fixed dimensions
    everywhere, the "static" cache (fixed-capacity buffers in, the new rows out) and gptoss.MaskedAttention with
    one explicit mask input per window (bundle.names.attention_bias);
  * a float16 KV cache computes attention in float16 (q, k, v, cos, sin and sinks are cast on the way in).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract, static_capacity
from gptoss.bundle.manifest import LOGITS_MODES, GraphContract
from gptoss.bundle.shapes import Dynamic, Shapes, Static
from gptoss.ir.graph import GPTOSS_DOMAIN, MAX_POSITIONS, ROTARY_CONCENTRATION, ROTARY_INV_FREQ, Graph, LazyTensor

from .config import ModelConfig
from .onnx_ops import attention_function, moe_function
from .ops import SWIGLU_ALPHA

Reader = Callable[[str], np.ndarray]   # canonical name -> array (see layout.py)

PART_OF = {
    "embedding": "embedding", "unembedding": "unembedding",
    "qkv": "attention", "out": "attention", "sinks": "attention",
    "router": "router", "experts": "experts",
}
ONNX_DTYPE = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
NP_DTYPE = {"float32": np.float32, "float16": np.float16}


def part_of(canonical: str) -> str:
    """Which part (experts, attention, router, embedding, unembedding, other) a canonical tensor belongs to."""
    key = canonical.split(".")[2] if canonical.startswith("layers.") else canonical
    return PART_OF.get(key, "other")


def _as(read: Reader, name: str, dtype, transpose: bool = False) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        a = np.asarray(read(name), dtype=dtype)
        return np.ascontiguousarray(a.T) if transpose else a
    return produce


def _raw(read: Reader, name: str) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(read(name))


class PortableGraphBuilder:
    """Emits the portable graph of a config; weights come from `read(canonical_name)`."""

    def __init__(self, cfg: ModelConfig, read: Reader, logits: str = "all", kv_dtype: str = "float32",
                 shapes: Shapes = Dynamic(), tokens: int | None = None, activations: str = "float32"):
        """`read` serves MXFP4 experts (the pipeline re-encodes those of dense checkpoints). `tokens`: the tokens
        per call of this graph when `shapes` is Static (its chunk, or 1 for the decode graph)."""
        if logits not in LOGITS_MODES:
            raise ValueError(f"logits must be one of {LOGITS_MODES}, got {logits!r}")
        if isinstance(shapes, Static) and (logits != "all" or tokens not in (shapes.chunk, 1)):
            raise ValueError(f"a static graph returns every position's logits and takes chunk ({shapes.chunk}) "
                             f"or 1 tokens; got logits={logits!r}, tokens={tokens!r}")
        self.cfg, self.read, self.logits, self.shapes = cfg, read, logits, shapes
        self.static = isinstance(shapes, Static)
        self.kv = KVContract.for_windows(
            "static" if self.static else "concat", cfg.windows, dtype=kv_dtype,
            num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            capacity=[static_capacity(w, shapes.context) for w in cfg.windows] if self.static else None)
        self.kv_type = ONNX_DTYPE[kv_dtype]
        self.act_type, self.act_np = ONNX_DTYPE[activations], NP_DTYPE[activations]
        self.batch, self.seq = (1, tokens) if self.static else ("batch", "seq")
        self.g = Graph(source=read, meta={MAX_POSITIONS: cfg.max_position_embeddings})

    # ------------------------------------------------------------------ weights
    def dense(self, canonical: str, in_dim: int, out_dim: int) -> str:
        """A Linear weight [out, in] as the MatMul B operand [in, out], in the activations' dtype."""
        return self.g.weight(LazyTensor(f"model.{canonical}", (in_dim, out_dim), self.act_np,
                                        _as(self.read, canonical, self.act_np, transpose=True), part_of(canonical)))

    def vector(self, canonical: str, size: int | tuple) -> str:
        shape = (size,) if isinstance(size, int) else size
        return self.g.weight(LazyTensor(f"model.{canonical}", shape, self.act_np,
                                        _as(self.read, canonical, self.act_np), part_of(canonical)))

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
        freqs = g.op("Mul", [pos, g.named_const(ROTARY_INV_FREQ, inv_freq.numpy())], "/model/rotary/freqs")
        conc = g.named_const(ROTARY_CONCENTRATION, concentration)
        cos = g.op("Mul", [g.op("Cos", [freqs], "/model/rotary/cos_raw"), conc], "/model/rotary/cos")
        sin = g.op("Mul", [g.op("Sin", [freqs], "/model/rotary/sin_raw"), conc], "/model/rotary/sin")
        if self.act_type != TensorProto.FLOAT:
            cos = g.op("Cast", [cos], "/model/rotary/cos_act", to=self.act_type)
            sin = g.op("Cast", [sin], "/model/rotary/sin_act", to=self.act_type)
        return cos, sin

    def cache_io(self, i: int) -> tuple[str, str]:
        """Layer i's past_key / past_value inputs and present_key / present_value outputs; returns the inputs."""
        kv, hd, g = self.cfg.num_key_value_heads, self.cfg.head_dim, self.g
        past_rows = self.kv.capacity[i] if self.static else f"past_{i}"
        present_rows = self.seq if self.static else f"present_{i}"
        past = [g.add_input(name, self.kv_type, [self.batch, kv, past_rows, hd])
                for name in (names.past_key(i), names.past_value(i))]
        for name in (names.present_key(i), names.present_value(i)):
            g.add_output(name, self.kv_type, [self.batch, kv, present_rows, hd])
        return past[0], past[1]

    def attention_bias(self, i: int) -> list[str]:
        """Static graphs: the mask input of layer i's window, [1, 1, T, capacity + T] (declared once)."""
        if not self.static:
            return []
        name = names.attention_bias(self.cfg.window(i))
        if name not in self.g.input_names():
            self.g.add_input(name, self.kv_type, [1, 1, self.seq, self.kv.capacity[i] + self.seq])
        return [name]

    def to_kv_dtype(self, values: list[str], name: str) -> list[str]:
        """Float inputs of an attention node cast to the cache's dtype (a float16 cache computes in float16)."""
        if self.kv_type == self.act_type:
            return values
        return [self.g.op("Cast", [v], f"{name}/cast_{k}", to=self.kv_type) for k, v in enumerate(values)]

    def attention(self, x: str, i: int, cos: str, sin: str) -> str:
        cfg, g, p = self.cfg, self.g, f"/model/layers.{i}/attn"
        past_k, past_v = self.cache_io(i)
        h = self.rms_norm(x, f"layers.{i}.attn_norm", f"{p}/norm")
        qkv = self.linear(h, f"layers.{i}.qkv", cfg.hidden_size, cfg.qkv_dim, f"{p}/qkv")
        q, k, v = g.node("Split", [qkv, g.const([cfg.q_dim, cfg.kv_dim, cfg.kv_dim])], f"{p}/split", 3, axis=-1)
        sinks = self.vector(f"layers.{i}.sinks", cfg.num_attention_heads)
        q, k, v, cos, sin, sinks = self.to_kv_dtype([q, k, v, cos, sin, sinks], f"{p}/attention")
        heads = dict(num_heads=cfg.num_attention_heads, kv_num_heads=cfg.num_key_value_heads)
        op, attrs = ("MaskedAttention", heads) if self.static else ("Attention", {**heads, "window": cfg.window(i)})
        out, _, _ = g.node(op, [q, k, v, past_k, past_v, cos, sin, sinks, *self.attention_bias(i)],
                           f"{p}/attention", [f"{p}/attention/out", names.present_key(i), names.present_value(i)],
                           domain=GPTOSS_DOMAIN, **attrs)
        if self.kv_type != self.act_type:
            out = g.op("Cast", [out], f"{p}/attention/out_act", to=self.act_type)
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
                 top_k=cfg.experts_per_token, swiglu_limit=float(cfg.swiglu_limit), swiglu_alpha=SWIGLU_ALPHA)
        y = g.op("Reshape", [y, g.op("Shape", [x], f"{p}/shape")], f"{p}/unflatten")
        return g.op("Add", [x, y], f"{p}/residual")

    def unembedding(self, x: str) -> None:
        cfg, g = self.cfg, self.g
        x = self.rms_norm(x, "final_norm", "/model/norm")
        if self.logits == "last":
            x = g.op("Slice", [x, g.const([-1]), g.const([1 << 62]), g.const([1])], "/model/last_position")
        elif self.logits == "selectable":
            start = g.add_input(names.LOGITS_FROM, TensorProto.INT64, [1])
            x = g.op("Slice", [x, start, g.const([1 << 62]), g.const([1])], "/model/logits_positions")
        logits = [names.LOGITS] if self.act_type == TensorProto.FLOAT else 1
        out = g.node("MatMul", [x, self.dense("unembedding", cfg.hidden_size, cfg.vocab_size)], "/model/unembedding",
                     logits)[0]
        if self.act_type != TensorProto.FLOAT:
            g.node("Cast", [out], "/model/logits_f32", [names.LOGITS], to=TensorProto.FLOAT)
        rows = {"all": self.seq, "last": 1, "selectable": "logits_seq"}[self.logits]
        g.outputs.insert(0, helper.make_tensor_value_info(names.LOGITS, TensorProto.FLOAT,
                                                          [self.batch, rows, cfg.vocab_size]))

    # ------------------------------------------------------------------ whole graph
    def build(self) -> tuple[Graph, GraphContract]:
        cfg, g = self.cfg, self.g
        g.use_function(moe_function(cfg.num_experts))
        g.use_function(attention_function(masked=self.static))
        ids = g.add_input(names.INPUT_IDS, TensorProto.INT64, [self.batch, self.seq])
        pos = g.add_input(names.POSITION_IDS, TensorProto.INT64, [self.batch, self.seq])
        cos, sin = self.rotary_tables(pos)
        emb = g.weight(LazyTensor("model.embedding", (cfg.vocab_size, cfg.hidden_size), self.act_np,
                                  _as(self.read, "embedding", self.act_np), "embedding"))
        x = g.op("Gather", [emb, ids], "/model/embedding", axis=0)
        for i in range(cfg.num_hidden_layers):
            x = self.moe(self.attention(x, i, cos, sin), i)
        self.unembedding(x)
        return g, GraphContract(self.logits, self.kv, self.shapes)


def build_portable_graph(cfg: ModelConfig, read: Reader, logits: str = "all", kv_dtype: str = "float32",
                         shapes: Shapes = Dynamic(), tokens: int | None = None,
                         activations: str = "float32") -> tuple[Graph, GraphContract]:
    """The portable graph of `cfg` and the contract it speaks (see the module docstring)."""
    return PortableGraphBuilder(cfg, read, logits, kv_dtype, shapes, tokens, activations).build()
