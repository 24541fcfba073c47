"""Bad requests: each gets its status (errors.py: 400 shape, 404 unknown model or route, 413 over the context,
422 value out of range, 401 without the --api-key) and OpenAI's error JSON, never a 500.

Raw bodies go through urllib (the openai client would refuse some of them itself); the official client is shown
mapping the statuses to its own exception classes; a sweep of odd values at every field finds no 500.
"""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import openai
import pytest

from live_server import MODEL, RecordingBackend, served

USER = [{"role": "user", "content": "Hi"}]
CHAT = {"model": MODEL, "messages": USER, "max_tokens": 1}
RESPONSES = {"model": MODEL, "input": "Hi", "max_output_tokens": 1}
LONG = "sea " * 5000                                # past the tiny bundle's 4096-token context
WEATHER_FN = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def tool(**fn):
    return [{"type": "function", "function": {**WEATHER_FN, **fn}}]


# (what, changes to CHAT, status, param)
CHAT_CASES = [
    ("unknown model", {"model": "gpt-4o"}, 404, "model"),
    ("no model", {"model": None}, 400, "model"),
    ("no messages", {"messages": None}, 400, "messages"),
    ("empty messages", {"messages": []}, 400, "messages"),
    ("messages a string", {"messages": "Hi"}, 400, "messages"),
    ("a message not an object", {"messages": ["Hi"]}, 400, "messages[0]"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "Hi"}]}, 400, "messages[0].role"),
    ("content a number", {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ("no content", {"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ("an image part", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content[0]"),
    ("a tool result for no call", {"messages": [*USER, {"role": "tool", "tool_call_id": "x", "content": "1"}]}, 400,
     "messages[1].tool_call_id"),
    ("tool_calls not a list", {"messages": [{"role": "assistant", "tool_calls": {}}, *USER]}, 400,
     "messages[0].tool_calls"),
    ("prompt over the context", {"messages": [{"role": "user", "content": LONG}]}, 413, "messages"),
    ("temperature -1", {"temperature": -1}, 422, "temperature"),
    ("temperature 3", {"temperature": 3}, 422, "temperature"),
    ("temperature NaN", {"temperature": float("nan")}, 422, "temperature"),
    ("temperature a string", {"temperature": "hot"}, 400, "temperature"),
    ("top_p 2", {"top_p": 2}, 422, "top_p"),
    ("top_p 0", {"top_p": 0}, 422, "top_p"),
    ("top_k -1", {"top_k": -1}, 422, "top_k"),
    ("top_k 1.5", {"top_k": 1.5}, 400, "top_k"),
    ("min_p 1.5", {"min_p": 1.5}, 422, "min_p"),
    ("repetition_penalty 0", {"repetition_penalty": 0}, 422, "repetition_penalty"),
    ("max_tokens 0", {"max_tokens": 0}, 422, "max_tokens"),
    ("max_completion_tokens -5", {"max_completion_tokens": -5}, 422, "max_completion_tokens"),
    ("max_tokens a string", {"max_tokens": "ten"}, 400, "max_tokens"),
    ("seed 1.5", {"seed": 1.5}, 400, "seed"),
    ("five stop strings", {"stop": list("abcde")}, 422, "stop"),
    ("stop a number", {"stop": 3}, 400, "stop"),
    ("reasoning_effort extreme", {"reasoning_effort": "extreme"}, 422, "reasoning_effort"),
    ("stream a string", {"stream": "yes"}, 400, "stream"),
    ("n 2", {"n": 2}, 400, "n"),
    ("tools not a list", {"tools": {"type": "function"}}, 400, "tools"),
    ("a tool schema of type array", {"tools": tool(parameters={"type": "array"})}, 422,
     "tools[0].function.parameters"),
    ("a tool schema that is a string", {"tools": tool(parameters="object")}, 422, "tools[0].function.parameters"),
    ("a tool schema that is a list", {"tools": tool(parameters=[])}, 422, "tools[0].function.parameters"),
    ("a tool name with spaces", {"tools": tool(name="get weather")}, 422, "tools[0].function.name"),
    ("a tool of another type", {"tools": [{"type": "code_interpreter"}]}, 400, "tools[0].type"),
    ("tool_choice sometimes", {"tools": tool(), "tool_choice": "sometimes"}, 422, "tool_choice"),
    ("tool_choice names no tool", {"tools": tool(), "tool_choice": {"type": "function", "function": {"name": "f"}}},
     422, "tool_choice"),
]

RESPONSES_CASES = [
    ("unknown model", {"model": "gpt-4o"}, 404, "model"),
    ("no input", {"input": None}, 400, "input"),
    ("empty input", {"input": []}, 400, "input"),
    ("an unknown role", {"input": [{"role": "wizard", "content": "Hi"}]}, 400, "input[0].role"),
    ("an output for no call", {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, 400,
     "input[0].call_id"),
    ("prompt over the context", {"input": LONG}, 413, "messages"),
    ("temperature -1", {"temperature": -1}, 422, "temperature"),
    ("top_p 2", {"top_p": 2}, 422, "top_p"),
    ("max_output_tokens 0", {"max_output_tokens": 0}, 422, "max_output_tokens"),
    ("reasoning effort max", {"reasoning": {"effort": "max"}}, 422, "reasoning.effort"),
    ("a tool schema of type string", {"tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]},
     422, "tools[0].parameters"),
    ("an unknown previous_response_id", {"previous_response_id": "resp_nope"}, 400, "previous_response_id"),
]


@dataclass
class Reply:
    status_code: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


def http(url: str, data: bytes | None = None, method: str | None = None, headers: dict | None = None) -> Reply:
    """A plain HTTP request; an error status is a Reply too."""
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})},
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def post(live, path: str, body) -> Reply:
    return http(f"{live.url}{path}", json.dumps(body).encode())       # json.dumps writes NaN as NaN


def assert_error(response: Reply, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize("what, change, status, param", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
def test_bad_chat_requests(live, what, change, status, param):
    error = assert_error(post(live, "/v1/chat/completions", {**CHAT, **change}), status, param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("what, change, status, param", RESPONSES_CASES, ids=[c[0] for c in RESPONSES_CASES])
def test_bad_responses_requests(live, what, change, status, param):
    assert_error(post(live, "/v1/responses", {**RESPONSES, **change}), status, param)


def test_the_prompt_over_the_context_names_both_lengths(live):
    error = assert_error(post(live, "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": LONG}]}),
                         413, "messages")
    assert error["code"] == "context_length_exceeded" and "4096" in error["message"]


@pytest.mark.parametrize("body, what", [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object")])
def test_a_body_that_is_not_a_json_object(live, body, what):
    response = http(f"{live.url}/v1/chat/completions", body)
    assert what in assert_error(response, 400)["message"]


def test_unknown_routes_and_methods(live):
    assert_error(http(f"{live.url}/v1/nothing-here"), 404)
    assert_error(http(f"{live.url}/v1/chat/completions"), 405)


@pytest.mark.parametrize("change, exception", [
    ({"model": "gpt-4o"}, openai.NotFoundError),
    ({"messages": [{"role": "wizard", "content": "Hi"}]}, openai.BadRequestError),
    ({"temperature": -1}, openai.UnprocessableEntityError),
    ({"tools": tool(parameters={"type": "array"})}, openai.UnprocessableEntityError),
    ({"messages": [{"role": "user", "content": LONG}]}, openai.APIStatusError),
])
def test_the_official_client_raises_its_own_exceptions(live, change, exception):
    with pytest.raises(exception) as caught:
        live.client().chat.completions.create(**{**CHAT, **change})
    assert caught.value.status_code in (400, 404, 413, 422) and caught.value.body["message"]


ODD_VALUES = [None, True, -1, 1.5, "x", "", [], {}, [1], [None], {"a": 1}, float("nan"), 10 ** 40]
CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CHAT_PATHS = [("model",), ("messages",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
              ("messages", 0, "tool_calls"), ("messages", 0, "tool_calls", 0), ("messages", 0, "tool_calls", 0, "id"),
              ("messages", 0, "tool_calls", 0, "function"), ("messages", 0, "tool_calls", 0, "function", "name"),
              ("messages", 0, "tool_calls", 0, "function", "arguments"), ("messages", 1, "role"),
              ("messages", 1, "content"), ("messages", 1, "tool_call_id"), ("messages", 1, "name"),
              ("messages", 2, "content"), ("temperature",), ("top_p",),
              ("top_k",), ("seed",), ("stop",), ("stream",), ("stream_options",), ("reasoning_effort",), ("tools",),
              ("tool_choice",), ("n",), ("response_format",)]
RESPONSES_PATHS = [("input",), ("input", 0), ("input", 0, "type"), ("input", 0, "role"), ("input", 0, "content"),
                   ("input", 0, "call_id"), ("input", 0, "output"), ("instructions",), ("reasoning",),
                   ("reasoning", "effort"), ("previous_response_id",), ("tools",), ("tool_choice",), ("text",),
                   ("store",), ("temperature",)]


def replaced(body, path, value):
    """A copy of `body` with the value at `path` (keys and list indices) replaced."""
    if not path:
        return value
    copy = list(body) if isinstance(body, list) else dict(body)
    copy[path[0]] = replaced(body[path[0]] if len(path) > 1 else None, path[1:], value)
    return copy


@pytest.mark.parametrize("path, base, paths", [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "assistant", "tool_calls": [CALL]},
                                                    {"role": "tool", "tool_call_id": "c", "content": "1"}, *USER]},
     CHAT_PATHS),
    ("/v1/responses", {**RESPONSES, "input": [{"type": "function_call_output", "role": "user", "content": "Hi",
                                              "call_id": "c", "output": "1"}], "reasoning": {"effort": "low"}},
     RESPONSES_PATHS),
], ids=["chat", "responses"])
def test_odd_values_anywhere_never_get_a_500(live, path, base, paths):
    """Every field above set to each odd value: a success or a 4xx error JSON, never a server error."""
    wrong = []
    for where in paths:
        for value in ODD_VALUES:
            response = post(live, path, replaced(base, where, value))
            if response.status_code not in (200, 400, 404, 413, 422):
                wrong.append((where, value, response.status_code, response.text))
            elif response.status_code != 200:
                assert_error(response, response.status_code)
    assert [w[:3] for w in wrong] == []
    assert live.health()["error"] == 0


# ------------------------------------------------------------------------------------------ --api-key
def test_bearer_auth(model):
    with served(RecordingBackend(model), api_key="sekret") as server:
        for key in ("none", "sekret-but-longer", "sekre"):
            with pytest.raises(openai.AuthenticationError) as refused:
                server.client(api_key=key).models.list()
            assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        response = post(server, "/v1/chat/completions", CHAT)
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert http(f"{server.url}/health").json()["status"] == "ok"           # health needs no key
        client = server.client(api_key="sekret")
        assert [m.id for m in client.models.list().data] == [MODEL]
        reply = client.chat.completions.create(**CHAT)
        assert reply.usage.completion_tokens == 1
        assert len(server.backend.prompts) == 1                                # the refused request never ran
