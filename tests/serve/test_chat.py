"""/v1/chat/completions and /v1/models through the official `openai` client, against a live server on a tiny bundle.

What each test proves, since the tiny model is random: the reply and its usage match the runtime's own chat on the
same seed (the wiring); prompts match openai-harmony's rendering token for token (an independent oracle); tool calls
and reasoning are parsed from a scripted model that emits their harmony tokens (the parse path, not the model).
"""

import json
import urllib.request

import openai
import openai_harmony as oh
import pytest

from live_server import MODEL, WEATHER, RecordingBackend, ScriptedBackend, served

SYSTEM = {"role": "system", "content": "You are terse."}
FINISH = {"stop": "stop", "length": "length", "tool_call": "tool_calls"}


def ask(client, content="Name a colour.", **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("seed", 7)
    return client.chat.completions.create(model=MODEL, messages=[SYSTEM, {"role": "user", "content": content}], **kw)


def test_models_and_health(live):
    client = live.client()
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "gptoss"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    health = json.load(urllib.request.urlopen(f"{live.url}/health"))
    assert health["status"] == "ok" and health["model"] == MODEL and health["parallel"] == 4


def test_chat_matches_the_runtime_on_the_same_seed(live, model, oracle):
    reply = ask(live.client())
    direct = model.chat([SYSTEM, {"role": "user", "content": "Name a colour."}], reasoning_effort="low",
                        max_new_tokens=12, seed=7)
    assert direct.commentary == "" and not direct.tool_calls      # the reply is all content: comparable as is
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert choice.message.role == "assistant"
    assert (choice.message.content or "") == direct.final
    assert (getattr(choice.message, "reasoning_content", None) or "") == direct.analysis
    assert choice.finish_reason == FINISH[direct.finish_reason]
    expected_prompt = oracle([oh.Message.from_role_and_content(oh.Role.USER, "Name a colour.")],
                             instructions="You are terse.")
    assert live.backend.prompts[-1] == expected_prompt
    assert reply.usage.prompt_tokens == len(expected_prompt)
    assert reply.usage.completion_tokens == len(direct.token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_reassembles_the_same_reply(live):
    client = live.client()
    whole = ask(client, "Count to three.")
    chunks = list(ask(client, "Count to three.", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_is_in_the_rendered_prompt(live, oracle, model, effort):
    ask(live.client(), "Hi", reasoning_effort=effort, max_tokens=1)
    prompt = live.backend.prompts[-1]
    assert prompt == oracle([oh.Message.from_role_and_content(oh.Role.USER, "Hi")], effort=effort,
                            instructions="You are terse.")
    assert f"Reasoning: {effort}" in model.decode(prompt)


def call_tokens(enc, arguments='{"location": "Paris"}'):
    return enc.encode("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                      f"{arguments}<|call|>", allowed_special="all")


def test_tool_call_round_trip(model, enc, oracle, live):
    """A scripted model calls get_weather: the client gets tool_calls; its answer goes back to the real server,
    which renders the call and the result exactly as openai-harmony does."""
    user = {"role": "user", "content": "Weather in Paris?"}
    with served(ScriptedBackend(model, call_tokens(enc))) as stub:
        reply = stub.client().chat.completions.create(model=MODEL, messages=[user], tools=[WEATHER], max_tokens=50)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"location": "Paris"}

    history = [user, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}]
    answer = live.client().chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=4,
                                                   seed=1)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    expected = oracle([
        oh.Message.from_role_and_content(oh.Role.USER, "Weather in Paris?"),
        oh.Message.from_role_and_content(oh.Role.ASSISTANT, call.function.arguments).with_channel("commentary")
        .with_recipient("functions.get_weather").with_content_type("<|constrain|>json"),
        oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "functions.get_weather"), '{"celsius": 21}')
        .with_channel("commentary").with_recipient("assistant"),
    ], tools=[WEATHER])
    assert live.backend.prompts[-1] == expected


def test_streamed_tool_call(model, enc):
    with served(ScriptedBackend(model, call_tokens(enc))) as stub:
        chunks = list(stub.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert {d.index for d in deltas} == {0}
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_reasoning_comes_back_as_reasoning_content(model, enc):
    script = enc.encode("<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final"
                        "<|message|>Blue.<|return|>", allowed_special="all")
    with served(ScriptedBackend(model, script)) as stub:
        client = stub.client()
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Colour?"}])
        chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Colour?"}],
                                                     stream=True))
    message = reply.choices[0].message
    assert (message.reasoning_content, message.content, reply.choices[0].finish_reason) == ("Let me think.", "Blue.",
                                                                                           "stop")
    assert reply.usage.completion_tokens == len(script)
    assert 0 < reply.usage.completion_tokens_details.reasoning_tokens < len(script)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Let me think."
    assert "".join(d.content or "" for d in deltas) == "Blue."


def test_named_tool_choice_forces_the_call(live, model):
    reply = ask(live.client(), "Weather?", tools=[WEATHER], max_tokens=6,
                tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert model.decode(live.backend.prompts[-1]).endswith(
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>")
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"                     # what the model wrote is its arguments
    assert reply.choices[0].finish_reason in ("length", "tool_calls")


def test_tool_choice_none_hides_the_tools(live, model):
    ask(live.client(), "Weather?", tools=[WEATHER], tool_choice="none", max_tokens=1)
    assert "get_weather" not in model.decode(live.backend.prompts[-1])


def test_stop_strings_cut_the_content(live):
    client = live.client()
    full = ask(client, "Tell me a story.", max_tokens=24).choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 3]
    cut = full[:full.find(stop)]
    reply = ask(client, "Tell me a story.", max_tokens=24, stop=[stop, "never appears here"])
    assert reply.choices[0].message.content == cut and reply.choices[0].finish_reason == "stop"
    chunks = list(ask(client, "Tell me a story.", max_tokens=24, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_shared_prefix_is_served_from_the_cache(model, oracle):
    """Requests that share a system prompt reuse its KV rows (a checkpoint at its end: the tiny model's sliding
    window is 8 tokens, so without one nothing past the window could be reused); replies do not change."""
    system = {"role": "system", "content": "You answer questions about the sea. " * 12}
    prefix = len(oracle([], instructions=system["content"], for_completion=False))
    with served(RecordingBackend(model), parallel=1) as server:
        client = server.client()

        def turn(*messages):
            return client.chat.completions.create(model=MODEL, messages=[system, *messages], max_tokens=8, seed=3)

        first = turn({"role": "user", "content": "Why is it salty?"})
        second = turn({"role": "user", "content": "How deep is it?"})
        follow = turn({"role": "user", "content": "How deep is it?"}, second.choices[0].message.model_dump(
            exclude_none=True), {"role": "user", "content": "And the Pacific?"})
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert prefix <= second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    assert follow.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens
    direct = model.chat([system, {"role": "user", "content": "How deep is it?"}], max_new_tokens=8, seed=3)
    assert second.choices[0].message.content == direct.final
