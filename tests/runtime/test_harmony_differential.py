"""Differential test: our harmony renderer against openai-harmony (the oracle), token id for token id.

A seeded generator writes thousands of conversations, half realistic (a system message, instructions, function
tools with typical JSON schemas, a user turn, the assistant's analysis, a tool call and its result, a final
answer) and half odd (empty system fields, descriptions ending in "\\n" or holding "\\r\\n", non-string
`examples`, `oneOf` variants with descriptions and defaults, empty enums with defaults, numbers such as 1e20,
1e-7 and 2**64, `nullable`, recipients such as "all" or "", empty channels, content types holding special-token
text). Every one is rendered by `gptoss.runtime.harmony.render_conversation` and by openai-harmony's
`render_conversation_for_completion` / `render_conversation`, and the ids must be equal.

The focused tests below pin each root cause the generator found, so a regression names its cause.

    python tests/runtime/test_harmony_differential.py [N] [SEED]   # counts of differing conversations, by kind
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

import pytest

from gptoss.runtime import harmony as H
from gptoss.runtime.tokenizer import Tokenizer

oh = pytest.importorskip("openai_harmony")

N_CONVERSATIONS = 3000
SEED = 7_2025


# ---------------------------------------------------------------------------------------------
# the oracle, fed the same conversation (empty strings kept: "" is not None for openai-harmony)
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    messages: list[H.Message] = field(default_factory=list)
    system: H.SystemOptions | None = H.SystemOptions()
    instructions: str | None = None
    tools: list[H.ToolSpec] = field(default_factory=list)
    for_completion: bool = True
    auto_drop: bool = True
    odd: bool = False


def _oracle_system(s: H.SystemOptions):
    effort = oh.ReasoningEffort(s.reasoning_effort.capitalize()) if s.reasoning_effort is not None else None
    return oh.SystemContent(model_identity=s.model_identity, reasoning_effort=effort,
                            knowledge_cutoff=s.knowledge_cutoff, conversation_start_date=s.current_date)


def oracle_ids(enc, case: Case) -> list[int]:
    convo = []
    if case.system is not None:
        convo.append(oh.Message.from_role_and_content(oh.Role.SYSTEM, _oracle_system(case.system)))
    if case.instructions is not None or case.tools:
        dev = oh.DeveloperContent.new()
        if case.instructions is not None:
            dev = dev.with_instructions(case.instructions)
        if case.tools:
            dev = dev.with_function_tools([oh.ToolDescription.new(t.name, t.description, parameters=t.parameters)
                                           for t in case.tools])
        convo.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, dev))
    for m in case.messages:
        convo.append(oh.Message(author=oh.Author(role=oh.Role(m.role), name=m.name),
                                content=[oh.TextContent(text=m.content)],
                                channel=m.channel, recipient=m.recipient, content_type=m.content_type))
    conversation = oh.Conversation.from_messages(convo)
    config = oh.RenderConversationConfig(auto_drop_analysis=case.auto_drop)
    if case.for_completion:
        return enc.render_conversation_for_completion(conversation, oh.Role.ASSISTANT, config=config)
    return enc.render_conversation(conversation, config=config)


def our_ids(tok, case: Case) -> list[int]:
    return H.render_conversation(case.messages, system=case.system, developer_instructions=case.instructions,
                                 tools=case.tools, for_completion=case.for_completion, tokenizer=tok,
                                 auto_drop_analysis=case.auto_drop)


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------

WORDS = ["the", "weather", "in", "Paris", "is", "sunny", "find", "a", "flight", "to", "Tokyo", "東京", "ünïcödé",
         "naïve", "42", "3.14", "-", "Hello,", "world.", "why?", "🤖", "👍🏽", "(see", "below)", "JSON", "`code`"]
ODD_PIECES = ["\n", "\r\n", "\r", "\t", "  ", "\n\n", "<|start|>", "<|constrain|>", "<|call|>", "<|endoftext|>",
              "<|channel|>", "<|message|>", "<|return|>", "\x00", "\x1f", "\x7f", "\u2028", '"', "\\", "//", "{", "}",
              "é", "\ufeff", "𝔘𝔫𝔦"]
NUMBERS = [0, 1, -1, 7, 100, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -2**63 - 1, 10**20, -10**19,
           10**30, 1e20, -1e20, 1e-7, 1e16, 1e15, 1e-5, 1e-4, 0.1, 1.5, -0.0, 0.0, 5.0, 123456.789, 1e300, 2.5e-300,
           3.14159, 1e21, 1e22, 1.7976931348623157e308, 5e-324, 12345678901234567890.0, 0.000123]
LINE_ENDS = ["", "\n", "\r\n", "\n\n", "\r\n\r\n", "\r", " ", "\n "]
PROPERTY_NAMES = ["location", "unit", "days", "query", "limit", "items", "id", "filters", "mode", "value", "x",
                  "名前", "user_id", "sort-by", "$ref"]


def text(rng: random.Random, odd: bool, max_words: int = 12) -> str:
    parts = []
    for _ in range(rng.randrange(max_words + 1)):
        parts.append(rng.choice(ODD_PIECES) if odd and rng.random() < 0.3 else rng.choice(WORDS))
        parts.append(" " if rng.random() < 0.85 else "\n")
    out = "".join(parts)
    return out if odd else out.strip()


def description(rng: random.Random, odd: bool) -> str:
    lines = [text(rng, odd, 8) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    sep = rng.choice(["\n", "\r\n"]) if odd else "\n"
    return sep.join(lines) + (rng.choice(LINE_ENDS) if odd else "")


def json_value(rng: random.Random, odd: bool, depth: int = 0):
    kind = rng.randrange(7 if depth < 2 else 4)
    if kind == 0:
        return text(rng, odd, 4)
    if kind == 1:
        if odd and rng.random() < 0.3:  # 17 significant digits: serde_json reads some of them one ulp off
            return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)
        return rng.choice(NUMBERS) if odd else rng.choice([0, 1, 10, 0.5, 2.5, 100])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind in (4, 5):
        return [json_value(rng, odd, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PROPERTY_NAMES): json_value(rng, odd, depth + 1) for _ in range(rng.randrange(4))}


def annotate(rng: random.Random, s: dict, odd: bool) -> dict:
    """description, title, examples, default, nullable: realistic ones, or odd ones when `odd`."""
    if rng.random() < 0.5:
        s["description"] = description(rng, odd) if not (odd and rng.random() < 0.1) else rng.choice([3, None, ["d"]])
    if rng.random() < (0.2 if odd else 0.05):
        s["title"] = text(rng, odd, 3) if not (odd and rng.random() < 0.2) else 7
    if rng.random() < (0.3 if odd else 0.1):
        pool = [lambda: text(rng, odd, 3), lambda: rng.choice(NUMBERS), lambda: None, lambda: [1, "a"], lambda: {"k": 1}]
        n = rng.randrange(4)
        s["examples"] = [rng.choice(pool if odd else pool[:1])() for _ in range(n)]
        if odd and rng.random() < 0.1:
            s["examples"] = rng.choice(["not a list", 5, {"a": 1}])
    if rng.random() < (0.35 if odd else 0.15):
        s["default"] = default_for(rng, s, odd)
    if odd and rng.random() < 0.15:
        s["nullable"] = rng.choice([True, True, False, "yes"])
    return s


def default_for(rng: random.Random, s: dict, odd: bool):
    if odd:
        return json_value(rng, odd)
    enum = s.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    kind = s.get("type")
    return {"string": "auto", "integer": 10, "number": 0.5, "boolean": False}.get(kind) if isinstance(kind, str) else None


def schema(rng: random.Random, odd: bool, depth: int = 0) -> dict:
    kinds = ["string", "string", "enum", "number", "integer", "boolean", "array", "object"]
    if odd:
        kinds += ["null", "type_list", "one_of", "any_of", "untyped", "const", "enum_only", "enum_odd"]
    else:
        kinds += ["one_of", "type_list"]
    kind = rng.choice(kinds if depth < 3 else kinds[:6])
    s: dict = {}
    if kind == "enum":
        s = {"type": "string", "enum": [rng.choice(WORDS) for _ in range(rng.randrange(1, 4))]}
    elif kind == "enum_odd":
        s = {"type": "string", "enum": rng.choice([[], [1, 2], ["x", 3, None], "x", ["<|call|>", "a\nb"]])}
    elif kind == "enum_only":
        s = {"enum": [json_value(rng, odd) for _ in range(rng.randrange(3))]}
    elif kind == "array":
        s = {"type": "array"}
        r = rng.random()
        if r < 0.75:
            s["items"] = schema(rng, odd, depth + 1)
        elif odd and r < 0.9:
            s["items"] = rng.choice([True, None, [], {"oneOf": []}])
    elif kind == "object":
        s = object_schema(rng, odd, depth)
    elif kind == "type_list":
        types = rng.sample(["string", "number", "integer", "boolean", "null", "array", "object"], rng.randrange(1, 4))
        if odd and rng.random() < 0.3:
            types = rng.choice([[], [1], [None, "string"], [{"type": "string"}]])
        s = {"type": types}
    elif kind in ("one_of", "any_of"):
        variants = [annotate(rng, schema(rng, odd, depth + 1), odd) for _ in range(rng.randrange(0 if odd else 2, 4))]
        s = {"oneOf" if kind == "one_of" else "anyOf": variants}
        if odd and rng.random() < 0.2 and variants and "description" in variants[0]:
            s["description"] = variants[0]["description"]  # the oracle skips a description the first variant repeats
        if odd and rng.random() < 0.05:
            s["oneOf"] = "not a list"
    elif kind == "untyped":
        s = {}
    elif kind == "const":
        s = {"const": json_value(rng, odd)}
    else:
        s = {"type": kind}
    return s


def object_schema(rng: random.Random, odd: bool, depth: int) -> dict:
    names = rng.sample(PROPERTY_NAMES, rng.randrange(0 if odd else 1, 6))
    props = {n: annotate(rng, schema(rng, odd, depth + 1), odd) for n in names}
    if odd and rng.random() < 0.1:
        props[text(rng, True, 2)] = rng.choice([True, None, 3, "string"])  # a property whose schema is not an object
    s: dict = {"type": "object", "properties": props}
    if names and rng.random() < 0.7:
        s["required"] = rng.sample(names, rng.randrange(len(names) + 1))
        if odd and rng.random() < 0.2:
            s["required"] = rng.choice([s["required"] + ["nope", 3, None], names[0], {"a": 1}])
    if odd and rng.random() < 0.1:
        del s["properties"]
    if depth > 0 and rng.random() < 0.2:
        s["description"] = description(rng, odd)
    return s


def tool(rng: random.Random, odd: bool, i: int) -> H.ToolSpec:
    name = rng.choice(["get_weather", "search", "book_flight", "lookup", "run_sql", "f"]) + f"_{i}"
    if odd and rng.random() < 0.15:
        return H.ToolSpec(name, description(rng, odd), None)
    params = object_schema(rng, odd, 0)
    if odd and rng.random() < 0.15:
        params = rng.choice([{}, {"type": "string"}, schema(rng, odd, 1), {"oneOf": [{"type": "string"}, {"type": "number"}]}])
    if rng.random() < 0.2:
        params["description"] = description(rng, odd)
    return H.ToolSpec(name, description(rng, odd) if rng.random() < 0.9 else "", params)


def system(rng: random.Random, odd: bool) -> H.SystemOptions | None:
    if not odd:
        return H.SystemOptions(reasoning_effort=rng.choice(H.REASONING_EFFORTS),
                               current_date=rng.choice([None, "2025-08-05"]))
    if rng.random() < 0.1:
        return None

    def field_(default):
        return rng.choice([default, None, "", text(rng, True, 3)])

    return H.SystemOptions(reasoning_effort=rng.choice([*H.REASONING_EFFORTS, None]),
                           knowledge_cutoff=field_("2024-06"), current_date=field_("2025-08-05"),
                           model_identity=field_(H.DEFAULT_MODEL_IDENTITY))


CONTENT_TYPES = [None, None, None, "<|constrain|>json", "json", "json <|constrain|>x", "<|constrain|>", "",
                 "<|constrain|><|call|>", "<|constrain|> json", "text/plain", " <|constrain|>json", "<|return|>"]
RECIPIENTS = [None, None, "functions.get_weather_0", "all", "user", "assistant", "", "browser.search", "to=x", "a b"]
CHANNELS = ["analysis", "commentary", "final", None, "", "final<|end|>", "weird channel"]


def odd_message(rng: random.Random, tools: list[H.ToolSpec]) -> H.Message:
    role = rng.choice(["user", "assistant", "assistant", "tool"])
    name = rng.choice([None, None, "bob", "", "a b"]) if role != "tool" else \
        rng.choice([f"functions.{t.name}" for t in tools] + ["functions.x", "browser.search", ""])
    return H.Message(role, text(rng, True), channel=rng.choice(CHANNELS), recipient=rng.choice(RECIPIENTS),
                     content_type=rng.choice(CONTENT_TYPES), name=name)


def realistic_turns(rng: random.Random, tools: list[H.ToolSpec]) -> list[H.Message]:
    out = []
    for _ in range(rng.randrange(1, 4)):
        out.append(H.Message("user", text(rng, False)))
        if rng.random() < 0.3:
            break  # the user's turn is the last one: the model answers next
        out.append(H.Message("assistant", text(rng, False), channel="analysis"))
        if tools and rng.random() < 0.5:
            t = rng.choice(tools)
            if rng.random() < 0.3:
                out.append(H.Message("assistant", text(rng, False), channel="commentary"))  # a preamble
            out.append(H.Message("assistant", '{"location": "Paris"}', channel="commentary",
                                 recipient=f"functions.{t.name}", content_type=rng.choice(["<|constrain|>json", "json"])))
            out.append(H.Message("tool", '{"ok": true}', channel="commentary", recipient="assistant",
                                 name=f"functions.{t.name}"))
            if rng.random() < 0.2:
                break  # the model continues after the tool result
            out.append(H.Message("assistant", text(rng, False), channel="analysis"))
        out.append(H.Message("assistant", text(rng, False), channel="final"))
    return out


def conversation(rng: random.Random) -> Case:
    odd = rng.random() < 0.5
    tools = [tool(rng, odd, i) for i in range(rng.choice([0, 0, 1, 2, 3]))]
    instructions = rng.choice([None, text(rng, odd)] + (["", description(rng, True)] if odd else []))
    messages = realistic_turns(rng, tools)
    if odd:
        for _ in range(rng.randrange(4)):
            messages.insert(rng.randrange(len(messages) + 1), odd_message(rng, tools))
    return Case(messages, system(rng, odd), instructions, tools, for_completion=rng.random() < 0.8,
                auto_drop=rng.random() < 0.8, odd=odd)


def cases(n: int = N_CONVERSATIONS, seed: int = SEED):
    for i in range(n):
        yield i, conversation(random.Random(seed * 1_000_003 + i))


# ---------------------------------------------------------------------------------------------
# comparing
# ---------------------------------------------------------------------------------------------


def first_difference(enc, mine: list[int], theirs: list[int]) -> str:
    i = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    lo = max(0, i - 12)
    return (f"at token {i}: ours {enc.decode(mine[lo:i + 12])!r} {mine[i:i + 4]}\n"
            f"      oracle {enc.decode(theirs[lo:i + 12])!r} {theirs[i:i + 4]}")


def differences(enc, tok, n: int = N_CONVERSATIONS, seed: int = SEED):
    """(index, case, description) for each generated conversation we render differently from the oracle."""
    out = []
    for i, case in cases(n, seed):
        theirs = oracle_ids(enc, case)
        try:
            mine = our_ids(tok, case)
        except Exception as e:  # noqa: BLE001 - a crash is a difference too
            out.append((i, case, f"ours raised {type(e).__name__}: {e}"))
            continue
        if mine != theirs:
            out.append((i, case, first_difference(enc, mine, theirs)))
    return out


def test_thousands_of_generated_conversations_render_like_openai_harmony(enc, tok):
    start = time.perf_counter()
    diffs = differences(enc, tok)
    elapsed = time.perf_counter() - start
    report = "\n".join(f"conversation {i} ({'odd' if c.odd else 'realistic'}): {d}" for i, c, d in diffs[:5])
    assert not diffs, f"{len(diffs)} of {N_CONVERSATIONS} conversations differ from openai-harmony:\n{report}"
    assert elapsed < 60, f"the differential run took {elapsed:.1f} s; keep it CI-sized"


def test_the_generator_covers_the_odd_inputs():
    """The generator really produces what it claims (a silent generator would prove nothing)."""
    seen = {"odd": 0, "realistic": 0, "tools": 0, "call": 0, "tool result": 0, "all": 0, "constrain text": 0,
            "crlf description": 0, "trailing newline description": 0, "empty system field": 0, "nullable": 0}
    for _, c in cases(600):
        seen["odd" if c.odd else "realistic"] += 1
        seen["tools"] += bool(c.tools)
        seen["call"] += any(m.role == "assistant" and m.recipient for m in c.messages)
        seen["tool result"] += any(m.role == "tool" for m in c.messages)
        seen["all"] += any(m.recipient == "all" for m in c.messages)
        seen["constrain text"] += any(m.content_type == "json <|constrain|>x" for m in c.messages)
        seen["crlf description"] += any("\r\n" in t.description for t in c.tools)
        seen["trailing newline description"] += any(t.description.endswith("\n") for t in c.tools)
        seen["empty system field"] += c.system is not None and "" in (c.system.knowledge_cutoff, c.system.current_date,
                                                                      c.system.model_identity)
        seen["nullable"] += any('"nullable"' in repr(t.parameters).replace("'", '"') for t in c.tools)
    assert all(v >= 10 for v in seen.values()), seen


# ---------------------------------------------------------------------------------------------
# `python tests/runtime/test_harmony_differential.py [N] [SEED]`: counts, by kind, and the first few differences
# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else N_CONVERSATIONS
    seed = int(argv[2]) if len(argv) > 2 else SEED
    e = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    start = time.perf_counter()
    diffs = differences(e, Tokenizer.from_tiktoken(), n, seed)
    elapsed = time.perf_counter() - start
    odd = sum(c.odd for _, c in cases(n, seed))
    bad_odd = sum(c.odd for _, c, _ in diffs)
    print(f"{n} conversations in {elapsed:.1f} s: {len(diffs)} differ "
          f"(realistic {len(diffs) - bad_odd}/{n - odd}, odd {bad_odd}/{odd})")
    for i, c, d in diffs[:20]:
        print(f"- conversation {i} ({'odd' if c.odd else 'realistic'}): {d}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
