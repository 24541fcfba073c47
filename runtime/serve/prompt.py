"""A conversation -> the token ids the engine is fed: harmony rendering, the shared prefix, a forced tool call.

    ids     system message, developer message (instructions, tools), the conversation, `<|start|>assistant`,
            then the header a tool_choice forces (below)
    prefix  the system and developer messages alone: every request with the same instructions, tools and
            reasoning effort starts with these tokens, so the scheduler checkpoints the cache there
    forced  what tool_choice puts after `<|start|>assistant`, fed to the parser before the generated tokens:
              a function  <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>  (the model
                          writes the arguments)
              "required"  <|channel|>commentary to=functions.  (the model writes the name, then the arguments)
            harmony has no constrained decoding here: the arguments the model writes are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import harmony
from ..harmony import Message, SystemOptions
from .errors import APIError
from .params import ToolChoice


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    prefix: int
    forced: list[int] = field(default_factory=list)


def _role(message) -> str | None:
    return message.role if isinstance(message, Message) else message.get("role")


def build_prompt(tokenizer, messages: list, effort: str, tools: list, choice: ToolChoice,
                 instructions: str | None = None) -> Prompt:
    """`messages`: OpenAI-style dicts or harmony Messages (system/developer ones become developer instructions)."""
    shown_tools = [] if choice.mode == "none" else tools
    options = SystemOptions(reasoning_effort=effort)
    try:
        ids = harmony.render_conversation(messages, system=options, developer_instructions=instructions,
                                          tools=shown_tools, tokenizer=tokenizer)
        shared = [m for m in messages if _role(m) in ("system", "developer")]
        prefix = harmony.render_conversation(shared, system=options, developer_instructions=instructions,
                                             tools=shown_tools, tokenizer=tokenizer, for_completion=False)
    except (TypeError, ValueError) as e:                # what the checks before rendering did not catch
        raise APIError(400, f"messages: {e}", param="messages") from None
    forced = forced_header(tokenizer, choice)
    return Prompt(ids + forced, len(prefix) if ids[:len(prefix)] == prefix else 0, forced)


def forced_header(tokenizer, choice: ToolChoice) -> list[int]:
    if choice.mode not in ("required", "function"):
        return []
    special = tokenizer.token_id
    ids = [special("<|channel|>"), *tokenizer.encode_text("commentary to=functions.")]
    if choice.mode == "function":
        ids = [special("<|channel|>"), *tokenizer.encode_text(f"commentary to=functions.{choice.name} "),
               special("<|constrain|>"), *tokenizer.encode_text("json"), special("<|message|>")]
    return ids


def budget(prompt: Prompt, max_tokens: int | None, max_context: int) -> int:
    """New tokens the request may generate: its max_tokens, at most what the context has left. 413 when the
    prompt leaves no room for one new token."""
    room = max_context - len(prompt.ids)
    if room < 1:
        raise APIError(413, f"the prompt is {len(prompt.ids)} tokens and the context holds {max_context} "
                            f"(the server's --max-context); shorten the conversation", param="messages",
                       code="context_length_exceeded")
    return room if max_tokens is None else min(max_tokens, room)
