"""POST /v1/responses: the subset of OpenAI's Responses API that gpt-oss's reference server
(`gpt_oss.responses_api`) implements, without its built-in browser and python tools.

Input: a string, or items: messages (user, assistant, system/developer as instructions; text content), reasoning
items, function_call and function_call_output items; `instructions`, function `tools`, `tool_choice`,
`reasoning.effort`, `max_output_tokens`, `temperature`, `top_p` (and the extensions seed, top_k, min_p,
repetition_penalty), `previous_response_id` (responses are kept in memory, the last STORE_SIZE of them, unless
`store` is false), `stream`. As in the reference, a reasoning item is rendered only when it belongs to the turn
in progress: after the last assistant message, with the input ending in a function_call_output.
Output and streaming events: responses_out.py.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Mapping

from ..harmony import Message
from .errors import APIError, malformed, unsupported
from .params import (Sampling, function_tools, reasoning_effort, reject_unsupported, sampling, tool_choice)
from .prompt import Prompt, budget, build_prompt
from .runs import Context, check_model, flag
from .turn import Item

STORE_SIZE = 256
_TEXT_PARTS = ("input_text", "output_text", "text")
UNSUPPORTED = {
    "background": (lambda v: not v, "background responses"),
    "top_logprobs": (lambda v: not v, "top_logprobs"),
    "text": (lambda v: v is None or (isinstance(v, Mapping) and v.get("format", {"type": "text"}) == {"type": "text"}),
             "a text format other than plain text"),
    "conversation": (lambda v: v is None, "conversations (use previous_response_id)"),
}


@dataclass(frozen=True)
class ResponsesPlan:
    body: Mapping
    model: str
    prompt: Prompt
    sampling: Sampling
    budget: int
    effort: str
    stream: bool
    store: bool
    messages: list = field(default_factory=list)    # the conversation, for a later previous_response_id
    instructions: str | None = None
    calls: dict = field(default_factory=dict)       # call_id -> function name, of every call in it


@dataclass(frozen=True)
class Stored:
    messages: list                  # harmony messages: the input and the reply
    instructions: str | None
    calls: dict                     # call_id -> function name


class ResponseStore:
    """The last `size` responses' conversations, by response id."""

    def __init__(self, size: int = STORE_SIZE):
        self._size, self._lock = size, threading.Lock()
        self._items: collections.OrderedDict[str, Stored] = collections.OrderedDict()

    def put(self, response_id: str, stored: Stored) -> None:
        with self._lock:
            self._items[response_id] = stored
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> Stored:
        with self._lock:
            if response_id not in self._items:
                raise APIError(400, f"previous_response_id {response_id!r} is unknown (not stored, or evicted)",
                               param="previous_response_id", code="previous_response_not_found")
            return self._items[response_id]


def plan(body: Mapping, ctx: Context, store: ResponseStore) -> ResponsesPlan:
    model = check_model(body, ctx)
    reject_unsupported(body, UNSUPPORTED)
    tools = function_tools(body.get("tools"), nested=False)
    choice = tool_choice(body.get("tool_choice"), tools, nested=False)
    reasoning = body.get("reasoning") or {}
    if not isinstance(reasoning, Mapping):
        raise malformed("reasoning must be an object", "reasoning")
    effort = reasoning_effort(reasoning.get("effort"), "reasoning.effort")
    chosen = sampling(body, ("max_output_tokens",))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise malformed("instructions must be a string", "instructions")
    earlier = Stored([], None, {})
    if body.get("previous_response_id") is not None:
        earlier = store.get(str(body["previous_response_id"]))
        instructions = earlier.instructions if instructions is None else instructions
    calls = dict(earlier.calls)
    extra, messages = input_messages(body.get("input"), calls)
    messages = _current_reasoning_only(earlier.messages + messages)
    joined = "\n\n".join(t for t in [instructions, *extra] if t) or None
    prompt = build_prompt(ctx.backend.tokenizer, messages, effort, tools, choice, instructions=joined)
    return ResponsesPlan(body, model, prompt, chosen, budget(prompt, chosen.max_tokens, ctx.backend.max_context),
                         effort, flag(body, "stream"), body.get("store") is not False, messages, instructions, calls)


