"""The Responses API's output: the response object, and its streaming events.

    response.created, response.in_progress
    per output item (reasoning | message | function_call):
        response.output_item.added, response.content_part.added (not for calls)
        response.reasoning_text.delta | response.output_text.delta | response.function_call_arguments.delta ...
        response.reasoning_text.done | response.output_text.done | response.function_call_arguments.done,
        response.content_part.done (not for calls), response.output_item.done
    response.completed | response.incomplete (max_output_tokens) | response.failed

Every event carries a sequence_number; SSE frames are `event: TYPE` + `data: JSON`.
"""

from __future__ import annotations

import json

from .responses import ResponsesPlan, ResponseStore, Stored, output_messages
from .runs import Run, failure, new_id, now
from .turn import Item, ItemDelta, ItemEnd, ItemStart, TurnEnd

_PART = {"reasoning": "reasoning_text", "text": "output_text"}
_DELTA = {"reasoning": "response.reasoning_text.delta", "text": "response.output_text.delta",
          "call": "response.function_call_arguments.delta"}


def _part(item: Item, text: str) -> dict:
    part = {"type": _PART[item.kind], "text": text}
    return {**part, "annotations": [], "logprobs": []} if item.kind == "text" else part


def output_item(item: Item, done: bool) -> dict:
    status = "completed" if done else "in_progress"
    if item.kind == "call":
        return {"id": item.id, "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": item.text if done else "", "status": status}
    content = [_part(item, item.text)] if done else []
    if item.kind == "reasoning":
        return {"id": item.id, "type": "reasoning", "summary": [], "content": content, "status": status}
    return {"id": item.id, "type": "message", "role": "assistant", "status": status, "content": content}


def usage_json(end: TurnEnd) -> dict:
    u = end.usage
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


class ResponseShape:
    """The response object of one request, as it stands (in progress, then final)."""

    def __init__(self, p: ResponsesPlan):
        self.plan, self.id, self.created = p, new_id("resp_"), now()

    def body(self, items: list[Item], end: TurnEnd | None) -> dict:
        p, b = self.plan, self.plan.body
        status, incomplete, error = "in_progress", None, None
        if end is not None:
            status = {"length": "incomplete", "shutdown": "failed", "error": "failed"}.get(end.finish_reason,
                                                                                         "completed")
            incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
            fail = failure(end)
            error = {"code": fail.code, "message": fail.message} if fail is not None else None
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "model": p.model, "output": [output_item(i, True) for i in items] if end is not None else [],
                "usage": usage_json(end) if end is not None else None, "error": error,
                "incomplete_details": incomplete, "instructions": p.instructions,
                "max_output_tokens": b.get("max_output_tokens"), "metadata": b.get("metadata") or {},
                "parallel_tool_calls": False, "previous_response_id": b.get("previous_response_id"),
                "reasoning": {"effort": p.effort, "summary": None}, "store": p.store,
                "temperature": p.sampling.params.temperature, "top_p": p.sampling.params.top_p,
                "text": {"format": {"type": "text"}}, "tool_choice": b.get("tool_choice") or "auto",
                "tools": b.get("tools") or [], "truncation": "disabled"}


def remember(store: ResponseStore, shape: ResponseShape, run: Run) -> None:
    """Keep the conversation for a later previous_response_id (unless `store` is false)."""
    p = shape.plan
    if not p.store:
        return
    calls = {**p.calls, **{i.call_id: i.name for i in run.turn.items if i.kind == "call"}}
    store.put(shape.id, Stored(p.messages + output_messages(run.turn.items), p.instructions, calls))


def response(p: ResponsesPlan, run: Run, end: TurnEnd, store: ResponseStore) -> dict:
    """The non-streaming reply (raises the APIError of a turn that failed)."""
    error = failure(end)
    if error is not None:
        raise error
    shape = ResponseShape(p)
    remember(store, shape, run)
    return shape.body(run.turn.items, end)


def _item_events(e) -> list[tuple[str, dict]]:
    item = e.item
    where = {"item_id": item.id, "output_index": item.index}
    content = {**where, "content_index": 0}
    if isinstance(e, ItemStart):
        out = [("response.output_item.added", {"output_index": item.index, "item": output_item(item, False)})]
        if item.kind != "call":
            out.append(("response.content_part.added", {**content, "part": _part(item, "")}))
        return out
    if isinstance(e, ItemDelta):
        extra = {"logprobs": []} if item.kind == "text" else {}
        return [(_DELTA[item.kind], {**(where if item.kind == "call" else content), "delta": e.text, **extra})]
    if item.kind == "call":
        out = [("response.function_call_arguments.done", {**where, "arguments": item.text})]
    else:
        done = "response.reasoning_text.done" if item.kind == "reasoning" else "response.output_text.done"
        out = [(done, {**content, "text": item.text, **({"logprobs": []} if item.kind == "text" else {})}),
               ("response.content_part.done", {**content, "part": _part(item, item.text)})]
    return out + [("response.output_item.done", {"output_index": item.index, "item": output_item(item, True)})]


async def events(p: ResponsesPlan, run: Run, store: ResponseStore):
    """Server-sent events of a streamed response."""
    shape = ResponseShape(p)
    seq = 0

    def frame(kind: str, data: dict) -> str:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq - 1, **data})}\n\n"

    yield frame("response.created", {"response": shape.body([], None)})
    yield frame("response.in_progress", {"response": shape.body([], None)})
    async for e in run.events():
        if isinstance(e, (ItemStart, ItemDelta, ItemEnd)):
            for kind, data in _item_events(e):
                yield frame(kind, data)
        elif isinstance(e, TurnEnd):
            body = shape.body(run.turn.items, e)
            if body["status"] != "failed":
                remember(store, shape, run)
            yield frame(f"response.{body['status']}", {"response": body})
