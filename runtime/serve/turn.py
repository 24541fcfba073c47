"""One assistant turn as the APIs see it: generated token ids through the harmony parser -> output items.

An item is one harmony message of the assistant:
    "reasoning"  the analysis channel                     -> chat `reasoning_content`, a Responses reasoning item
    "text"       final, untagged or a commentary preamble -> chat `content`, a Responses message
    "call"       a message to a function (`to=functions.X`) -> chat `tool_calls`, a Responses function_call

`Turn.token(id)` and `Turn.finish(finished)` return neutral events (ItemStart, ItemDelta, ItemEnd, TurnEnd) that
chat.py and responses.py turn into their own streaming shapes; `Turn.items` is the whole reply afterwards. Stop
strings cut the text items (and end the generation: `stop_hit`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .. import harmony
from ..harmony import ChannelStart, MessageEnd, TextDelta
from .scheduler import Finished

_NOT_CALLS = (None, "user", "all", "assistant")


ID_PREFIX = {"reasoning": "rs_", "text": "msg_", "call": "fc_"}


@dataclass
class Item:
    kind: str                   # "reasoning" | "text" | "call"
    index: int
    name: str | None = None     # the function of a call
    call_id: str | None = None
    text: str = ""              # what was emitted so far (a call's arguments)
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"{ID_PREFIX[self.kind]}{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ItemStart:
    item: Item


@dataclass(frozen=True)
class ItemDelta:
    item: Item
    text: str


@dataclass(frozen=True)
class ItemEnd:
    item: Item


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True)
class TurnEnd:
    finish_reason: str          # "stop" | "tool_calls" | "length" | "cancelled" | "shutdown" | "error"
    usage: Usage
    error: str | None = None


class StopMatcher:
    """Hold back text that could be the start of a stop string; report the first stop string seen."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self._held = stops, ""
        self._keep = max((len(s) for s in stops), default=1) - 1

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string ended it)."""
        if not self.stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[:min(hits)], True
        cut = max(len(buf) - self._keep, 0)
        self._held = buf[cut:]
        return buf[:cut], False

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out


def _kind(start: ChannelStart) -> str | None:
    if start.role != "assistant":
        return None                                 # the model wrote another author's message: not a reply
    if start.recipient not in _NOT_CALLS:
        return "call"
    return "reasoning" if start.channel == "analysis" else "text"


class Turn:
    def __init__(self, tokenizer, prompt_tokens: int, forced: list[int] = (), stop: tuple[str, ...] = ()):
        self.parser = harmony.StreamParser(tokenizer)
        self.prompt_tokens = prompt_tokens
        self.items: list[Item] = []
        self.stop_hit = False
        self._stop = stop
        self._open: Item | None = None             # the item being written (None: between messages, or another
                                                    # author's message, which is no part of the reply)
        self._matcher = StopMatcher(stop)
        self._reasoning_tokens = 0
        self._forced = list(forced)

    def start(self) -> list:
        """Feed the forced header (tool_choice), if any."""
        return [e for t in self._forced for e in self._parsed(self.parser.feed(t))]

    def token(self, token_id: int) -> list:
        if self._open is not None and self._open.kind == "reasoning":
            self._reasoning_tokens += 1
        return [] if self.stop_hit else self._parsed(self.parser.feed(token_id))

    def finish(self, finished: Finished) -> list:
        events = [] if self.stop_hit else self._parsed(self.parser.finish())
        usage = Usage(self.prompt_tokens, finished.completion_tokens, finished.cached_tokens, self._reasoning_tokens)
        return events + [TurnEnd(self._finish_reason(finished), usage, finished.error)]

    def _finish_reason(self, finished: Finished) -> str:
        if self.stop_hit:
            return "stop"
        if finished.reason == "stop" and self.parser.stop == "<|call|>":
            return "tool_calls"
        return finished.reason

    # -------------------------------------------------------------- parser events -> items
    def _parsed(self, events) -> list:
        out = []
        for e in events:
            if isinstance(e, ChannelStart):
                out += self._begin(e)
            elif isinstance(e, TextDelta) and self._open is not None:
                out += self._delta(e.text)
            elif isinstance(e, MessageEnd) and self._open is not None:
                out += self._end()
            if self.stop_hit:
                break
        return out

    def _begin(self, start: ChannelStart) -> list:
        kind = _kind(start)
        if kind is None:
            return []
        name = None
        if kind == "call":
            name = start.recipient.removeprefix("functions.")
        self._open = Item(kind, len(self.items), name, f"call_{uuid.uuid4().hex[:24]}" if kind == "call" else None)
        self.items.append(self._open)
        self._matcher = StopMatcher(self._stop if kind == "text" else ())
        return [ItemStart(self._open)]

    def _delta(self, text: str) -> list:
        item = self._open
        text, hit = self._matcher.feed(text)
        out = [ItemDelta(item, text)] if text else []
        item.text += text
        if hit:
            self.stop_hit = True
            out += [ItemEnd(item)]
            self._open = None
        return out

    def _end(self) -> list:
        item, self._open = self._open, None
        tail = self._matcher.flush()
        item.text += tail
        return ([ItemDelta(item, tail)] if tail else []) + [ItemEnd(item)]
