"""The HTTP side: Starlette routes over the scheduler, bearer auth, JSON errors, server-sent events.

    GET  /health                 status and counters (no auth)
    GET  /v1/models[/{id}]       the one model this server serves
    POST /v1/chat/completions    chat.py
    POST /v1/responses           responses.py, responses_out.py

Every refusal is OpenAI's error JSON (errors.py); an unexpected exception is logged and answered 500 with a one-line
message, never a traceback. A client that disconnects (streaming or not) cancels its generation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import chat, responses, responses_out
from .errors import APIError
from .responses import ResponseStore
from .runs import Context, Run, now
from .scheduler import Scheduler

log = logging.getLogger("gptoss.serve")

MAX_BODY_BYTES = 16 << 20


def create_app(backend, model_name: str, parallel: int = 4, max_queue: int = 16, api_key: str | None = None,
               grace: float = 30.0) -> Starlette:
    """The ASGI app; its lifespan starts and stops the scheduler's worker. `backend`: scheduler.ModelBackend."""
    ctx = Context(Scheduler(backend, parallel, max_queue), backend, model_name, now(), api_key, grace)
    store = ResponseStore()

    @asynccontextmanager
    async def lifespan(app):
        ctx.scheduler.start()
        try:
            yield
        finally:
            ctx.scheduler.stop()

    def route(path, handler, method="GET", auth=True, **extra):
        return Route(path, _endpoint(handler, ctx, auth, extra), methods=[method])

    routes = [route("/health", health, auth=False), route("/v1/models", models),
              route("/v1/models/{model:path}", model),
              route("/v1/chat/completions", chat_completions, "POST"),
              route("/v1/responses", create_response, "POST", store=store)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.ctx = ctx
    return app


# ------------------------------------------------------------------------------------------ plumbing
def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (unknown route, wrong method) in the same JSON."""
    kind = "not_found" if exc.status_code == 404 else None
    return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=kind))


def _endpoint(handler, ctx: Context, auth: bool, extra: dict):
    async def endpoint(request: Request) -> Response:
        try:
            if auth:
                _check_auth(request, ctx.api_key)
            return await handler(request, ctx, **extra)
        except APIError as e:
            return error_response(e)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(APIError(500, "internal server error (the server's log has the details)",
                                           type="server_error", code="internal_error"))

    return endpoint


def _check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "missing or wrong API key: send `Authorization: Bearer KEY` (the server's --api-key)",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def read_json(request: Request) -> dict:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise APIError(413, f"the request body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is over the limit of {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(data)
    except ValueError as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


class EventStream:
    """A text/event-stream response over an async iterator of frames. `on_close()` runs however it ends: finished,
    failed, or the client went away (then the iterator is cancelled)."""

    def __init__(self, frames, on_close):
        self.frames, self.on_close = frames, on_close

    async def __call__(self, scope, receive, send) -> None:
        async def pump():
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            async with anyio.create_task_group() as group:
                async def first_to_end(fn):
                    await fn()
                    group.cancel_scope.cancel()

                group.start_soon(first_to_end, pump)
                group.start_soon(first_to_end, lambda: _disconnected(receive))
        finally:
            self.on_close()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def complete(request: Request, run: Run):
    """Run a non-streaming request to its end; None (and the generation cancelled) if the client leaves first."""
    done = asyncio.ensure_future(run.complete())
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not done.done():
            run.cancel()
            done.cancel()
    return done.result() if done.done() and not done.cancelled() else None


# ------------------------------------------------------------------------------------------ endpoints
async def health(request: Request, ctx: Context) -> Response:
    status = ctx.scheduler.status()
    return JSONResponse({"status": "draining" if status["draining"] else "ok", "model": ctx.model_name, **status})


def _card(ctx: Context) -> dict:
    return {"id": ctx.model_name, "object": "model", "created": ctx.created, "owned_by": "gptoss"}


async def models(request: Request, ctx: Context) -> Response:
    return JSONResponse({"object": "list", "data": [_card(ctx)]})


async def model(request: Request, ctx: Context) -> Response:
    name = request.path_params["model"]
    if name != ctx.model_name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves {ctx.model_name!r}",
                       param="model", code="model_not_found")
    return JSONResponse(_card(ctx))


async def chat_completions(request: Request, ctx: Context) -> Response:
    p = chat.plan(await read_json(request), ctx)
    run = Run.start(ctx, p.prompt, p.sampling, p.budget)
    if p.stream:
        return EventStream(chat.chunks(p, run), run.cancel)
    end = await complete(request, run)
    return Response(status_code=499) if end is None else JSONResponse(chat.completion(p, run, end))


async def create_response(request: Request, ctx: Context, store: ResponseStore) -> Response:
    p = responses.plan(await read_json(request), ctx, store)
    run = Run.start(ctx, p.prompt, p.sampling, p.budget)
    if p.stream:
        return EventStream(responses_out.events(p, run, store), run.cancel)
    end = await complete(request, run)
    return Response(status_code=499) if end is None else JSONResponse(responses_out.response(p, run, end, store))
