"""Function tools -> the developer message's `# Tools` section: JSON schemas as TypeScript-like text."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from .messages import ToolSpec


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
