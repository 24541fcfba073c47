"""The gpt-oss model configuration, its presets, and the two published config.json dialects.

One dataclass, `ModelConfig`, is the vocabulary of the whole project. It reads and writes:
  * the Hugging Face `config.json` (`num_local_experts`, `layer_types`, `rope_scaling`, ...);
  * OpenAI's `original/config.json` (`num_experts`, `rope_scaling_factor`, ...).
This module imports no torch, so the runtime-free tools (synth, inspect) can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

SLIDING = "sliding_attention"
FULL = "full_attention"

# The range of each integer field. The upper ends lie far past any published gpt-oss (20b and 120b: 24 and 36
# layers, 32 and 128 experts, 2880 wide, 201088 tokens, 131072 positions) and stop an absurd config
# (num_hidden_layers=1e9) before anything is built for it: layer_types alone would be a billion entries.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 1024),
    "num_experts": (1, 4096),
    "experts_per_token": (1, 4096),
    "vocab_size": (1, 1 << 21),
    "hidden_size": (1, 1 << 16),
    "intermediate_size": (1, 1 << 16),
    "head_dim": (1, 1024),
    "num_attention_heads": (1, 1024),
    "num_key_value_heads": (1, 1024),
    "sliding_window": (0, 1 << 22),
    "initial_context_length": (1, 1 << 22),
    "max_position_embeddings": (2, 1 << 22),     # 1 position can hold the prompt's token but never a next one
    "eos_token_id": (0, (1 << 31) - 1),
    "pad_token_id": (0, (1 << 31) - 1),
}
# Float fields: each must be a finite number above zero (a NaN rope_theta, or rms_norm_eps <= 0, makes every
# logit NaN or infinite).
POSITIVE_FLOATS = ("swiglu_limit", "rope_theta", "rope_scaling_factor", "rope_ntk_alpha", "rope_ntk_beta",
                   "rms_norm_eps")


@dataclass(frozen=True)
class ModelConfig:
    num_hidden_layers: int = 24
    num_experts: int = 32
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    swiglu_limit: float = 7.0
    head_dim: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    sliding_window: int = 128
    initial_context_length: int = 4096
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0
    rms_norm_eps: float = 1e-5
    # "sliding_attention" on even layers, "full_attention" on odd ones, as published.
    layer_types: tuple[str, ...] = ()
    max_position_embeddings: int = 131072
    eos_token_id: int = 200002
    pad_token_id: int = 199999

    def __post_init__(self) -> None:
        _raise_if(_scalar_problems(self))    # first: layer_types below is as long as num_hidden_layers says
        if not self.layer_types:
            object.__setattr__(self, "layer_types", default_layer_types(self.num_hidden_layers))
        if isinstance(self.layer_types, str) or not isinstance(self.layer_types, (list, tuple)):
            _raise_if([f"layer_types must be a list of strings, got {self.layer_types!r}"])
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        problems = _scalar_problems(self)
        _raise_if(problems)                  # the checks below compare fields, which must be numbers first
        if self.experts_per_token > self.num_experts:
            problems.append(f"experts_per_token ({self.experts_per_token}) > num_experts ({self.num_experts})")
        if self.num_key_value_heads and self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                            f"num_key_value_heads ({self.num_key_value_heads})")
        for name in ("hidden_size", "intermediate_size"):
            if int(getattr(self, name)) % 32:
                problems.append(f"{name} ({getattr(self, name)}) must be a multiple of 32 (the MXFP4 block)")
        if self.head_dim % 2:
            problems.append(f"head_dim ({self.head_dim}) must be even (half-split RoPE)")
        if len(self.layer_types) != self.num_hidden_layers:
            problems.append(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        bad = sorted(set(self.layer_types) - {SLIDING, FULL})
        if bad:
            problems.append(f"unknown layer_types {bad}; known: {[SLIDING, FULL]}")
        if self.sliding_window <= 0 and SLIDING in self.layer_types:
            problems.append(f"sliding_window must be positive, got {self.sliding_window}")
        _raise_if(problems)

    # ----------------------------------------------------------- derived facts
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    def window(self, layer: int) -> int:
        """Tokens a query of `layer` sees, itself included; 0 means the whole context."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else 0

    @property
    def windows(self) -> list[int]:
        return [self.window(i) for i in range(self.num_hidden_layers)]

    def replace(self, **changes) -> "ModelConfig":
        if "num_hidden_layers" in changes and "layer_types" not in changes:
            changes["layer_types"] = default_layer_types(changes["num_hidden_layers"])
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ dialects
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_hf(self) -> dict:
        """The Hugging Face `config.json` of a gpt-oss checkpoint (MXFP4 experts)."""
        return {
            "architectures": ["GptOssForCausalLM"],
            "attention_bias": True,
            "attention_dropout": 0.0,
            "eos_token_id": self.eos_token_id,
            "experts_per_token": self.experts_per_token,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initial_context_length": self.initial_context_length,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_types": list(self.layer_types),
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "gpt_oss",
            "num_attention_heads": self.num_attention_heads,
            "num_experts_per_tok": self.experts_per_token,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "num_local_experts": self.num_experts,
            "output_router_logits": False,
            "pad_token_id": self.pad_token_id,
            "quantization_config": {
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"],
                "quant_method": "mxfp4",
            },
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": {
                "beta_fast": float(self.rope_ntk_beta),
                "beta_slow": float(self.rope_ntk_alpha),
                "factor": float(self.rope_scaling_factor),
                "original_max_position_embeddings": self.initial_context_length,
                "rope_type": "yarn",
                "truncate": False,
            },
            "rope_theta": self.rope_theta,
            "router_aux_loss_coef": 0.9,
            "sliding_window": self.sliding_window,
            "swiglu_limit": self.swiglu_limit,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.55.0",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }

    def to_original(self) -> dict:
        """OpenAI's `original/config.json`: exactly the fields its reference `ModelConfig` takes."""
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "num_experts": self.num_experts,
            "experts_per_token": self.experts_per_token,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "initial_context_length": self.initial_context_length,
            "rope_theta": self.rope_theta,
            "rope_scaling_factor": self.rope_scaling_factor,
            "rope_ntk_alpha": self.rope_ntk_alpha,
            "rope_ntk_beta": self.rope_ntk_beta,
        }

    @classmethod
    def from_hf(cls, d: dict, source: str = "config.json") -> "ModelConfig":
        """Integer fields are taken as written (an integral float such as 1e9 as its integer), so that `validate`
        names a bad one; layer_types defaults in __post_init__, after the sizes were checked."""
        rope = d.get("rope_scaling") or d.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise CheckpointError(f"{source}: rope_scaling is not a JSON object: {rope!r}")
        try:
            factor = float(rope.get("factor", 1.0)) if rope.get("rope_type", rope.get("type")) == "yarn" else 1.0
            return cls(
                num_hidden_layers=_integer(d["num_hidden_layers"]),
                num_experts=_integer(d["num_local_experts"]),
                experts_per_token=_integer(d.get("num_experts_per_tok", d.get("experts_per_token"))),
                vocab_size=_integer(d["vocab_size"]),
                hidden_size=_integer(d["hidden_size"]),
                intermediate_size=_integer(d["intermediate_size"]),
                swiglu_limit=float(d.get("swiglu_limit", 7.0)),
                head_dim=_integer(d["head_dim"] if "head_dim" in d else d["hidden_size"] // d["num_attention_heads"]),
                num_attention_heads=_integer(d["num_attention_heads"]),
                num_key_value_heads=_integer(d["num_key_value_heads"]),
                sliding_window=_integer(d.get("sliding_window") or 0),
                initial_context_length=_integer(rope.get("original_max_position_embeddings",
                                                         d.get("initial_context_length", 4096))),
                rope_theta=float(d.get("rope_theta", rope.get("rope_theta", 150000.0))),
                rope_scaling_factor=factor,
                rope_ntk_alpha=float(rope.get("beta_slow", 1.0)),
                rope_ntk_beta=float(rope.get("beta_fast", 32.0)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
                layer_types=d.get("layer_types") or (),
                max_position_embeddings=_integer(d.get("max_position_embeddings", 131072)),
                eos_token_id=_first_id(d.get("eos_token_id", 200002)),
                pad_token_id=_integer(d.get("pad_token_id") if d.get("pad_token_id") is not None else 199999),
            )
        except KeyError as e:
            raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError, ArithmeticError, IndexError) as e:
            raise CheckpointError(f"{source}: malformed field: {e}") from None
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None

    @classmethod
    def from_original(cls, d: dict, source: str = "original/config.json") -> "ModelConfig":
        known = set(cls().to_original())
        try:
            kwargs = {k: d[k] for k in known}
        except KeyError as e:
            raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from None
        try:
            return cls(**{k: _integer(v) if k in INT_BOUNDS else v for k, v in kwargs.items()})
        except (TypeError, ValueError, ArithmeticError) as e:
            raise CheckpointError(f"{source}: malformed field: {e}") from None
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None


def _integer(value):
    """A JSON integer as is; a float with an integral value (1e9, 2880.0) as its int; anything else as is, for
    `_scalar_problems` to name."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _first_id(value):
    return _integer(value[0] if isinstance(value, (list, tuple)) and value else value)


def _scalar_problems(cfg: "ModelConfig") -> list[str]:
    """Every integer field an integer within INT_BOUNDS; every float field finite and positive."""
    problems = []
    for name, (low, high) in INT_BOUNDS.items():
        value = getattr(cfg, name)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            problems.append(f"{name} must be an integer, got {value!r}")
        elif not low <= value <= high:
            problems.append(f"{name} must be in [{low}, {high}], got {value}")
    for name in POSITIVE_FLOATS:
        value = getattr(cfg, name)
        if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
                or value <= 0):
            problems.append(f"{name} must be a finite number > 0, got {value!r}")
    return problems


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise CheckpointError("invalid model config: " + "; ".join(problems))


def default_layer_types(num_layers: int) -> tuple[str, ...]:
    """Sliding window on even layers, full attention on odd layers (as in OpenAI's reference)."""
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(num_layers))


# `gptoss-export synth` dimension flag -> ModelConfig field (here, not in synth.py, so the command line knows its
# options without the exporter's extra installed).
DIMENSIONS: dict[str, str] = {
    "layers": "num_hidden_layers",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "experts": "num_experts",
    "top_k": "experts_per_token",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "window": "sliding_window",
    "vocab": "vocab_size",
}

PRESETS: dict[str, ModelConfig] = {
    "20b": ModelConfig(),
    "120b": ModelConfig(num_hidden_layers=36, num_experts=128),
    # Tiny but faithful: the real vocabulary (so the real tokenizer works end to end), head_dim 64
    # (OpenAI's YaRN asserts on it), GQA 4:2, 8 experts top-4, window 8 so that a 40-token sequence
    # runs 5x past the window. About 26M parameters, nearly all of them embedding and unembedding.
    "tiny": ModelConfig(num_hidden_layers=4, num_experts=8, experts_per_token=4, hidden_size=64,
                        intermediate_size=64, head_dim=64, num_attention_heads=4, num_key_value_heads=2,
                        sliding_window=8, max_position_embeddings=4096),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise CheckpointError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except ValueError as e:         # JSONDecodeError, UnicodeDecodeError, an integer past 4300 digits
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:            # a folder, no permission, a name too long
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
