"""Chat streaming, strictly: a scripted model writes a known harmony reply, the real chat machinery (render,
generate, stream parser, ChatResult) turns it into events and a result, and every piece is accounted for."""

from types import SimpleNamespace

import pytest

from gptoss.runtime import chat
from gptoss.runtime.generation import TokenEvent
from gptoss.runtime.tokenizer import Tokenizer


class ScriptedModel:
    """Answers every prompt with `reply` (harmony text, special tokens allowed), token by token."""

    def __init__(self, tokenizer: Tokenizer, reply: str):
        self.tokenizer = tokenizer
        self.reply = tokenizer.encoding.encode(reply, allowed_special="all")

    def _tok(self):
        return self.tokenizer

    def new_cache(self, capacity=None):
        return SimpleNamespace(last_reuse=0)

    def generate(self, ids, max_new_tokens, stop_tokens, cache, **sampling):
        for i, token in enumerate(self.reply[:max_new_tokens]):
            stop = token in stop_tokens
            yield TokenEvent(token, "", i, stop)
            if stop:
                return


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle):
    from gptoss.bundle import load_manifest

    return Tokenizer.from_dir(load_manifest(tiny_bundle("cpu")).tokenizer_path())


def chat_of(tokenizer, reply, **kw):
    stream = chat.run_chat(ScriptedModel(tokenizer, reply), [{"role": "user", "content": "Weather?"}], stream=True,
                           **kw)
    events = list(stream)
    by_channel: dict = {}
    for e in events:
        by_channel[e.channel] = by_channel.get(e.channel, "") + e.text
    return stream.result, by_channel


def test_analysis_then_final_add_up_to_the_result(tokenizer):
    reply = ("<|channel|>analysis<|message|>They ask about the weather; I know none.<|end|>"
             "<|start|>assistant<|channel|>final<|message|>I can't see outside, sorry.<|return|>")
    result, by_channel = chat_of(tokenizer, reply)
    assert by_channel == {"analysis": "They ask about the weather; I know none.",
                          "final": "I can't see outside, sorry."}
    assert (result.analysis, result.final, result.finish_reason) == (by_channel["analysis"], by_channel["final"], "stop")
    assert len(result.messages) == 2 and result.token_ids == tokenizer.encoding.encode(reply, allowed_special="all")


def test_a_tool_call_ends_the_turn_with_its_arguments(tokenizer):
    reply = ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>')
    result, by_channel = chat_of(tokenizer, reply)
    assert result.finish_reason == "tool_call"
    (call,) = result.tool_calls
    assert (call.name, call.arguments_json) == ("get_weather", {"city": "Paris"})
    assert by_channel == {"commentary": '{"city": "Paris"}'}


@pytest.mark.parametrize("reply", ["<|channel|>final<|message|>Sunny, I guess.<|call|>",
                                   "<|channel|>commentary to=all<|message|>Sunny, I guess.<|call|>"])
def test_a_call_to_no_tool_is_an_ordinary_stop(tokenizer, reply):
    """A <|call|> that closes no tool call ends the reply like <|return|> (harmony.StreamParser): finish_reason
    "stop", where it used to be "tool_call" with an empty tool_calls."""
    result, by_channel = chat_of(tokenizer, reply)
    assert (result.finish_reason, result.tool_calls) == ("stop", [])
    assert "Sunny, I guess." in (result.final, result.commentary)


def test_a_reply_cut_by_the_budget_is_length(tokenizer):
    reply = "<|channel|>final<|message|>" + "word " * 50 + "<|return|>"
    result, by_channel = chat_of(tokenizer, reply, max_new_tokens=12)
    assert result.finish_reason == "length" and len(result.token_ids) == 12
    assert by_channel["final"] == result.final and result.final.startswith("word word")
