"""Function tools -> the developer message's `# Tools` section: JSON schemas as TypeScript-like text."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import jsontext
from .messages import ToolSpec


def developer_content(instructions: str | None, tools: Sequence[ToolSpec]) -> str:
    sections = []
    if instructions is not None:
        sections.append(f"# Instructions\n\n{instructions}")
    if tools:
        body = "".join(_render_tool(t) for t in tools)
        sections.append(f"# Tools\n\n## functions\n\nnamespace functions {{\n\n{body}}} // namespace functions")
    return "\n\n".join(sections)


def _lines(text: str) -> list[str]:
    """Rust's `str::lines`, as openai-harmony splits a tool's description: a final line ending adds no empty
    line, and a line ending is "\n" or "\r\n" (a lone "\r" stays)."""
    *ended, last = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in ended] + ([last] if last else [])


def _render_tool(tool: ToolSpec) -> str:
    comment = "".join(f"// {line}\n" for line in _lines(tool.description))
    if tool.parameters is None:
        return f"{comment}type {tool.name} = () => any;\n\n"
    return f"{comment}type {tool.name} = (_: {_ts_type(tool.parameters, '')}) => any;\n\n"


# JSON schema -> TypeScript-like text, rule for rule as openai-harmony's json_schema_to_typescript. `indent` is
# what an object's properties and closing brace start with: "" at the top level, 4 more spaces per nesting
# level, and 3 more inside a `oneOf` list (under " | ").
#
#   type f = (_: {             <- top level, indent ""
#   // description             <- a property's title, description and examples, then the property line
#   a?: {                      <- nested object, indent "    "
#       x: string,
#       }[],                   <- array of it
#   b: "x" | "y", // default: x
#   c?:                        <- a oneOf property: its description and default above, one line per variant
#    | string // a variant's own description and default
#    | number
#   ,
#   }) => any;
#
# Only string descriptions, titles and examples are printed; a value of another type is skipped, as the
# oracle skips it (`examples: [3]` still prints its "// Examples:" header).


def _ts_type(schema: Any, indent: str) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    if isinstance(schema.get("oneOf"), list):
        return "".join(f"\n{indent} | {_variant(v, indent)}{_comment(v, enum_default_as_json=True)}"
                       for v in schema["oneOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        names = ["number" if k == "integer" else k for k in kind if isinstance(k, str)]
        if names:
            return " | ".join(names)
    render = _TYPES.get(kind) if isinstance(kind, str) else None
    return render(schema, indent) if render else "any"


def _ts_string(schema: Mapping, indent: str) -> str:
    enum = schema.get("enum")
    values = [f'"{v}"' for v in enum if isinstance(v, str)] if isinstance(enum, list) else []
    return " | ".join(values) if values else "string"


def _ts_array(schema: Mapping, indent: str) -> str:
    return f"{_ts_type(schema['items'], indent)}[]" if "items" in schema else "Array<any>"


def _ts_object(schema: Mapping, indent: str) -> str:
    out = f"{indent}// {schema['description']}\n" if _is_str(schema, "description") else ""
    props = schema.get("properties")
    required = schema.get("required")
    required = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
    if isinstance(props, Mapping):
        out += "{\n" + "".join(_ts_property(k, v, k in required, indent) for k, v in props.items())
    else:
        out += "{\n"
    return f"{out}{indent}}}"


_TYPES = {
    "object": _ts_object,
    "string": _ts_string,
    "number": lambda schema, indent: "number",
    "integer": lambda schema, indent: "number",
    "boolean": lambda schema, indent: "boolean",
    "array": _ts_array,
}


def _ts_property(name: str, schema: Any, required: bool, indent: str) -> str:
    s = schema if isinstance(schema, Mapping) else {}
    out = f"{indent}// {s['title']}\n{indent}//\n" if _is_str(s, "title") else ""
    if "oneOf" not in s and _is_str(s, "description"):
        out += f"{indent}// {s['description']}\n"
    examples = s.get("examples")
    if isinstance(examples, list) and examples:
        out += f"{indent}// Examples:\n" + "".join(f'{indent}// - "{e}"\n' for e in examples if isinstance(e, str))
    head = f"{indent}{name}{'' if required else '?'}:"
    if isinstance(s.get("oneOf"), list):
        return out + _ts_one_of_property(s, head, indent)
    default = f" // default: {_default(s)}" if "oneOf" not in s and "default" in s else ""
    return f"{out}{head} {_nullable(s, _ts_type(schema, indent + '    '))},{default}\n"


def _ts_one_of_property(schema: Mapping, head: str, indent: str) -> str:
    """A property's description goes above it, unless its first variant says the same; a variant's own
    description is printed after it, unless it repeats the property's or is the first variant's under one."""
    variants = schema["oneOf"]
    own = schema["description"] if _is_str(schema, "description") else None
    first = variants[0] if variants and isinstance(variants[0], Mapping) else {}
    above = own is not None and not (_is_str(first, "description") and first["description"] == own)
    out = f"{indent}// {own}\n" if above else ""
    if "default" in schema:
        out += f"{indent}// default: {_default(schema)}\n"
    out += head + "\n"
    for i, variant in enumerate(variants):
        skip = own if not (i == 0 and above) else _ANY_DESCRIPTION
        out += f"{indent} | {_variant(variant, indent)}{_comment(variant, skip)}\n"
    return f"{out}{indent},\n"


_ANY_DESCRIPTION = object()


def _variant(variant: Any, indent: str) -> str:
    return _nullable(variant, _ts_type(variant, indent + "   "))


def _comment(variant: Any, skip_description: Any = None, enum_default_as_json: bool = False) -> str:
    """A oneOf variant's trailing ` // {description} default: {default}` (a description equal to
    `skip_description` left out; `_ANY_DESCRIPTION` leaves out every one). The oracle prints an enum's string
    default bare under a property's oneOf but as JSON (quoted, escaped) under any other oneOf."""
    if not isinstance(variant, Mapping):
        return ""
    notes = []
    if _is_str(variant, "description") and skip_description is not _ANY_DESCRIPTION \
            and variant["description"] != skip_description:
        notes.append(variant["description"])
    if "default" in variant:
        notes.append(f"default: {_default(variant, enum_default_as_json)}")
    return f" // {' '.join(notes)}" if notes else ""


def _nullable(schema: Any, ts: str) -> str:
    nullable = isinstance(schema, Mapping) and schema.get("nullable") is True
    return f"{ts} | null" if nullable and "null" not in ts else ts


def _is_str(schema: Mapping, key: str) -> bool:
    return isinstance(schema.get(key), str)


def _default(schema: Mapping, enum_default_as_json: bool = False) -> str:
    """A string default is quoted (unescaped) unless the schema has a non-empty enum, where it is bare (or JSON
    with `enum_default_as_json`); any other value is compact JSON as serde_json prints it (numbers in Rust's
    shortest float form: 1e20, 1e-7, 0.00001)."""
    value = schema["default"]
    if isinstance(value, str):
        enum = schema.get("enum")
        if not (isinstance(enum, list) and enum):
            return f'"{value}"'
        return jsontext.dumps(value) if enum_default_as_json else value
    return jsontext.dumps(value)
