"""Conversation -> token ids: the system message, the developer message, then each message."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..tokenizer import Tokenizer, as_tokenizer
from .messages import _CONSTRAIN, STOP_TOKENS, Message, MessageLike, SystemOptions, ToolLike, to_messages, to_tool_spec
from .typescript import developer_content

_CHANNELS_LINE = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
_TOOLS_CHANNEL_LINE = "Calls to these tools must go to the commentary channel: 'functions'."


# ---------------------------------------------------------------------------------------------
# system message content (the developer message's is typescript.developer_content)
# ---------------------------------------------------------------------------------------------


def system_content(options: SystemOptions, has_function_tools: bool) -> str:
    """None leaves a field out; an empty string is still printed (`Knowledge cutoff: `), as openai-harmony does."""
    head = [line for line in (options.model_identity,
                              _labelled("Knowledge cutoff", options.knowledge_cutoff),
                              _labelled("Current date", options.current_date)) if line is not None]
    sections = ["\n".join(head)] if head else []
    if options.reasoning_effort is not None:
        sections.append(f"Reasoning: {options.reasoning_effort}")
    channels = _CHANNELS_LINE + (f"\n{_TOOLS_CHANNEL_LINE}" if has_function_tools else "")
    sections.append(channels)
    return "\n\n".join(sections)


def _labelled(label: str, value: str | None) -> str | None:
    return None if value is None else f"{label}: {value}"


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

    def content_type(self, content_type: str) -> None:
        """` {content_type}` as ordinary text, except a leading <|constrain|>: that one is the format's
        constrain marker (`<|constrain|>json`), rendered as the special token, as openai-harmony does.
        Special-token text anywhere else ("json <|constrain|>x", "<|constrain|><|call|>") stays text."""
        rest = content_type[len(_CONSTRAIN):] if content_type.startswith(_CONSTRAIN) else None
        if rest is None:
            self.text(f" {content_type}")
            return
        self.text(" ")
        self.special(_CONSTRAIN)
        self.text(rest)

    def message(self, m: Message) -> None:
        """`None` leaves a header field out, "" is rendered (`<|channel|>` with no name), as openai-harmony does;
        recipient "all" is left out, yet an assistant message with any recipient ends in <|call|>."""
        self.special("<|start|>")
        self.text(_author(m) + (f" to={m.recipient}" if m.recipient not in (None, "all") else ""))
        if m.channel is not None:
            self.special("<|channel|>")
            self.text(m.channel)
        if m.content_type is not None:
            self.content_type(m.content_type)
        self.special("<|message|>")
        self.text(m.content)
        self.special("<|call|>" if m.role == "assistant" and m.recipient is not None else "<|end|>")


def _author(m: Message) -> str:
    if m.role != "tool":
        return m.role if m.name is None else f"{m.role}:{m.name}"
    if m.name is None:
        raise ValueError("a tool message needs a name: the tool that answered, e.g. 'functions.get_weather'")
    return m.name


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
