"""POST /v1/chat/completions: OpenAI's Chat Completions shapes over a harmony turn.

Request: messages (system, developer, user, assistant with `tool_calls` and optional `reasoning_content`, tool
with `tool_call_id`), tools, tool_choice, reasoning_effort, max_tokens / max_completion_tokens, temperature,
top_p, seed, stop, stream, stream_options.include_usage (and the extensions top_k, min_p, repetition_penalty).
Reply: `message.content` (final text), `message.reasoning_content` (the analysis channel), `message.tool_calls`
(JSON arguments as the model wrote them), finish_reason stop | length | tool_calls, usage with
prompt_tokens_details.cached_tokens and completion_tokens_details.reasoning_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from ..harmony import ROLES
from .errors import malformed, unsupported
from .params import (Sampling, function_tools, reasoning_effort, reject_unsupported, sampling, tool_choice)
from .prompt import Prompt, budget, build_prompt
from .runs import Context, Run, check_model, failure, flag, new_id, now
from .turn import ItemDelta, ItemStart, TurnEnd, Usage

_TEXT_PARTS = ("text", "input_text", "output_text")


@dataclass(frozen=True)
class ChatPlan:
    model: str
    prompt: Prompt
    sampling: Sampling
    budget: int
    stream: bool
    include_usage: bool


def plan(body: Mapping, ctx: Context) -> ChatPlan:
    """Check a request and render its prompt (every refusal is an APIError)."""
    model = check_model(body, ctx)
    reject_unsupported(body)
    messages = check_messages(body.get("messages"))
    tools = function_tools(body.get("tools"), nested=True)
    choice = tool_choice(body.get("tool_choice"), tools, nested=True)
    effort = reasoning_effort(body.get("reasoning_effort"), "reasoning_effort")
    chosen = sampling(body, ("max_completion_tokens", "max_tokens"))
    stream = flag(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise malformed("stream_options must be an object", "stream_options")
    prompt = build_prompt(ctx.backend.tokenizer, messages, effort, tools, choice)
    return ChatPlan(model, prompt, chosen, budget(prompt, chosen.max_tokens, ctx.backend.max_context), stream,
                    stream and bool(options.get("include_usage")))


# ------------------------------------------------------------------------------------------ checks
def check_messages(messages) -> list:
    if not isinstance(messages, list) or not messages:
        raise malformed("messages must be a non-empty list of messages", "messages")
    call_ids: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise malformed(f"{where} must be an object, got {type(m).__name__}", where)
        role = m.get("role")
        if role not in ROLES:
            raise malformed(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
        _check_content(m.get("content"), role, f"{where}.content", optional=role == "assistant")
        if role == "assistant":
            call_ids |= _check_calls(m.get("tool_calls"), f"{where}.tool_calls")
        elif role == "tool" and not _answers(m.get("tool_call_id"), call_ids) and not isinstance(m.get("name"), str):
            raise malformed(f"{where}.tool_call_id must name a call of an earlier assistant message, got "
                            f"{m.get('tool_call_id')!r}", f"{where}.tool_call_id")
    return messages


def _answers(call_id, call_ids: set[str]) -> bool:
    return isinstance(call_id, str) and call_id in call_ids      # a list or an object is no id (nor hashable)


def _check_content(content, role: str, where: str, optional: bool) -> None:
    if content is None and optional or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise malformed(f"{where} must be a string or a list of text parts, got {type(content).__name__}", where)
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _TEXT_PARTS:
            if isinstance(kind, str):
                raise unsupported(f"{where}[{j}]", f"a content part of type {kind!r} (text only)")
            raise malformed(f"{where}[{j}] must be an object with a type", f"{where}[{j}]")
        if not isinstance(part.get("text"), str):
            raise malformed(f"{where}[{j}].text must be a string", f"{where}[{j}].text")


def _check_calls(calls, where: str) -> set[str]:
    if calls is None:
        return set()
    if not isinstance(calls, list):
        raise malformed(f"{where} must be a list", where)
    ids = set()
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise malformed(f"{where}[{j}] must be {{'type': 'function', 'function': {{'name', 'arguments'}}}}",
                            f"{where}[{j}]")
        if not isinstance(fn.get("arguments", ""), (str, Mapping)):
            raise malformed(f"{where}[{j}].function.arguments must be a JSON string", f"{where}[{j}].function")
        if isinstance(call.get("id"), str):
            ids.add(call["id"])
    return ids


# ------------------------------------------------------------------------------------------ replies
def usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def _tool_call(item) -> dict:
    return {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.text}}


def completion(p: ChatPlan, run: Run, end: TurnEnd) -> dict:
    """The non-streaming reply (raises the APIError of a turn that failed)."""
    error = failure(end)
    if error is not None:
        raise error
    items = run.turn.items
    text = "".join(i.text for i in items if i.kind == "text")
    reasoning = "".join(i.text for i in items if i.kind == "reasoning")
    calls = [_tool_call(i) for i in items if i.kind == "call"]
    message = {"role": "assistant", "content": text if text or not calls else None,
               "reasoning_content": reasoning or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": now(), "model": p.model,
            "choices": [{"index": 0, "message": message, "finish_reason": end.finish_reason, "logprobs": None}],
            "usage": usage_json(end.usage)}


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def chunks(p: ChatPlan, run: Run):
    """Server-sent events: `data: {chunk}` ..., then `data: [DONE]`."""
    base = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": now(), "model": p.model}

    def chunk(delta: dict, finish: str | None = None) -> str:
        return _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    yield chunk({"role": "assistant", "content": ""})
    calls: dict[int, int] = {}                      # item index -> tool_calls index
    async for e in run.events():
        if isinstance(e, ItemStart) and e.item.kind == "call":
            calls[e.item.index] = len(calls)
            yield chunk({"tool_calls": [{"index": calls[e.item.index], "id": e.item.call_id, "type": "function",
                                         "function": {"name": e.item.name, "arguments": ""}}]})
        elif isinstance(e, ItemDelta):
            if e.item.kind == "call":
                yield chunk({"tool_calls": [{"index": calls[e.item.index], "function": {"arguments": e.text}}]})
            else:
                yield chunk({"content" if e.item.kind == "text" else "reasoning_content": e.text})
        elif isinstance(e, TurnEnd):
            error = failure(e)
            if error is not None:
                yield _data(error.body())
                break
            yield chunk({}, e.finish_reason)
            if p.include_usage:
                yield _data({**base, "choices": [], "usage": usage_json(e.usage)})
    yield "data: [DONE]\n\n"
