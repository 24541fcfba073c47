"""Live servers for the serve tests: the real app on 127.0.0.1 (a free port), run by uvicorn in a thread of the test
process, so a test can give it a backend of its own and look at the prompts it was fed.

    served(backend, **create_app options)   a context manager -> Live(url, app, backend); Live.client() is an
                                            official `openai.OpenAI` client for it
    RecordingBackend(model)                 the real model; keeps every prompt it generated for (ids)
    ScriptedBackend(model, tokens, ...)     the real model's prefill, then a fixed list of generated tokens (a
                                            stand-in for a model that really calls tools or thinks)

The tiny model speaks gibberish with the real o200k vocabulary: tests use seeds and small budgets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import openai          # the test extra; starlette and uvicorn come with it (the serve extra)
import uvicorn

from gptoss.runtime.generation import TokenEvent
from gptoss.runtime.serve.app import create_app
from gptoss.runtime.serve.scheduler import ModelBackend

MODEL = "tiny"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


class RecordingBackend(ModelBackend):
    def __init__(self, model):
        super().__init__(model)
        self.prompts: list[list[int]] = []

    def sequence(self, cache, request):
        self.prompts.append(list(request.prompt))
        return super().sequence(cache, request)


class Scripted:
    """A sequence that 'generates' fixed tokens: one per step, stopping after a stop token or the budget.
    `gate`: a threading.Event each step waits for (briefly, so the worker stays responsive); `fail`: raise it."""

    def __init__(self, tokens, request, gate=None, fail=None):
        self.tokens, self.request, self.gate, self.fail = list(tokens), request, gate, fail
        self.done, self.n = False, 0

    def prefill(self):
        return True

    def step(self):
        if self.request.cancel.is_set():
            self.done = True
            return None
        if self.gate is not None and not self.gate.wait(0.01):
            return None
        if self.fail is not None:
            raise self.fail
        token = self.tokens[self.n % len(self.tokens)]
        self.n += 1
        stop = token in self.request.stops
        self.done = stop or self.n >= self.request.max_new_tokens
        return TokenEvent(token, "", self.n - 1, stop)


class ScriptedBackend(RecordingBackend):
    def __init__(self, model, tokens, gate=None, fail=None):
        super().__init__(model)
        self.tokens, self.gate, self.fail = tokens, gate, fail

    def sequence(self, cache, request):
        self.prompts.append(list(request.prompt))
        return Scripted(self.tokens, request, self.gate, self.fail)


@dataclass
class Live:
    url: str
    app: object
    backend: object

    def client(self, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=kw.pop("api_key", "none"), max_retries=0,
                             timeout=kw.pop("timeout", 60), **kw)

    def health(self) -> dict:
        return self.app.state.ctx.scheduler.status()

    def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.health()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; the scheduler says {status}")
            time.sleep(0.01)


@contextlib.contextmanager
def served(backend, model_name: str = MODEL, **options):
    app = create_app(backend, model_name, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", app, backend)
    finally:
        server.should_exit = True
        thread.join(20)
