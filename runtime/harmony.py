"""Harmony, gpt-oss's chat format: render a conversation to token ids, parse generated ids back.

A rendered message is

    <|start|>{author}[ to={recipient}][<|channel|>{channel}][ {content_type}]<|message|>{content}<|end|>

where an assistant message with a recipient (a tool call) ends in <|call|> instead, and a
prompt for completion ends in `<|start|>assistant`. The first message is the system message
(identity, dates, reasoning effort, valid channels); instructions and function tools go in a
developer message, tools rendered as a TypeScript-like `namespace functions { ... }`.

Rendering matches openai-harmony (HARMONY_GPT_OSS) token for token; tests/test_harmony.py checks it.
Generation stops on <|return|> (final answer done) or <|call|> (tool call); <|end|> only ends a
message. Only stdlib + tiktoken (through runtime.tokenizer) here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

from .tokenizer import Tokenizer, as_tokenizer

ROLES = ("system", "developer", "user", "assistant", "tool")
CHANNELS = ("analysis", "commentary", "final")
REASONING_EFFORTS = ("low", "medium", "high")
STOP_TOKENS = ("<|return|>", "<|call|>")
DEFAULT_MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."

_CHANNELS_LINE = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
_TOOLS_CHANNEL_LINE = "Calls to these tools must go to the commentary channel: 'functions'."
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
    stop: str | None = None  # "<|return|>", "<|call|>", or None when the stream just ended


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


# ---------------------------------------------------------------------------------------------
# system and developer message content
# ---------------------------------------------------------------------------------------------


def system_content(options: SystemOptions, has_function_tools: bool) -> str:
    head = [options.model_identity] if options.model_identity else []
    if options.knowledge_cutoff:
        head.append(f"Knowledge cutoff: {options.knowledge_cutoff}")
    if options.current_date:
        head.append(f"Current date: {options.current_date}")
    sections = ["\n".join(head)] if head else []
    if options.reasoning_effort:
        sections.append(f"Reasoning: {options.reasoning_effort}")
    channels = _CHANNELS_LINE + (f"\n{_TOOLS_CHANNEL_LINE}" if has_function_tools else "")
    sections.append(channels)
    return "\n\n".join(sections)


def developer_content(instructions: str | None, tools: Sequence[ToolSpec]) -> str:
    sections = []
    if instructions is not None:
        sections.append(f"# Instructions\n\n{instructions}")
    if tools:
        body = "".join(_render_tool(t) for t in tools)
        sections.append(f"# Tools\n\n## functions\n\nnamespace functions {{\n\n{body}}} // namespace functions")
    return "\n\n".join(sections)


def _render_tool(tool: ToolSpec) -> str:
    comment = "".join(f"// {line}\n" for line in tool.description.split("\n")) if tool.description else ""
    if tool.parameters is None:
        return f"{comment}type {tool.name} = () => any;\n\n"
    return f"{comment}type {tool.name} = (_: {_ts_type(tool.parameters, 0)}) => any;\n\n"


# JSON schema -> TypeScript-like text. `inner` is the indent (in spaces) that an object's
# properties and closing brace get: 0 at the top level, +4 per nesting level, and +3 inside a
# property's `oneOf` list (under " | ").
#
#   type f = (_: {             <- top level, inner 0
#   // description             <- a property's comments, then the property line
#   a?: {                      <- nested object, inner 4
#       x: string,
#       }[],                   <- array of it
#   b: "x" | "y", // default: x
#   }) => any;


def _ts_type(schema: Any, inner: int) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    if "oneOf" in schema:
        pad = " " * inner
        return "".join(f"\n{pad} | {_ts_type(v, inner + 3)}{_variant_comment(v)}" for v in schema["oneOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join("number" if k == "integer" else str(k) for k in kind)
    if kind == "string":
        values = [v for v in schema.get("enum") or [] if isinstance(v, str)]
        return " | ".join(f'"{v}"' for v in values) if values else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = schema.get("items")
        return f"{_ts_type(items, inner)}[]" if isinstance(items, Mapping) else "Array<any>"
    if kind == "object":
        pad = " " * inner
        head = f"{pad}// {schema['description']}\n" if "description" in schema else ""
        required = set(schema.get("required") or [])
        props = "".join(_ts_property(k, v, k in required, inner) for k, v in (schema.get("properties") or {}).items())
        return f"{head}{{\n{props}{pad}}}"
    return "any"


def _ts_default(schema: Mapping) -> str:
    value = schema["default"]
    if isinstance(value, str):
        return value if "enum" in schema else f'"{value}"'
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _ts_property(name: str, schema: Any, required: bool, indent: int) -> str:
    pad = " " * indent
    schema = schema if isinstance(schema, Mapping) else {}
    lines = []
    if "title" in schema:
        lines += [f"{pad}// {schema['title']}", f"{pad}//"]
    if "description" in schema:
        lines.append(f"{pad}// {schema['description']}")
    examples = [e for e in schema.get("examples") or [] if isinstance(e, str)]
    if examples:
        lines.append(f"{pad}// Examples:")
        lines += [f'{pad}// - "{e}"' for e in examples]
    mark = "" if required else "?"
    if "oneOf" in schema:
        if "default" in schema:
            lines.append(f"{pad}// default: {_ts_default(schema)}")
        lines.append(f"{pad}{name}{mark}:")
        for variant in schema["oneOf"]:
            lines.append(f"{pad} | {_ts_type(variant, indent + 3)}{_variant_comment(variant)}")
        lines.append(f"{pad},")
    else:
        default = f" // default: {_ts_default(schema)}" if "default" in schema else ""
        lines.append(f"{pad}{name}{mark}: {_ts_type(schema, indent + 4)},{default}")
    return "".join(line + "\n" for line in lines)


def _variant_comment(variant: Any) -> str:
    if not isinstance(variant, Mapping):
        return ""
    notes = [variant["description"]] if "description" in variant else []
    if "default" in variant:
        notes.append(f"default: {_ts_default(variant)}")
    return f" // {' '.join(notes)}" if notes else ""


# ---------------------------------------------------------------------------------------------
# rendering to tokens
# ---------------------------------------------------------------------------------------------


def _drop_earlier_analysis(messages: list[Message]) -> list[Message]:
    """openai-harmony's auto_drop_analysis: only when the last assistant message is a final
    answer, drop analysis messages that come before the first final message."""
    last = next((m for m in reversed(messages) if m.role == "assistant"), None)
    if last is None or last.channel != "final":
        return messages
    first_final = next(i for i, m in enumerate(messages) if m.channel == "final")
    return [m for i, m in enumerate(messages) if not (i < first_final and m.channel == "analysis")]


class _Renderer:
    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []

    def special(self, name: str) -> None:
        self.ids.append(self.tok.token_id(name))

    def text(self, text: str) -> None:
        self.ids.extend(self.tok.encode_text(text))

    def trusted(self, text: str) -> None:
        """Header text (a content type) that may hold <|constrain|>; never user content."""
        head, sep, rest = text.partition(_CONSTRAIN)
        self.text(head)
        if sep:
            self.special(_CONSTRAIN)
            self.trusted(rest)

    def message(self, m: Message) -> None:
        author = (m.name or "tool") if m.role == "tool" else (f"{m.role}:{m.name}" if m.name else m.role)
        self.special("<|start|>")
        self.text(author + (f" to={m.recipient}" if m.recipient else ""))
        if m.channel:
            self.special("<|channel|>")
            self.text(m.channel)
        if m.content_type:
            self.trusted(f" {m.content_type}")
        self.special("<|message|>")
        self.text(m.content)
        self.special("<|call|>" if m.role == "assistant" and m.recipient else "<|end|>")


def render_conversation(
    messages: Iterable[MessageLike],
    system: SystemOptions | None = SystemOptions(),
    developer_instructions: str | None = None,
    tools: Sequence[ToolLike] | None = None,
    for_completion: bool = True,
    tokenizer: Tokenizer | Any = None,
    auto_drop_analysis: bool = True,
) -> list[int]:
    """Token ids for a conversation: system message, developer message, then `messages`.

    `messages`: Message objects or OpenAI-style dicts (see `to_messages`); system/developer
    entries join `developer_instructions`. `system=None` omits the system message.
    `for_completion` appends `<|start|>assistant`. `tokenizer`: a Tokenizer, tiktoken Encoding or
    bundle tokenizer folder (None: tiktoken's registry).
    """
    tok = as_tokenizer(tokenizer)
    extra_instructions, convo = to_messages(messages)
    specs = [to_tool_spec(t) for t in tools or []]
    texts = ([developer_instructions] if developer_instructions is not None else []) + extra_instructions
    instructions = "\n\n".join(texts) if texts else None

    r = _Renderer(tok)
    if system is not None:
        r.message(Message("system", system_content(system, has_function_tools=bool(specs))))
    if instructions is not None or specs:
        r.message(Message("developer", developer_content(instructions, specs)))
    for m in _drop_earlier_analysis(convo) if auto_drop_analysis else convo:
        r.message(m)
    if for_completion:
        r.special("<|start|>")
        r.text("assistant")
    return r.ids


def stop_token_ids(tokenizer: Tokenizer | Any = None) -> list[int]:
    """Ids that end generation: <|return|> (answer done) and <|call|> (a tool call to run)."""
    tok = as_tokenizer(tokenizer)
    return [tok.token_id(name) for name in STOP_TOKENS]


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
    """

    def __init__(self, tokenizer: Tokenizer | Any = None, role: str | None = "assistant"):
        self.tok = as_tokenizer(tokenizer)
        ids = {name: self.tok.token_id(name) for name in
               ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")}
        self._id = ids
        self._terminators = {ids["<|end|>"]: "<|end|>", ids["<|return|>"]: "<|return|>", ids["<|call|>"]: "<|call|>"}
        self.messages: list[Message] = []
        self.stop: str | None = None
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
        if _is_tool_call(m):
            events.append(ToolCallComplete(_tool_call(m)))
        events.append(MessageEnd(m, terminator))
        self._state, self._current = "idle", None

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, token_id: int) -> list[Event]:
        """Process one generated token; return the events it completes."""
        events: list[Event] = []
        token_id = int(token_id)
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
        name = self._terminators[token_id]
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
