"""`gptoss serve`: an OpenAI-compatible HTTP server on top of the runtime (docs/serving.md).

An optional extra, `gptoss-runtime[serve]` (Starlette and uvicorn): only the `serve` command imports this
package's modules, so the minimal runtime never loads the web stack.

    errors.py        OpenAI-style error JSON and the status of each refusal
    params.py        sampling, budget, stop strings, reasoning effort, tools and tool_choice, checked
    prompt.py        a conversation -> prompt ids, its shared prefix, the header a tool_choice forces
    scheduler.py     the worker thread: bounded queue, slots (KV caches with prefix reuse), fair rounds
    turn.py          generated ids -> harmony messages -> output items (reasoning, text, calls)
    runs.py          one request's generation from the event loop: submit, read events, cancel
    chat.py          /v1/chat/completions;  responses.py, responses_out.py: /v1/responses
    app.py           the Starlette app: routes, auth, errors, server-sent events, disconnects
    server.py        uvicorn, graceful shutdown on SIGTERM
"""

EXTRA_MODULES = ("starlette", "uvicorn")


def missing_extra() -> str | None:
    """None when the `serve` extra is installed, else a one-line message saying how to install it."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    return (f"`gptoss serve` needs the 'serve' extra ({', '.join(missing)} not installed): "
            f"pip install 'gptoss-runtime[serve]' (in a checkout of the project: pip install -e '.[serve]')")
