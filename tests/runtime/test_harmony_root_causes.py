"""Each root cause the differential test (test_harmony_differential.py) found in our harmony rendering, pinned by a
focused case compared token for token with openai-harmony, the oracle."""

from __future__ import annotations

import random

import pytest

from gptoss.runtime import harmony as H

from test_harmony_differential import Case, oracle_ids, our_ids

oh = pytest.importorskip("openai_harmony")



def user(text_: str = "go") -> H.Message:
    return H.Message("user", text_)


def with_tool(parameters=None, desc: str = "Does f.") -> Case:
    return Case([user()], tools=[H.ToolSpec("f", desc, parameters)])


def prop(**schema) -> dict:
    return {"type": "object", "properties": {"a": schema}}


ROOT_CAUSES = {
    # tool descriptions are split as Rust's str::lines splits them
    "description ending in \\n adds no empty // line": with_tool(desc="Gets the weather.\n"),
    "description with \\r\\n loses the \\r": with_tool(desc="line one\r\nline two\r\n"),
    "description with a lone \\r keeps it": with_tool(desc="a\rb\r"),
    # property comments
    "non-string examples keep the Examples header": with_tool(prop(type="string", examples=[3, "x", None])),
    "examples of numbers only": with_tool(prop(type="number", examples=[1, 2])),
    "oneOf property: examples come before the description": with_tool(prop(
        oneOf=[{"type": "string"}, {"type": "number"}], description="D", examples=["e"], title="T")),
    "oneOf variant repeating the property's description gets no comment": with_tool(prop(
        oneOf=[{"type": "string", "description": "D"}, {"type": "number", "description": "D"}], description="D")),
    "oneOf first variant under a property description gets no comment": with_tool(prop(
        oneOf=[{"type": "string", "description": "S", "default": "x"}, {"type": "number", "description": "N"}],
        description="D")),
    "non-string description and title are skipped": with_tool(prop(type="string", description=3, title=["t"])),
    "object description that is not a string": with_tool({"type": "object", "description": 5, "properties": {}}),
    # defaults
    "empty enum with a default quotes it": with_tool(prop(type="string", enum=[], default="d")),
    "enum that is not a list quotes the default": with_tool(prop(type="string", enum="d", default="d")),
    "enum default under a oneOf type is JSON": with_tool({"type": "array", "items": {"oneOf": [
        {"type": "string", "enum": ["a\"b"], "default": "a\"b"}]}}),
    "numbers as serde_json prints them": with_tool({"type": "object", "properties": {
        f"n{i}": {"type": "number", "default": v} for i, v in enumerate(
            [1e20, 1e-7, 10**20, -10**19, 2**64, 2**64 - 1, -2**63 - 1, 1e-5, 1e16, 1e15, 5.0, -0.0, 0.1,
             7.352055509855619e-16, 12345678901234567890.0, 5e-324, 1.7976931348623157e308])}}),
    "nested default with escapes": with_tool(prop(default={"k": ["x\ny\x01\"", 1.5, None, True], "1": {}})),
    # types
    "nullable adds | null": with_tool({"type": "object", "properties": {
        "a": {"type": "string", "nullable": True}, "b": {"type": ["string", "null"], "nullable": True},
        "c": {"oneOf": [{"type": "string", "nullable": True}]}, "d": {"type": "string", "nullable": "yes"}}}),
    "array items that are not a schema": with_tool({"type": "object", "properties": {
        "a": {"type": "array", "items": True}, "b": {"type": "array", "items": None}}}),
    "type list with non-string entries": with_tool({"type": "object", "properties": {
        "a": {"type": [1, "string"]}, "b": {"type": []}, "c": {"type": [None]}}}),
    "required that is not a list of strings": with_tool({"type": "object", "required": "ab",
                                                          "properties": {"a": {}, "b": {}}}),
    "required with non-string entries": with_tool({"type": "object", "required": ["a", 3, None],
                                                    "properties": {"a": {}, "b": {}}}),
    "properties that are not an object": with_tool({"type": "object", "properties": ["a", "b"]}),
    "oneOf that is not a list": with_tool(prop(oneOf="x", type="string", description="D", default="z")),
    # the system message: None leaves a field out, "" is printed
    "empty system fields are printed": Case([user()], H.SystemOptions(
        model_identity="", knowledge_cutoff="", current_date="", reasoning_effort=None)),
    "empty knowledge cutoff": Case([user()], H.SystemOptions(knowledge_cutoff="")),
    # message headers
    "recipient all is left out but ends in <|call|>": Case([user(), H.Message(
        "assistant", "hi", channel="commentary", recipient="all")], for_completion=False),
    "empty channel, recipient and content type are rendered": Case([user(), H.Message(
        "assistant", "x", channel="", recipient="", content_type="")]),
    "empty author name": Case([H.Message("user", "x", name=""), H.Message("tool", "r", name="")]),
    "content type holding <|constrain|> later is text": Case([user(), H.Message(
        "assistant", "{}", channel="commentary", recipient="functions.f", content_type="json <|constrain|>x")]),
}


