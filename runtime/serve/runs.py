"""A request's generation from the event loop's side: submit to the scheduler, read the turn's events, stop it.

    run = Run.start(ctx, prompt, sampling, budget)     429 (queue full, Retry-After) / 503 (shutting down)
    async for event in run.events(): ...               ItemStart / ItemDelta / ItemEnd ..., then one TurnEnd
    run.cancel()                                       the client went away: the worker stops it between steps
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from .. import harmony
from ..generation import Request
from .errors import APIError
from .params import Sampling
from .prompt import Prompt
from .scheduler import Draining, Finished, Job, QueueFull, Scheduler, Ticket
from .turn import Turn, TurnEnd


@dataclass
class Context:
    """What every request handler needs: the scheduler, the backend (tokenizer, context), the served name."""

    scheduler: Scheduler
    backend: object
    model_name: str
    created: int
    api_key: str | None = None
    grace: float = 30.0


class Run:
    def __init__(self, ticket: Ticket, turn: Turn):
        self.ticket, self.turn = ticket, turn
        self.end: TurnEnd | None = None

    @classmethod
    def start(cls, ctx: Context, prompt: Prompt, sampling: Sampling, budget: int) -> "Run":
        tokenizer = ctx.backend.tokenizer
        ticket = Ticket(asyncio.get_running_loop())
        request = Request(tuple(prompt.ids), budget, sampling.params, sampling.seed,
                          frozenset(harmony.stop_token_ids(tokenizer)), ticket.cancel)
        try:
            ctx.scheduler.submit(Job(request, prompt.prefix, ticket.push))
        except QueueFull as e:
            raise APIError(429, f"the server is busy: {e}", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except Draining:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from None
        return cls(ticket, Turn(tokenizer, len(prompt.ids), prompt.forced, sampling.stop))

    def cancel(self) -> None:
        self.ticket.cancel.set()

    async def events(self):
        for event in self.turn.start():
            yield event
        async for item in self.ticket.items():
            if isinstance(item, Finished):
                for event in self.turn.finish(item):
                    if isinstance(event, TurnEnd):
                        self.end = event
                    yield event
                return
            for event in self.turn.token(item.token_id):
                yield event
            if self.turn.stop_hit:
                self.cancel()                        # a stop string ended the text: stop generating

    async def complete(self) -> TurnEnd:
        """Run to the end (non-streaming requests)."""
        async for _ in self.events():
            pass
        return self.end


def check_model(body, ctx: Context) -> str:
    """The request's `model`: 404 unless it is the one this server serves."""
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "model must be a string (GET /v1/models lists it)", param="model")
    if model != ctx.model_name:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {ctx.model_name!r}",
                       param="model", code="model_not_found")
    return model


def flag(body, key: str) -> bool:
    value = body.get(key, False)
    if value is not None and not isinstance(value, bool):
        raise APIError(400, f"{key} must be true or false, got {value!r}", param=key)
    return bool(value)


def failure(end: TurnEnd) -> APIError | None:
    """The error a turn that ended badly answers with (None when it ended normally)."""
    if end.finish_reason == "shutdown":
        return APIError(503, "the server shut down before the reply was complete", type="server_error",
                        code="shutting_down")
    if end.finish_reason == "error":
        return APIError(500, f"generation failed: {end.error}", type="server_error", code="generation_failed")
    return None


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
