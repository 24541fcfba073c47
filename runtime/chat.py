"""Harmony chat on top of `Model.generate`: render, generate until <|return|>/<|call|>, parse.

`Conversation` keeps the messages and one KV cache across turns. Each turn re-renders the whole
conversation (harmony drops earlier analysis once a final answer follows), and the cache re-uses the
longest prefix it already holds, so a turn costs only the new tokens (see kv/base.py).

The `model` these functions take is a `Model` (model.py imports this module, never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from . import harmony
from .chat_input import check_messages, check_tools
from .kv import KVCache
from .harmony import Message, SystemOptions, TextDelta, ToolCall

FINISH_REASONS = ("stop", "tool_call", "length", "cancelled")


@dataclass(frozen=True)
class ChatEvent:
    """A piece of streamed text on one channel ('analysis', 'commentary', 'final'; None: untagged)."""

    channel: str | None
    text: str
    recipient: str | None = None

    @property
    def is_final(self) -> bool:
        """Part of the answer: the final channel, or text the model wrote without a harmony header (which
        ChatResult.final counts as final too; a synthetic random model writes nothing else)."""
        return self.channel in ("final", None)


@dataclass
class ChatResult:
    analysis: str = ""
    final: str = ""
    commentary: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)   # the assistant's messages, to append to history
    finish_reason: str = "stop"                              # one of FINISH_REASONS; "tool_call" only with
                                                             # tool_calls (a <|call|> to no tool is "stop")
    token_ids: list[int] = field(default_factory=list)       # generated ids, stop token included
    prompt_tokens: int = 0
    reused_tokens: int = 0                                   # prompt tokens served from the cache


class ChatStream:
    """Iterate for ChatEvents; `.result` is the ChatResult once the iteration is over."""

    def __init__(self, events: Iterator[ChatEvent], holder: dict):
        self._events, self._holder = events, holder

    def __iter__(self) -> Iterator[ChatEvent]:
        yield from self._events

    @property
    def result(self) -> ChatResult:
        if "result" not in self._holder:
            raise RuntimeError("the stream has not been consumed yet; iterate over it first")
        return self._holder["result"]


def render(model, messages, reasoning_effort: str = "low", tools=None, instructions: str | None = None) -> list[int]:
    check_messages(messages)
    check_tools(tools)
    return harmony.render_conversation(messages, system=SystemOptions(reasoning_effort=reasoning_effort),
                                       developer_instructions=instructions, tools=tools,
                                       tokenizer=model._tok())


def run_chat(model, messages, reasoning_effort="low", tools=None, stream=False, instructions=None,
             cache: KVCache | None = None, max_new_tokens: int = 2048, **sampling):
    ids = render(model, messages, reasoning_effort, tools, instructions)
    holder: dict[str, Any] = {}
    events = _chat_events(model, ids, cache, max_new_tokens, sampling, holder)
    if stream:
        return ChatStream(events, holder)
    for _ in events:
        pass
    return holder["result"]


def _chat_events(model, ids, cache, max_new_tokens, sampling, holder) -> Iterator[ChatEvent]:
    tok = model._tok()
    parser = harmony.StreamParser(tok)
    stops = set(harmony.stop_token_ids(tok))
    if cache is None:
        cache = model.new_cache(len(ids) + max_new_tokens)
    cache.last_reuse = 0
    generated: list[int] = []
    finish = "length"
    cancel = sampling.get("cancel")
    gen = model.generate(ids, max_new_tokens=max_new_tokens, stop_tokens=stops, cache=cache, **sampling)
    for event in gen:
        generated.append(event.token_id)
        for e in parser.feed(event.token_id):
            if isinstance(e, TextDelta) and e.text:
                yield ChatEvent(e.channel, e.text, e.recipient)
        if event.stop:
            finish = "tool_call" if parser.stop == "<|call|>" else "stop"
    if cancel is not None and cancel.is_set() and finish == "length":
        finish = "cancelled"
    for e in parser.finish():
        if isinstance(e, TextDelta) and e.text:
            yield ChatEvent(e.channel, e.text, e.recipient)
    r = parser.response()
    holder["result"] = ChatResult(r.analysis, r.final, r.commentary, r.tool_calls, r.messages, finish,
                                  generated, len(ids), cache.last_reuse)


class Conversation:
    """Messages plus a KV cache that survives between turns. Not for use from two threads at once."""

    def __init__(self, model, reasoning_effort: str = "low", instructions: str | None = None, tools=None):
        self.model = model
        check_tools(tools)
        self.reasoning_effort = reasoning_effort
        self.instructions = instructions
        self.tools = tools
        self.messages: list[Any] = []
        self.cache: KVCache = model.new_cache()

    def send(self, content: str | None = None, stream: bool = False, max_new_tokens: int = 2048, **sampling):
        """Add a user message (unless None: continue after tool results) and answer it.

        Returns a ChatResult, or a ChatStream when `stream`; the assistant's messages join the history
        when the reply is complete.
        """
        mark = len(self.messages)
        if content is not None:
            self.messages.append({"role": "user", "content": content})
        try:
            out = run_chat(self.model, self.messages, self.reasoning_effort, self.tools, stream=stream,
                           instructions=self.instructions, cache=self.cache, max_new_tokens=max_new_tokens,
                           **sampling)
            if not stream:
                self.messages.extend(out.messages)
                return out
        except BaseException:
            del self.messages[mark:]      # a failed turn leaves the history as it was
            raise
        return _RecordingStream(out, self.messages, mark)

    def add_tool_result(self, name: str, content: str) -> None:
        """The output of a tool the assistant called (`ToolCall.name`); then call `send(None)`."""
        self.messages.append({"role": "tool", "name": name, "content": content})

    def reset(self) -> None:
        self.messages.clear()
        self.cache.clear()


class _RecordingStream(ChatStream):
    """A Conversation's stream: the reply joins the history when complete; a failed turn is undone."""

    def __init__(self, inner: ChatStream, history: list, mark: int):
        super().__init__(inner._events, inner._holder)
        self._history, self._mark = history, mark

    def __iter__(self) -> Iterator[ChatEvent]:
        try:
            yield from self._events
        except BaseException:
            del self._history[self._mark:]
            raise
        self._history.extend(self.result.messages)
