"""Serving under load, through the official `openai` client against a live server on the tiny bundle:

    many clients at once   8 threads x 5 requests: every one answered, each with exactly the reply the same request
                           gets when it is the only one on the server (seeded), so none is lost or mixed up
    a full queue           429 with Retry-After and OpenAI error JSON; the queued requests still finish
    a client that leaves   its generation stops (the scheduler counts it cancelled, after a few tokens of many)
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from live_server import MODEL, RecordingBackend, ScriptedBackend, served

CLIENTS, REQUESTS_EACH = 8, 5
SYSTEM = {"role": "system", "content": "You are a load test."}


def request_of(client_no: int, i: int) -> dict:
    """Each request its own prompt and seed; odd clients stream, even ones do not."""
    return {"messages": [SYSTEM, {"role": "user", "content": f"Client {client_no}, question {i}: name a number."}],
            "seed": 1000 * client_no + i, "max_tokens": 6, "stream": client_no % 2 == 1}


def answer(client, request: dict) -> tuple[str, str, int]:
    """(content, finish_reason, prompt tokens) of a request, streamed or not."""
    if not request["stream"]:
        reply = client.chat.completions.create(model=MODEL, **request)
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason, reply.usage.prompt_tokens
    chunks = list(client.chat.completions.create(model=MODEL, stream_options={"include_usage": True}, **request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    return text, finish, chunks[-1].usage.prompt_tokens


def test_concurrent_clients_each_get_their_own_seeded_reply(model):
    """8 clients x 5 requests at once on 4 slots (the rest queue): every reply equals the one the same request got
    alone, so no request was lost, answered twice or given another's tokens."""
    requests = {(c, i): request_of(c, i) for c in range(CLIENTS) for i in range(REQUESTS_EACH)}
    with served(RecordingBackend(model), parallel=4, max_queue=16) as server:
        client = server.client()
        alone = {key: answer(client, r) for key, r in requests.items()}
        before = server.health()

        def one_client(c: int) -> dict:
            own = server.client()                       # a client (and connection pool) per thread
            return {(c, i): answer(own, requests[(c, i)]) for i in range(REQUESTS_EACH)}

        with ThreadPoolExecutor(CLIENTS) as pool:
            together = {k: v for part in pool.map(one_client, range(CLIENTS)) for k, v in part.items()}
        after = server.health()
    assert together == alone
    assert len({text for text, _, _ in alone.values()}) > len(alone) // 2      # the replies tell requests apart
    assert after["submitted"] - before["submitted"] == len(requests)
    assert after["rejected"] == before["rejected"] and after["error"] == 0
    assert after["active"] == after["waiting"] == 0


def test_a_full_queue_answers_429_with_retry_after(model):
    """One slot and a queue of one: a held request takes the slot, a second waits, a third is refused; once the
    slot frees, the two that were let in finish normally."""
    gate = threading.Event()
    with served(ScriptedBackend(model, [1000, 1001], gate=gate), parallel=1, max_queue=1) as server:
        client = server.client()

        def send():
            return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=3)

        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(send)
            server.wait_for(lambda s: s["active"] == 1)
            queued = pool.submit(send)
            server.wait_for(lambda s: s["waiting"] == 1)
            with pytest.raises(openai.RateLimitError) as refused:
                send()
            gate.set()
            replies = [held.result(timeout=30), queued.result(timeout=30)]
        status = server.health()
    error = refused.value
    assert error.status_code == 429
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.body["code"] == "queue_full" and error.body["type"] == "rate_limit_error"
    assert "busy" in error.body["message"]
    assert [r.usage.completion_tokens for r in replies] == [3, 3]
    assert [r.choices[0].finish_reason for r in replies] == ["length", "length"]
    assert status["rejected"] == 1 and status["submitted"] == 2


def test_a_streaming_client_that_disconnects_stops_its_generation(model):
    """The real tiny model asked for 3000 tokens (about 15 s here): the client reads a few chunks and closes the
    connection; the scheduler stops the job as cancelled after a small fraction of its budget."""
    with served(RecordingBackend(model), parallel=2) as server:
        stream = server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me everything."}], max_tokens=3000, seed=1,
            stream=True)
        received = 0
        for _ in stream:
            received += 1
            if received == 4:
                break
        stream.close()
        status = server.wait_for(lambda s: s["cancelled"] == 1 and s["active"] == 0)
    assert status["length"] == status["stop"] == 0
    assert 3 <= status["completed_tokens"] < 600, status


def test_a_non_streaming_client_that_gives_up_stops_its_generation(model):
    """A client whose read times out closes its connection: the generation it was waiting for stops too."""
    with served(RecordingBackend(model), parallel=2) as server:
        client = server.client(timeout=0.5)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Go on."}],
                                           max_tokens=3000, seed=2)
        status = server.wait_for(lambda s: s["cancelled"] == 1 and s["active"] == 0)
        assert time.monotonic() - started < 10
    assert status["length"] == status["stop"] == 0 and status["completed_tokens"] < 1500, status
