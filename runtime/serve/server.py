"""`gptoss serve`: load a bundle, serve it with uvicorn until SIGTERM or Ctrl-C, then shut down gracefully.

On the first SIGTERM/SIGINT the server stops accepting connections and new requests get 503; requests in flight
go on for up to `grace` seconds, then end with a clean error (a 503 JSON, or an error event in a stream); the
process exits 0. A second Ctrl-C quits at once.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .scheduler import ModelBackend


class _Server(uvicorn.Server):
    """uvicorn's server, which on the first exit signal also starts the scheduler's drain."""

    def __init__(self, config: uvicorn.Config, scheduler, grace: float):
        super().__init__(config)
        self._scheduler, self._grace = scheduler, grace

    def handle_exit(self, sig, frame) -> None:
        self._scheduler.begin_drain(self._grace)
        super().handle_exit(sig, frame)


def run_server(model, model_name: str, host: str = "127.0.0.1", port: int = 8000, parallel: int = 4,
               max_queue: int = 16, api_key: str | None = None, grace: float = 30.0,
               log_level: str = "info") -> None:
    """Serve a loaded `Model` until a signal; prints the address it listens on (port 0: a free one)."""
    app = create_app(ModelBackend(model), model_name, parallel=parallel, max_queue=max_queue, api_key=api_key,
                     grace=grace)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=grace + 5)
    server = _Server(config, app.state.ctx.scheduler, grace)
    sock = config.bind_socket()
    bound = sock.getsockname()[1]
    print(f"gptoss serve: {model_name!r} on {model.provider}, parallel {parallel}, context {model.max_context}; "
          f"OpenAI API at http://{_url_host(host)}:{bound}/v1", flush=True)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host} without --api-key: anyone who reaches it can use it", file=sys.stderr)
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers that ends the process
    # with status 0 instead of a death by signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_model_name(bundle: Path) -> str:
    return Path(bundle).resolve().name


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
