"""`gptoss serve` as a user runs it: a real process on the tiny bundle, a real SIGTERM, and `--verify`.

On SIGTERM the server takes no new requests, lets those in flight run for --shutdown-timeout seconds (one that
finishes in time ends normally), ends the rest with a clean error event (code shutting_down), and exits 0.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest
from click.testing import CliRunner

from gptoss.runtime.cli import main
from helpers import bundle_variant
from live_server import MODEL

GRACE_S = 3


class ServeProcess:
    """`python -m gptoss.runtime.cli serve BUNDLE --port 0 ...`; `url` once it says where it listens."""

    def __init__(self, bundle, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gptoss.runtime.cli", "serve", str(bundle), "--port", "0", "--model-name", MODEL,
             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.url = self._wait_for_url(timeout=60)

    def _wait_for_url(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"gptoss serve said nothing in {timeout} s; stderr: {''.join(self.stderr)}")
        assert "OpenAI API at http://127.0.0.1:" in line, line
        return line.rsplit(" ", 1)[-1].strip()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="none", max_retries=0, timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve_process(serve_bundle):
    started = []

    def start(*args) -> ServeProcess:
        started.append(ServeProcess(serve_bundle, *args))
        return started[-1]

    yield start
    for server in started:
        server.close()


def open_stream(client, max_tokens: int, seed: int):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say a lot."}],
                                            max_tokens=max_tokens, seed=seed, stream=True,
                                            stream_options={"include_usage": True})
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"        # the request is in flight
    return stream


def test_sigterm_lets_short_requests_finish_and_ends_long_ones_cleanly(serve_process):
    server = serve_process("--parallel", 2, "--shutdown-timeout", GRACE_S, "--verify")
    client = server.client()
    long = open_stream(client, max_tokens=3000, seed=1)        # ~15 s of tokens: more than the grace period
    short = open_stream(client, max_tokens=20, seed=2)
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    chunks = list(short)
    assert chunks[-1].usage.completion_tokens == 20
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]

    with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):     # refused, or 503 draining
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)

    received = 0
    with pytest.raises(openai.APIError) as ended:
        for chunk in long:
            received += 1
    assert ended.value.body["code"] == "shutting_down" and "shut down" in ended.value.message
    assert received > 1
    assert GRACE_S - 0.5 < time.monotonic() - signalled < GRACE_S + 10

    assert server.proc.wait(timeout=15) == 0
    assert "Traceback" not in "".join(server.stderr), "".join(server.stderr)


def test_sigterm_on_an_idle_server_exits_at_once(serve_process):
    server = serve_process("--shutdown-timeout", 30)
    assert server.client().models.list().data[0].id == MODEL
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 5                       # nothing in flight: no waiting out the grace


def test_serve_verify_refuses_a_corrupted_bundle(serve_bundle, tmp_path):
    """`--verify` hashes every file before serving: one flipped bit is a one-line error, nothing is served."""
    bad = bundle_variant(serve_bundle, tmp_path / "bad", lambda d: None)
    weights = bytearray((bad / "model.weights").read_bytes())
    weights[len(weights) // 2] ^= 0x01
    (bad / "model.weights").unlink()                            # a hard link to the shared bundle's file
    (bad / "model.weights").write_bytes(bytes(weights))
    result = CliRunner().invoke(main, ["serve", str(bad), "--port", "0", "--verify"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "model.weights: sha256" in lines[0], result.output
