"""/v1/responses through the official `openai` client: the subset gpt-oss's reference server implements (input items,
reasoning items, function calls, streaming events, previous_response_id).

As in test_chat.py: prompts are checked against openai-harmony's rendering, function calls and reasoning are parsed
from a scripted model that emits their harmony tokens, the reply text against the chat endpoint on the same seed."""

import json

import openai
import openai_harmony as oh
import pytest

from live_server import MODEL, WEATHER, ScriptedBackend, served

TOOL = {"type": "function", **WEATHER["function"]}          # the Responses API's flat function tool
USER = oh.Message.from_role_and_content(oh.Role.USER, "Weather in Paris?")


def call_message(arguments):
    return (oh.Message.from_role_and_content(oh.Role.ASSISTANT, arguments).with_channel("commentary")
            .with_recipient("functions.get_weather").with_content_type("<|constrain|>json"))


def tool_message(output):
    return (oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "functions.get_weather"), output)
            .with_channel("commentary").with_recipient("assistant"))


def test_response_matches_chat_on_the_same_seed(live, oracle, model):
    client = live.client()
    r = client.responses.create(model=MODEL, input="Name a colour.", instructions="You are terse.",
                                max_output_tokens=8, reasoning={"effort": "high"}, extra_body={"seed": 5})
    prompt = live.backend.prompts[-1]
    assert prompt == oracle([oh.Message.from_role_and_content(oh.Role.USER, "Name a colour.")], effort="high",
                            instructions="You are terse.")
    chat = client.chat.completions.create(model=MODEL, max_tokens=8, seed=5, reasoning_effort="high", messages=[
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}])
    assert r.object == "response" and r.model == MODEL and r.id.startswith("resp_")
    assert r.output_text == (chat.choices[0].message.content or "")
    assert r.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")
    assert r.usage.input_tokens == len(prompt) and r.usage.output_tokens == chat.usage.completion_tokens
    assert r.reasoning.effort == "high"


def test_streaming_events(live):
    client = live.client()
    whole = client.responses.create(model=MODEL, input="Count to three.", max_output_tokens=10,
                                    extra_body={"seed": 2})
    events = list(client.responses.create(model=MODEL, input="Count to three.", max_output_tokens=10,
                                          extra_body={"seed": 2}, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == f"response.{whole.status}"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert added == done == [item.id for item in events[-1].response.output]
    assert events[-1].response.output_text == whole.output_text


def call_tokens(enc):
    return enc.encode('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                      '{"location": "Paris"}<|call|>', allowed_special="all")


def test_function_call_round_trip(model, enc, oracle, live):
    with served(ScriptedBackend(model, call_tokens(enc))) as stub:
        r = stub.client().responses.create(model=MODEL, input="Weather in Paris?", tools=[TOOL])
        events = list(stub.client().responses.create(model=MODEL, input="Weather in Paris?", tools=[TOOL],
                                                     stream=True))
    (call,) = r.output
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert json.loads(call.arguments) == {"location": "Paris"} and call.call_id.startswith("call_")
    assert r.status == "completed"
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed == next(e.arguments for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(streamed) == {"location": "Paris"}

    answer = live.client().responses.create(model=MODEL, tools=[TOOL], max_output_tokens=4, input=[
        {"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}])
    assert answer.status in ("completed", "incomplete")
    assert live.backend.prompts[-1] == oracle([USER, call_message(call.arguments), tool_message('{"celsius": 21}')],
                                              tools=[WEATHER])


def test_reasoning_items(model, enc):
    script = enc.encode("<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final"
                        "<|message|>Blue.<|return|>", allowed_special="all")
    with served(ScriptedBackend(model, script)) as stub:
        r = stub.client().responses.create(model=MODEL, input="Colour?")
        events = list(stub.client().responses.create(model=MODEL, input="Colour?", stream=True))
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and [c.text for c in reasoning.content] == ["Let me think."]
    assert message.type == "message" and r.output_text == "Blue."
    assert r.usage.output_tokens_details.reasoning_tokens > 0
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "Let me think."
    assert [e.text for e in events if e.type == "response.reasoning_text.done"] == ["Let me think."]


@pytest.mark.parametrize("answering_tool", [True, False])
def test_reasoning_item_is_rendered_only_for_the_turn_in_progress(live, oracle, answering_tool):
    """The reference server's rule: a reasoning item is kept only after the last assistant message, while a
    function call's output is being answered (harmony drops the analysis of finished turns)."""
    thought = {"type": "reasoning", "id": "rs_1", "summary": [],
               "content": [{"type": "reasoning_text", "text": "I should call the tool."}]}
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"location": "Paris"}'}
    items = [{"role": "user", "content": "Weather in Paris?"}, thought, call,
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    if not answering_tool:
        items += [{"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "Thanks!"}]
    live.client().responses.create(model=MODEL, input=items, tools=[TOOL], max_output_tokens=1)
    analysis = oh.Message.from_role_and_content(oh.Role.ASSISTANT, "I should call the tool.").with_channel("analysis")
    expected = [USER, *([analysis] if answering_tool else []), call_message(call["arguments"]), tool_message("sunny")]
    if not answering_tool:
        expected += [oh.Message.from_role_and_content(oh.Role.ASSISTANT, "It is sunny.").with_channel("final"),
                     oh.Message.from_role_and_content(oh.Role.USER, "Thanks!")]
    assert live.backend.prompts[-1] == oracle(expected, tools=[WEATHER])


def test_previous_response_id_continues_the_conversation(live, oracle):
    client = live.client()
    first = client.responses.create(model=MODEL, input="Hi", instructions="Be kind.", max_output_tokens=6,
                                    extra_body={"seed": 4})
    second = client.responses.create(model=MODEL, input="And then?", previous_response_id=first.id,
                                     max_output_tokens=2)
    expected = oracle([oh.Message.from_role_and_content(oh.Role.USER, "Hi"),
                       oh.Message.from_role_and_content(oh.Role.ASSISTANT, first.output_text).with_channel("final"),
                       oh.Message.from_role_and_content(oh.Role.USER, "And then?")], instructions="Be kind.")
    assert live.backend.prompts[-1] == expected
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_unknown")
