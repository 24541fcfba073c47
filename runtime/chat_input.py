"""What a chat call takes from its caller (tools, messages), checked before anything is rendered: a mistake is one
ArgumentError naming the tool, message and key, never a TypeError from deep inside the renderer.

Checked: the shapes harmony needs to render at all. A tool is a ToolSpec or an object ({"name", "description",
"parameters"}, or that under "function"): a non-empty string name, a string description, an object of parameters
whose "properties" (at any depth) are objects of property schemas. An assistant message's "tool_calls" are objects
whose function has a non-empty string name. What the values mean is the renderer's business.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ArgumentError
from .harmony import Message, ToolSpec


def check_tools(tools) -> None:
    if tools is None:
        return
    if isinstance(tools, (str, bytes, Mapping)) or not hasattr(tools, "__iter__"):
        raise ArgumentError(f"tools must be a list of tools, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if isinstance(tool, ToolSpec):
            spec = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        elif isinstance(tool, Mapping):
            spec = tool.get("function", tool)
            _require(isinstance(spec, Mapping), f"{where}.function", "an object", spec)
            where += ".function" if "function" in tool else ""
        else:
            raise ArgumentError(f"{where} must be a ToolSpec or an object, got {type(tool).__name__}")
        _name(spec.get("name"), f"{where}.name")
        description = spec.get("description")
        _require(description is None or isinstance(description, str), f"{where}.description", "a string",
                 description)
        parameters = spec.get("parameters")
        _require(parameters is None or isinstance(parameters, Mapping), f"{where}.parameters", "an object (a JSON "
                 "schema)", parameters)
        if parameters is not None:
            _schema(parameters, f"{where}.parameters")


def check_messages(messages) -> None:
    if isinstance(messages, (str, bytes, Mapping)) or not hasattr(messages, "__iter__"):
        raise ArgumentError(f"messages must be a list of messages, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if isinstance(message, Message):
            continue
        if not isinstance(message, Mapping):
            raise ArgumentError(f"messages[{i}] must be a Message or an object, got {type(message).__name__}")
        calls = message.get("tool_calls")
        if calls is None:
            continue
        _require(isinstance(calls, (list, tuple)), f"messages[{i}].tool_calls", "a list", calls)
        for j, call in enumerate(calls):
            where = f"messages[{i}].tool_calls[{j}]"
            _require(isinstance(call, Mapping), where, "an object", call)
            fn = call.get("function", call)
            _require(isinstance(fn, Mapping), f"{where}.function", "an object", fn)
            _name(fn.get("name"), f"{where}{'.function' if 'function' in call else ''}.name")


def _schema(schema: Mapping, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise ArgumentError(f"{where}: a JSON schema nested more than 64 deep")
    properties = schema.get("properties")
    if properties is not None:
        _require(isinstance(properties, Mapping), f"{where}.properties", "an object of property schemas",
                 properties)
        for name, sub in properties.items():
            _require(isinstance(sub, (Mapping, bool)), f"{where}.properties.{name}", "a JSON schema (an object)", sub)
            if isinstance(sub, Mapping):
                _schema(sub, f"{where}.properties.{name}", depth + 1)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _schema(items, f"{where}.items", depth + 1)
    for key in ("oneOf", "anyOf", "enum", "required"):
        if key in schema:
            _require(isinstance(schema[key], (list, tuple)), f"{where}.{key}", "a list", schema[key])
    for key in ("oneOf", "anyOf"):
        for k, variant in enumerate(schema.get(key) or []):
            if isinstance(variant, Mapping):
                _schema(variant, f"{where}.{key}[{k}]", depth + 1)


def _name(value: Any, where: str) -> None:
    _require(isinstance(value, str) and value != "", where, "a non-empty string", value)


def _require(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        raise ArgumentError(f"{where} must be {what}, got {shown}")
