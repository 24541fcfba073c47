"""Request fields both APIs share, checked into typed values: sampling, budget, seed, stop strings, reasoning effort,
function tools and tool_choice. Wrong shapes raise 400, values out of range 422 (errors.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..harmony import REASONING_EFFORTS, ToolSpec
from ..sampling import SamplingParams
from .errors import invalid_value, malformed, unsupported

DEFAULT_REASONING_EFFORT = "low"        # as gpt-oss's reference server and `gptoss run`
MAX_STOP_STRINGS = 4
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# field -> (default, valid?, what a valid value is, integer?); top_k, min_p and repetition_penalty are extensions
# (vLLM's names), sent with the openai client as `extra_body`.
SAMPLING_FIELDS: dict[str, tuple[Any, Callable[[float], bool], str, bool]] = {
    "temperature": (1.0, lambda v: 0 <= v <= 2, "in [0, 2]", False),
    "top_p": (1.0, lambda v: 0 < v <= 1, "in (0, 1]", False),
    "top_k": (0, lambda v: v >= 0, ">= 0 (0 = off)", True),
    "min_p": (0.0, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "repetition_penalty": (1.0, lambda v: v > 0, "> 0", False),
}

# OpenAI parameters this server does not implement: accepted only at their default. field -> (is default?, what)
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v in (None, 1), "more than one choice (n > 1)"),
    "logprobs": (lambda v: not v, "logprobs"),
    "top_logprobs": (lambda v: not v, "top_logprobs"),
    "logit_bias": (lambda v: not v, "logit_bias"),
    "frequency_penalty": (lambda v: not v, "a frequency penalty (use repetition_penalty)"),
    "presence_penalty": (lambda v: not v, "a presence penalty (use repetition_penalty)"),
    "response_format": (lambda v: v in (None, {"type": "text"}), "a response format other than text"),
}


@dataclass(frozen=True)
class Sampling:
    params: SamplingParams
    seed: int | None
    max_tokens: int | None      # None: until the context is full
    stop: tuple[str, ...] = ()


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(body: Mapping, key: str, default, valid: Callable, what: str, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    if not is_number(value) or (integer and not isinstance(value, int)):
        raise malformed(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}", key)
    if not valid(value):
        raise invalid_value(f"{key} must be {what}, got {value!r}", key)
    return value


def reject_unsupported(body: Mapping, fields=UNSUPPORTED) -> None:
    for key, (is_default, what) in fields.items():
        if key in body and not is_default(body[key]):
            raise unsupported(key, what)


def sampling(body: Mapping, max_token_keys: tuple[str, ...]) -> Sampling:
    """The sampling fields of a request; the first of `max_token_keys` that is set is the budget."""
    values = {key: number(body, key, default, valid, what, integer)
              for key, (default, valid, what, integer) in SAMPLING_FIELDS.items()}
    budget_key = next((k for k in max_token_keys if body.get(k) is not None), max_token_keys[0])
    max_tokens = number(body, budget_key, None, lambda v: v >= 1, ">= 1", integer=True)
    seed = number(body, "seed", None, lambda v: True, "an integer", integer=True)
    if seed is not None:
        seed &= (1 << 64) - 1                   # numpy takes non-negative seeds; any int maps to one
    params = SamplingParams(float(values["temperature"]), int(values["top_k"]), float(values["top_p"]),
                            float(values["min_p"]), float(values["repetition_penalty"]))
    return Sampling(params, seed, max_tokens, stop_strings(body.get("stop")))


def stop_strings(value) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise malformed(f"stop must be a string or a list of strings, got {value!r}", "stop")
    if len(items) > MAX_STOP_STRINGS or any(not s for s in items):
        raise invalid_value(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings, got {value!r}", "stop")
    return tuple(items)


def reasoning_effort(value, param: str) -> str:
    if value is None:
        return DEFAULT_REASONING_EFFORT
    if value not in REASONING_EFFORTS:
        raise invalid_value(f"{param} must be one of {', '.join(REASONING_EFFORTS)}, got {value!r}", param)
    return value


# ------------------------------------------------------------------------------------------ tools
def function_tools(tools, nested: bool) -> list[ToolSpec]:
    """`tools` of a request -> ToolSpecs. Chat nests each function (`{"type": "function", "function": {...}}`),
    the Responses API does not (`{"type": "function", "name": ...}`)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise malformed(f"tools must be a list, got {type(tools).__name__}", "tools")
    specs = [_tool(tool, f"tools[{i}]", nested) for i, tool in enumerate(tools)]
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise invalid_value(f"tools: the function name {duplicate!r} is given twice", "tools")
    return specs


def _tool(tool, param: str, nested: bool) -> ToolSpec:
    if not isinstance(tool, Mapping):
        raise malformed(f"{param} must be an object", param)
    if tool.get("type") != "function":
        raise unsupported(f"{param}.type", f"a tool of type {tool.get('type')!r} (only 'function')")
    fn = tool.get("function") if nested else tool
    where = f"{param}.function" if nested else param
    if not isinstance(fn, Mapping):
        raise malformed(f"{where} must be an object", where)
    name, description, schema = fn.get("name"), fn.get("description"), fn.get("parameters")
    if not isinstance(name, str):
        raise malformed(f"{where}.name must be a string", f"{where}.name")
    if not _TOOL_NAME.match(name):
        raise invalid_value(f"{where}.name must match {_TOOL_NAME.pattern}, got {name!r}", f"{where}.name")
    if description is not None and not isinstance(description, str):
        raise malformed(f"{where}.description must be a string", f"{where}.description")
    if schema is not None and (not isinstance(schema, Mapping) or schema.get("type", "object") != "object"):
        got = schema.get("type") if isinstance(schema, Mapping) else type(schema).__name__
        raise invalid_value(f"{where}.parameters must be a JSON schema of type 'object', got {got!r}",
                            f"{where}.parameters")
    return ToolSpec(name, description or "", dict(schema) if schema is not None else None)


@dataclass(frozen=True)
class ToolChoice:
    mode: str                   # "auto" | "none" | "required" | "function"
    name: str | None = None     # the function, for mode "function"


def tool_choice(value, tools: list[ToolSpec], nested: bool) -> ToolChoice:
    if value is None:
        return ToolChoice("auto")
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise invalid_value(f"tool_choice must be 'auto', 'none', 'required' or a function, got {value!r}",
                                "tool_choice")
        choice = ToolChoice(value)
    elif isinstance(value, Mapping) and value.get("type") == "function":
        fn = value.get("function") if nested else value
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise malformed("tool_choice names a function without a name", "tool_choice")
        choice = ToolChoice("function", name)
    else:
        raise malformed(f"tool_choice must be a string or {{'type': 'function', ...}}, got {value!r}", "tool_choice")
    if choice.mode in ("required", "function") and not tools:
        raise invalid_value(f"tool_choice {value!r} needs tools", "tool_choice")
    if choice.name is not None and choice.name not in {t.name for t in tools}:
        raise invalid_value(f"tool_choice names {choice.name!r}, which is not among the tools", "tool_choice")
    return choice
