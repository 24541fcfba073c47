"""The harmony data model (messages, tools, system options, parsed replies); OpenAI-style dicts -> messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Union

ROLES = ("system", "developer", "user", "assistant", "tool")
CHANNELS = ("analysis", "commentary", "final")
REASONING_EFFORTS = ("low", "medium", "high")
STOP_TOKENS = ("<|return|>", "<|call|>")
DEFAULT_MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."

_CONSTRAIN = "<|constrain|>"


# ---------------------------------------------------------------------------------------------
# data model
# ---------------------------------------------------------------------------------------------


@dataclass
class Message:
    """One harmony message. For role "tool", `name` is the author (e.g. "functions.get_weather")."""

    role: str
    content: str
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A function tool; `parameters` is a JSON schema (None renders `() => any`)."""

    name: str
    description: str = ""
    parameters: dict | None = None


@dataclass(frozen=True)
class SystemOptions:
    reasoning_effort: str | None = "medium"
    knowledge_cutoff: str | None = "2024-06"
    current_date: str | None = None
    model_identity: str | None = DEFAULT_MODEL_IDENTITY

    def __post_init__(self):
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning_effort {self.reasoning_effort!r}: expected one of {REASONING_EFFORTS}")


@dataclass(frozen=True)
class ToolCall:
    name: str  # "get_weather" for recipient "functions.get_weather"; other namespaces keep the full recipient
    arguments: str
    arguments_json: dict | None = None  # None when the arguments are not a JSON object
    recipient: str | None = None
    channel: str | None = None


@dataclass
class ParsedResponse:
    analysis: str = ""
    final: str = ""
    commentary: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # to append to the conversation
    stop: str | None = None  # "<|call|>" after a tool call, "<|return|>" (also a <|call|> closing no tool call:
                             # StreamParser), or None when the stream just ended


MessageLike = Union[Message, Mapping[str, Any]]
ToolLike = Union[ToolSpec, Mapping[str, Any]]


# ---------------------------------------------------------------------------------------------
# OpenAI-style dicts -> harmony messages
# ---------------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
    raise TypeError(f"message content must be a string or a list of text parts, got {type(content).__name__}")


def _function_recipient(name: str) -> str:
    return name if "." in name else f"functions.{name}"


def to_tool_spec(tool: ToolLike) -> ToolSpec:
    """ToolSpec from a ToolSpec, {"type": "function", "function": {...}} or {"name", "description", "parameters"}."""
    if isinstance(tool, ToolSpec):
        return tool
    if not isinstance(tool, Mapping):
        raise TypeError(f"a tool must be a ToolSpec or a dict, got {type(tool).__name__}")
    spec = tool.get("function", tool)
    if "name" not in spec:
        raise ValueError(f"tool {dict(tool)!r} has no name")
    return ToolSpec(spec["name"], spec.get("description") or "", spec.get("parameters"))


def to_messages(items: Iterable[MessageLike]) -> tuple[list[str], list[Message]]:
    """Split a conversation into (developer instructions, harmony messages).

    System and developer entries become developer instructions (the harmony system message is
    built from SystemOptions). OpenAI-style assistant dicts may carry `reasoning_content` /
    `reasoning` / `thinking` (-> analysis), `tool_calls` (-> commentary calls), and `content`
    (-> final, or a commentary preamble when there are tool calls); `role: "tool"` results are
    matched to their call by `tool_call_id` or named by `name`.
    """
    instructions: list[str] = []
    out: list[Message] = []
    call_names: dict[str, str] = {}
    for item in items:
        if isinstance(item, Message):
            if item.role in ("system", "developer"):
                instructions.append(item.content)
            elif item.role not in ROLES:
                raise ValueError(f"message role {item.role!r}: expected one of {ROLES}")
            else:
                out.append(item)
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"a message must be a Message or a dict, got {type(item).__name__}")
        role = item.get("role")
        content = _text(item.get("content"))
        if role in ("system", "developer"):
            instructions.append(content)
        elif role == "user":
            out.append(Message("user", content, name=item.get("name")))
        elif role == "assistant":
            out.extend(_assistant_messages(item, content, call_names))
        elif role == "tool":
            name = item.get("name") or call_names.get(item.get("tool_call_id", ""))
            if not name:
                raise ValueError(f"tool message needs a `name` or a `tool_call_id` of an earlier call: {dict(item)!r}")
            out.append(Message("tool", content, channel="commentary", recipient="assistant", name=_function_recipient(name)))
        else:
            raise ValueError(f"message role {role!r}: expected one of {ROLES}")
    return instructions, out


def _assistant_messages(item: Mapping[str, Any], content: str, call_names: dict[str, str]) -> list[Message]:
    out = []
    reasoning = item.get("reasoning_content") or item.get("reasoning") or item.get("thinking")
    if reasoning:
        out.append(Message("assistant", _text(reasoning), channel="analysis"))
    calls = item.get("tool_calls") or []
    if item.get("channel"):
        out.append(Message("assistant", content, channel=item["channel"], recipient=item.get("recipient"),
                           content_type=item.get("content_type")))
    elif content or not calls:
        out.append(Message("assistant", content, channel="commentary" if calls else "final"))
    for call in calls:
        fn = call.get("function", call)
        args = fn.get("arguments", "")
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        if call.get("id"):
            call_names[call["id"]] = fn["name"]
        out.append(Message("assistant", args, channel="commentary", recipient=_function_recipient(fn["name"]),
                           content_type=f"{_CONSTRAIN}json"))
    return out