@pytest.mark.parametrize("name", ROOT_CAUSES)
def test_root_cause_renders_like_openai_harmony(enc, tok, name):
    case = ROOT_CAUSES[name]
    assert tok.decode(our_ids(tok, case)) == enc.decode(oracle_ids(enc, case))
    assert our_ids(tok, case) == oracle_ids(enc, case)


def test_a_content_type_never_injects_a_special_token(enc, tok):
    """A content type is header text: it must not smuggle special tokens into the prompt.

    Decision (matching openai-harmony 0.0.8, whose Rust renderer does exactly this): ` {content_type}` is encoded
    as ordinary text, so "json <|constrain|>x", "<|call|>" or "<|constrain|><|return|>" yield no special token
    beyond the message's own. The one exception is a content type that *starts* with `<|constrain|>`: that prefix
    is harmony's constrain marker (`<|constrain|>json` on a tool call, what gpt-oss itself generates), so it is
    the special token 200003, once, in that place, as the oracle renders it; whatever follows it is text again.
    Before this fix we split the content type on every `<|constrain|>` and emitted 200003 for each one, anywhere:
    a special-token injection reachable from an assistant history entry. We do not diverge from the oracle here:
    it never emits a special token the format does not define at that position.
    """
    constrain = tok.token_id("<|constrain|>")
    for content_type, constrains in [("json <|constrain|>x", 0), ("<|call|>", 0), ("x<|constrain|>json", 0),
                                     ("<|constrain|>json", 1), ("<|constrain|><|constrain|>json", 1),
                                     ("<|constrain|><|return|><|end|>", 1)]:
        case = Case([H.Message("assistant", "{}", channel="commentary", recipient="functions.f",
                               content_type=content_type)], system=None, for_completion=False)
        mine = our_ids(tok, case)
        assert mine == oracle_ids(enc, case), content_type
        specials = [t for t in mine if tok.is_special(t)]
        names = ["<|start|>", "<|channel|>", *["<|constrain|>"] * constrains, "<|message|>", "<|call|>"]
        assert specials == [tok.token_id(n) for n in names], content_type
        assert mine.count(constrain) == constrains


def test_a_tool_message_needs_a_name(tok):
    """openai-harmony refuses a tool message with no author name ("Tools should have a name!"); so do we."""
    with pytest.raises(ValueError, match="tool message needs a name"):
        H.render_conversation([H.Message("tool", "{}")], tokenizer=tok)


def test_numbers_read_and_printed_as_serde_json_does(enc, tok):
    """Thousands of random float64s and big integers as defaults, in one tool: serde_json's best-effort reader
    brings some 17-digit floats back one ulp off, and ryu prints them; we print what the oracle prints."""
    import math
    import struct

    rng = random.Random(5)
    values: list = []
    while len(values) < 4000:
        kind = rng.randrange(4)
        if kind == 0:
            x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if math.isfinite(x):
                values.append(x)
        elif kind == 1:
            values.append(rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30))
        elif kind == 2:
            values.append(round(rng.uniform(0, 1000), rng.randint(0, 6)))
        else:
            values.append(rng.choice([1, -1]) * rng.getrandbits(rng.randint(1, 300)))
    case = with_tool({"type": "object", "properties": {f"p{i}": {"default": v} for i, v in enumerate(values)}})
    assert our_ids(tok, case) == oracle_ids(enc, case)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 10**400], ids=["nan", "inf", "10**400"])
def test_a_default_the_oracle_cannot_read_is_a_clear_error(enc, tok, bad):
    case = with_tool(prop(default=bad))
    with pytest.raises(Exception):
        oracle_ids(enc, case)
    with pytest.raises(ValueError, match="JSON number|float64's range"):
        our_ids(tok, case)
