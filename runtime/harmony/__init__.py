"""Harmony, gpt-oss's chat format: render a conversation to token ids, parse generated ids back.

A rendered message is

    <|start|>{author}[ to={recipient}][<|channel|>{channel}][ {content_type}]<|message|>{content}<|end|>

where an assistant message with a recipient (a tool call) ends in <|call|> instead, and a
prompt for completion ends in `<|start|>assistant`. The first message is the system message
(identity, dates, reasoning effort, valid channels); instructions and function tools go in a
developer message, tools rendered as a TypeScript-like `namespace functions { ... }`.

Rendering matches openai-harmony (HARMONY_GPT_OSS) token for token; tests/runtime/test_harmony.py and
test_harmony_differential.py (thousands of generated conversations) check it.
Generation stops on <|return|> (final answer done) or <|call|> (tool call); <|end|> only ends a
message. Only stdlib + tiktoken (through runtime.tokenizer) here.

    messages.py    the data model (Message, ToolSpec, SystemOptions, ToolCall, ParsedResponse, the
                   constants) and OpenAI-style dicts -> harmony messages (to_messages, to_tool_spec)
    typescript.py  the developer message: instructions, and tools' JSON schemas as TypeScript-like text
    jsontext.py    a schema's default as openai-harmony prints it (serde_json's number reader, ryu's floats)
    render.py      the system message and a conversation -> token ids (render_conversation, stop_token_ids)
    parse.py       generated ids -> messages and events (StreamParser, parse_completion)

Imports go one way: jsontext <- typescript, messages <- typescript <- render, messages <- parse.
"""

from .messages import (CHANNELS, DEFAULT_MODEL_IDENTITY, REASONING_EFFORTS, ROLES, STOP_TOKENS, Message, MessageLike,
                       ParsedResponse, SystemOptions, ToolCall, ToolLike, ToolSpec, to_messages, to_tool_spec)
from .parse import ChannelStart, Event, MessageEnd, StreamParser, TextDelta, ToolCallComplete, parse_completion
from .render import render_conversation, stop_token_ids, system_content
from .typescript import developer_content

__all__ = ["CHANNELS", "ChannelStart", "DEFAULT_MODEL_IDENTITY", "Event", "Message", "MessageEnd", "MessageLike",
           "ParsedResponse", "REASONING_EFFORTS", "ROLES", "STOP_TOKENS", "StreamParser", "SystemOptions", "TextDelta",
           "ToolCall", "ToolCallComplete", "ToolLike", "ToolSpec", "developer_content", "parse_completion",
           "render_conversation", "stop_token_ids", "system_content", "to_messages", "to_tool_spec"]
