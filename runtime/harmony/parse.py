"""Generated token ids -> harmony messages, tool calls and stream events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Union

from ..tokenizer import Tokenizer, as_tokenizer
from .messages import _CONSTRAIN, ROLES, Message, ParsedResponse, ToolCall

# ---------------------------------------------------------------------------------------------
# parsing generated tokens
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelStart:
    role: str
    channel: str | None
    recipient: str | None
    content_type: str | None


@dataclass(frozen=True)
class TextDelta:
    channel: str | None
    text: str
    recipient: str | None = None


@dataclass(frozen=True)
class ToolCallComplete:
    call: ToolCall


@dataclass(frozen=True)
class MessageEnd:
    message: Message
    terminator: str | None  # "<|end|>", "<|return|>", "<|call|>", or None (cut off)


Event = Union[ChannelStart, TextDelta, ToolCallComplete, MessageEnd]

_MAX_HEADER_TOKENS = 32  # a longer "header" is really content the model wrote without one


class StreamParser:
    """Parse generated harmony tokens one id at a time, never raising on malformed output.

    The prompt ended in `<|start|>{role}`, so the stream begins inside that header. Recovery:
    text with no header (or a header with a newline or over 32 tokens) is content on `final`;
    a message cut off by <|start|> or by the end of the stream is closed as is; stray special
    tokens inside content are dropped; unparseable tool arguments leave `arguments_json` None.

    `stop` says how the reply ended: "<|call|>" only when a `<|call|>` closed a tool call (a message with a tool
    recipient, e.g. `to=functions.f`); "<|return|>" for a `<|return|>`, and for a `<|call|>` that closed anything
    else (no recipient, or `to=all`/`user`/`assistant`): there is no tool to call, so it ends the reply as
    `<|return|>` does, and a chat's finish reason is "stop", never "tool_call" with no tool calls. None: the stream
    just ended (cut off).
    """

    def __init__(self, tokenizer: Tokenizer | Any = None, role: str | None = "assistant"):
        self.tok = as_tokenizer(tokenizer)
        ids = {name: self.tok.token_id(name) for name in
               ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")}
        self._id = ids
        self._terminators = {ids["<|end|>"]: "<|end|>", ids["<|return|>"]: "<|return|>", ids["<|call|>"]: "<|call|>"}
        self.messages: list[Message] = []
        self.stop: str | None = None
        self._closed: Message | None = None     # the message the token being fed closed, if any
        self._open_header(role)

    # -- state changes --------------------------------------------------------------------

    def _open_header(self, role: str | None) -> None:
        self._state = "header"
        self._role = role
        self._header: list[int] = []
        self._current: Message | None = None

    def _open_content(self, role: str, channel, recipient, content_type, events: list[Event]) -> None:
        self._state = "content"
        self._current = Message(role, "", channel=channel, recipient=recipient, content_type=content_type)
        self._content: list[int] = []
        self._decoder = self.tok.incremental_decoder()
        events.append(ChannelStart(role, channel, recipient, content_type))

    def _headerless_content(self, events: list[Event]) -> None:
        """The 'header' was text: reopen it as content of an untagged message (read as final)."""
        pending = [t for t in self._header if not self.tok.is_special(t)]
        self._open_content(self._role or "assistant", None, None, None, events)
        for t in pending:
            self._content_token(t, events)

    def _close(self, terminator: str | None, events: list[Event]) -> None:
        m = self._current
        tail = self._decoder.flush()
        if tail:
            events.append(TextDelta(m.channel, tail, m.recipient))
        m.content = self.tok.decode(self._content)
        self.messages.append(m)
        self._closed = m
        if _is_tool_call(m):
            events.append(ToolCallComplete(_tool_call(m)))
        events.append(MessageEnd(m, terminator))
        self._state, self._current = "idle", None

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, token_id: int) -> list[Event]:
        """Process one generated token; return the events it completes."""
        events: list[Event] = []
        token_id = int(token_id)
        self._closed = None
        if self._state == "idle":
            if token_id == self._id["<|start|>"]:
                self._open_header(None)
                return events
            if token_id in self._terminators or (self.tok.is_special(token_id) and token_id != self._id["<|channel|>"]):
                return events
            self._open_header("assistant")  # <|start|>assistant went missing
        if self._state == "header":
            self._header_token(token_id, events)
        else:
            self._content_special_or_text(token_id, events)
        return events

    def _header_token(self, token_id: int, events: list[Event]) -> None:
        if token_id == self._id["<|message|>"]:
            role, channel, recipient, content_type = self._parse_header()
            self._open_content(role, channel, recipient, content_type, events)
        elif token_id == self._id["<|start|>"] or token_id in self._terminators:
            if any(not self.tok.is_special(t) for t in self._header):
                self._headerless_content(events)
                self._close(self._terminators.get(token_id), events)
            if token_id == self._id["<|start|>"]:
                self._open_header(None)
            else:
                self._state = "idle"
                self._note_stop(token_id)
        else:
            self._header.append(token_id)
            text = self.tok.decode([t for t in self._header if not self.tok.is_special(t)])
            if "\n" in text or len(self._header) > _MAX_HEADER_TOKENS:
                self._headerless_content(events)

    def _content_special_or_text(self, token_id: int, events: list[Event]) -> None:
        if token_id in self._terminators:
            self._close(self._terminators[token_id], events)
            self._note_stop(token_id)
        elif token_id == self._id["<|start|>"]:
            self._close(None, events)
            self._open_header(None)
        elif not self.tok.is_special(token_id):
            self._content_token(token_id, events)

    def _content_token(self, token_id: int, events: list[Event]) -> None:
        self._content.append(token_id)
        text = self._decoder.add(token_id)
        if text:
            events.append(TextDelta(self._current.channel, text, self._current.recipient))

    def _note_stop(self, token_id: int) -> None:
        """Record how the reply ended (the class docstring: a `<|call|>` that closed no tool call is a return)."""
        name = self._terminators[token_id]
        if name == "<|call|>" and (self._closed is None or not _is_tool_call(self._closed)):
            name = "<|return|>"
        if name != "<|end|>":
            self.stop = name

    def _parse_header(self) -> tuple[str, str | None, str | None, str | None]:
        parts = []
        for t in self._header:
            if t == self._id["<|channel|>"]:
                parts.append(" <|channel|> ")
            elif t == self._id["<|constrain|>"]:
                parts.append(f" {_CONSTRAIN} ")
            elif not self.tok.is_special(t):
                parts.append(self.tok.decode([t]))
        words = "".join(parts).split()
        role, name = self._role, None
        channel = recipient = constrain = None
        rest: list[str] = []
        i = 0
        if role is None and words and words[0] not in ("<|channel|>", _CONSTRAIN) and not words[0].startswith("to="):
            role, i = words[0], 1
        while i < len(words):
            w = words[i]
            following = words[i + 1] if i + 1 < len(words) else None
            if w in ("<|channel|>", _CONSTRAIN):
                if following is not None and following not in ("<|channel|>", _CONSTRAIN) and not following.startswith("to="):
                    if w == "<|channel|>":
                        channel = following
                    else:
                        constrain = following
                    i += 1
            elif w.startswith("to="):
                recipient = w[3:] or None
            else:
                rest.append(w)
            i += 1
        role = role or "assistant"
        if role not in ROLES:
            base, _, name = role.partition(":")
            role, name = (base, name or None) if base in ROLES else ("tool", role)
        content_type = f"{_CONSTRAIN}{constrain}" if constrain else (" ".join(rest) or None)
        return role, channel, recipient, content_type

    def finish(self) -> list[Event]:
        """End of stream: close a message that was cut off (or a header that was really text)."""
        events: list[Event] = []
        if self._state == "header" and any(not self.tok.is_special(t) for t in self._header):
            self._headerless_content(events)
        if self._state == "content":
            self._close(None, events)
        self._state = "idle"
        return events

    def response(self) -> ParsedResponse:
        """What the assistant said so far (closed messages only; call `finish()` first at the end)."""
        out = ParsedResponse(stop=self.stop)
        buckets: dict[str, list[str]] = {"analysis": [], "commentary": [], "final": []}
        for m in self.messages:
            if m.role != "assistant":
                continue
            out.messages.append(m)
            if _is_tool_call(m):
                out.tool_calls.append(_tool_call(m))
            elif m.channel in ("analysis", "commentary"):
                buckets[m.channel].append(m.content)
            else:
                buckets["final"].append(m.content)
        out.analysis, out.commentary, out.final = ("\n".join(buckets[k]) for k in ("analysis", "commentary", "final"))
        return out


def _is_tool_call(m: Message) -> bool:
    return m.role == "assistant" and m.recipient is not None and m.recipient not in ("user", "all", "assistant")


def _tool_call(m: Message) -> ToolCall:
    name = m.recipient[len("functions."):] if m.recipient.startswith("functions.") else m.recipient
    try:
        parsed = json.loads(m.content)
    except ValueError:
        parsed = None
    return ToolCall(name, m.content, parsed if isinstance(parsed, dict) else None, m.recipient, m.channel)


def parse_completion(token_ids: Iterable[int], tokenizer: Tokenizer | Any = None, role: str | None = "assistant") -> ParsedResponse:
    """Parse a whole completion (the ids generated after `<|start|>{role}`)."""
    parser = StreamParser(tokenizer, role=role)
    for t in token_ids:
        parser.feed(t)
    parser.finish()
    return parser.response()