# ------------------------------------------------------------------------------------------ input items
def input_messages(value, calls: dict[str, str]) -> tuple[list[str], list[Message]]:
    """`input` -> (instructions from system/developer messages, harmony messages). `calls` (call_id -> function
    name) starts with the earlier calls a function_call_output may answer, and gains this input's."""
    if isinstance(value, str):
        return [], [Message("user", value)]
    if not isinstance(value, list) or not value:
        raise malformed("input must be a string or a non-empty list of items", "input")
    instructions: list[str] = []
    out: list[Message] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise malformed(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if not isinstance(kind, str) or kind not in _ITEMS:
            raise unsupported(f"{where}.type", f"an input item of type {kind!r}")
        _ITEMS[kind](item, where, out, instructions, calls)
    return instructions, out


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise malformed(f"{where} must be a string or a list of text parts", where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _TEXT_PARTS and kind != "reasoning_text" and kind != "summary_text":
            if isinstance(kind, str):
                raise unsupported(f"{where}[{j}]", f"a content part of type {kind!r} (text only)")
            raise malformed(f"{where}[{j}] must be an object with a type", f"{where}[{j}]")
        if not isinstance(part.get("text"), str):
            raise malformed(f"{where}[{j}].text must be a string", f"{where}[{j}].text")
        texts.append(part["text"])
    return "".join(texts)


def _message(item, where, out, instructions, calls) -> None:
    role = item.get("role")
    text = _text(item.get("content"), f"{where}.content")
    if role in ("system", "developer"):
        instructions.append(text)
    elif role == "user":
        out.append(Message("user", text))
    elif role == "assistant":
        out.append(Message("assistant", text, channel="final"))
    else:
        raise malformed(f"{where}.role must be user, assistant, system or developer, got {role!r}", f"{where}.role")


def _reasoning(item, where, out, instructions, calls) -> None:
    content = item.get("content") or item.get("summary") or []
    out.append(Message("assistant", _text(content, f"{where}.content"), channel="analysis"))


def _function_call(item, where, out, instructions, calls) -> None:
    name, arguments, call_id = item.get("name"), item.get("arguments"), item.get("call_id")
    if not all(isinstance(v, str) for v in (name, arguments, call_id)):
        raise malformed(f"{where} needs the strings name, arguments and call_id", where)
    calls[call_id] = name
    out.append(Message("assistant", arguments, channel="commentary", recipient=f"functions.{name}",
                       content_type="<|constrain|>json"))


def _function_call_output(item, where, out, instructions, calls) -> None:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or call_id not in calls:
        raise malformed(f"{where}.call_id {call_id!r} matches no function_call item before it", f"{where}.call_id")
    if not isinstance(output, str):
        raise malformed(f"{where}.output must be a string", f"{where}.output")
    out.append(Message("tool", output, channel="commentary", recipient="assistant", name=f"functions.{calls[call_id]}"))


_ITEMS = {"message": _message, "reasoning": _reasoning, "function_call": _function_call,
          "function_call_output": _function_call_output}


def _current_reasoning_only(messages: list[Message]) -> list[Message]:
    """Keep analysis only after the last final answer, and only while a tool's output is being answered."""
    last_final = max((i for i, m in enumerate(messages) if m.role == "assistant" and m.channel == "final"), default=-1)
    answering_tool = bool(messages) and messages[-1].role == "tool"
    return [m for i, m in enumerate(messages)
            if not (m.channel == "analysis" and m.role == "assistant" and (i < last_final or not answering_tool))]


def output_messages(items: list[Item]) -> list[Message]:
    """A reply's items as harmony messages, for the conversation a later previous_response_id continues."""
    by_kind = {
        "reasoning": lambda i: Message("assistant", i.text, channel="analysis"),
        "text": lambda i: Message("assistant", i.text, channel="final"),
        "call": lambda i: Message("assistant", i.text, channel="commentary", recipient=f"functions.{i.name}",
                                  content_type="<|constrain|>json"),
    }
    return [by_kind[i.kind](i) for i in items]
