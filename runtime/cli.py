"""`gptoss`: run, chat with and benchmark a bundle. Each command is a thin layer over `Model`.

Errors the runtime raises on purpose (bad bundle, missing provider, context overflow, bad arguments)
print as one `Error: ...` line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

import click

from gptoss.errors import GptOssError

from .errors import ContextOverflowError
from .harmony import REASONING_EFFORTS


class _UserError(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (GptOssError, ValueError) as e:
            raise _UserError(str(e)) from None


@click.group(cls=_Group)
@click.version_option(package_name=None, message="gptoss %(version)s", version=__import__("gptoss").__version__)
def main() -> None:
    """Run gpt-oss bundles (exported by gptoss-export) with ONNX Runtime."""


def _load_options(f):
    f = click.option("--graph-capture", is_flag=True,
                     help="Record the decode step once and replay it (CUDA graphs, WebGPU), where the bundle's "
                          "target allows it (docs/targets.md).")(f)
    f = click.option("--allow-fallback", is_flag=True, help="Accept running on CPU if the provider is missing.")(f)
    f = click.option("--max-context", type=click.IntRange(min=2), default=None,
                     help="Context length in tokens (default: the model's, capped at 16384).")(f)
    f = click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")(f)
    f = click.option("--provider", default=None, help="ONNX Runtime execution provider (default: the bundle's).")(f)
    f = click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))(f)
    return f


def _verify_option(f):
    """`--verify`: hash every file of the bundle against its manifest before loading (Model.load(verify=True))."""
    return click.option("--verify", is_flag=True,
                        help="Check every file's sha256 against the manifest first (reads the whole bundle).")(f)


def _sampling_options(f):
    f = click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Seed (an integer >= 0): the same seed gives the same output.")(f)
    f = click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="0 decodes greedily.")(f)
    f = click.option("--max-new-tokens", type=click.IntRange(min=1), default=2048, show_default=True)(f)
    f = click.option("--reasoning-effort", type=click.Choice(REASONING_EFFORTS), default="low", show_default=True)(f)
    f = click.option("--show-reasoning", is_flag=True, help="Also print the analysis channel (to stderr).")(f)
    return f


def _load(bundle, provider, threads, max_context, allow_fallback, graph_capture, verify=False):
    from .model import Model

    return Model.load(bundle, provider=provider, threads=threads, max_context=max_context,
                      allow_fallback=allow_fallback, verify=verify, graph_capture=graph_capture)


@contextlib.contextmanager
def _ctrl_c_cancels():
    """While generating, Ctrl-C stops the generation (cleanly, between steps) instead of the program."""
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def _stream_reply(stream, show_reasoning: bool) -> None:
    channel = None
    for event in stream:
        is_final = event.is_final
        if not is_final and not show_reasoning:
            continue
        out = sys.stdout if is_final else sys.stderr
        if event.channel != channel and not is_final:
            click.secho(f"[{event.channel}] ", nl=False, dim=True, err=True)
        if channel is not None and event.channel != channel and is_final and show_reasoning:
            click.echo("", err=True)
        channel = event.channel
        click.secho(event.text, nl=False, dim=not is_final, err=out is sys.stderr)
    click.echo()
    sys.stdout.flush()
    result = stream.result
    for call in result.tool_calls:
        click.secho(f"[tool call] {call.name}({call.arguments})", err=True, dim=True)
    if result.finish_reason in ("length", "cancelled"):
        click.secho(f"[{result.finish_reason}]", err=True, dim=True)


@main.command()
@_load_options
@click.argument("prompt")
@_sampling_options
@_verify_option
def run(bundle, provider, threads, max_context, allow_fallback, graph_capture, prompt, show_reasoning,
        reasoning_effort, max_new_tokens, temperature, seed, verify):
    """Answer PROMPT (as a user message) and stream the final answer."""
    model = _load(bundle, provider, threads, max_context, allow_fallback, graph_capture, verify)
    convo = model.conversation(reasoning_effort=reasoning_effort)
    with _ctrl_c_cancels() as cancel:
        stream = convo.send(prompt, stream=True, max_new_tokens=max_new_tokens, temperature=temperature,
                            seed=seed, cancel=cancel)
        _stream_reply(stream, show_reasoning)


CHAT_HELP = "/effort low|medium|high   /reset   /exit   (Ctrl-C stops a reply; Ctrl-D quits)"
EXIT_COMMANDS = ("/exit", "/quit")


class _BadCommand(Exception):
    """A chat /command that does not exist or takes another argument: one `Error:` line, and the chat goes on."""


def _effort(convo, arg: str) -> str:
    if arg not in REASONING_EFFORTS:
        raise _BadCommand(f"/effort takes one of {', '.join(REASONING_EFFORTS)}, not {arg!r}")
    convo.reasoning_effort = arg
    return f"(reasoning effort: {arg})"


def _reset(convo, arg: str) -> str:
    convo.reset()
    return "(conversation cleared)"


CHAT_COMMANDS = {"/effort": _effort, "/reset": _reset, "/help": lambda convo, arg: CHAT_HELP}


def _chat_command(convo, line: str) -> bool:
    """Run one /command typed in `gptoss chat`; False when it ends the chat."""
    command, _, arg = line.partition(" ")
    if command in EXIT_COMMANDS:
        return False
    try:
        if command not in CHAT_COMMANDS:
            raise _BadCommand(f"unknown command {command!r}; the commands: {CHAT_HELP}")
        click.secho(CHAT_COMMANDS[command](convo, arg.strip()), dim=True, err=True)
    except _BadCommand as e:
        click.secho(f"Error: {e}", err=True, fg="red")
    return True


def _overflow_hint(max_new_tokens: int) -> str:
    return (f"/reset starts a new conversation; or restart the chat with a smaller --max-new-tokens (now "
            f"{max_new_tokens}) or a larger --max-context")


@main.command()
@_load_options
@_sampling_options
@click.option("--system", "instructions", default=None, help="Developer instructions for the conversation.")
@_verify_option
def chat(bundle, provider, threads, max_context, allow_fallback, graph_capture, show_reasoning, reasoning_effort,
         max_new_tokens, temperature, seed, instructions, verify):
    """Chat interactively; the conversation keeps its history (and its cache) between turns."""
    model = _load(bundle, provider, threads, max_context, allow_fallback, graph_capture, verify)
    convo = model.conversation(reasoning_effort=reasoning_effort, instructions=instructions)
    click.secho(f"{bundle} on {model.provider}. {CHAT_HELP}", dim=True, err=True)
    turn = 0
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not _chat_command(convo, line):
                return
            continue
        with _ctrl_c_cancels() as cancel:
            try:
                stream = convo.send(line, stream=True, max_new_tokens=max_new_tokens, temperature=temperature,
                                    seed=None if seed is None else seed + turn, cancel=cancel)
                _stream_reply(stream, show_reasoning)
            except ContextOverflowError as e:  # the turn is undone; say how to go on
                click.echo()
                click.secho(f"Error: {e}. {_overflow_hint(max_new_tokens)}", err=True, fg="red")
            except GptOssError as e:          # say so, keep the session
                click.secho(f"Error: {e}", err=True, fg="red")
        turn += 1


@main.command()
@_load_options
@click.option("--prompt-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Runs; the best is kept.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(bundle, provider, threads, max_context, allow_fallback, graph_capture, prompt_tokens, new_tokens, repeat,
          as_json):
    """Measure load time, prefill and decode speed, time to first token and peak memory."""
    from .bench import run_bench

    result = run_bench(bundle, provider=provider, threads=threads, max_context=max_context,
                       allow_fallback=allow_fallback, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                       repeat=repeat, graph_capture=graph_capture)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    rows = [("bundle", str(bundle)), ("provider", result["provider"]), ("threads", str(result["threads"] or "default")),
            ("load", f"{result['load_s']:.2f} s"),
            ("prompt / new tokens", f"{result['prompt_tokens']} / {result['new_tokens']}"),
            ("prefill", f"{result['prefill_tok_s']:.1f} tok/s"),
            ("time to first token", f"{result['ttft_s'] * 1000:.1f} ms"),
            ("decode", f"{result['decode_tok_s']:.1f} tok/s"),
            ("peak RSS", f"{result['peak_rss_mb']:.0f} MiB")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
def verify(bundle):
    """Check BUNDLE's files against its manifest: every file it uses listed, each one's size and sha256."""
    from gptoss.bundle import load_manifest
    from gptoss.bundle.integrity import check_files

    checked = check_files(load_manifest(bundle), verify=True)
    click.echo(f"{bundle}: {checked.files} files, {checked.bytes} bytes: sizes and sha256 match its manifest")


@main.command()
@_load_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--parallel", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests generated at once, each with its own KV cache.")
@click.option("--max-queue", type=click.IntRange(min=0), default=16, show_default=True,
              help="Requests that may wait for a free slot; more get 429.")
@click.option("--api-key", envvar="GPTOSS_API_KEY", default=None,
              help="Require `Authorization: Bearer KEY` on /v1 (or set GPTOSS_API_KEY).")
@click.option("--model-name", default=None, help="The model id clients ask for (default: the bundle folder's name).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM, seconds in-flight requests get to finish.")
@_verify_option
def serve(bundle, provider, threads, max_context, allow_fallback, graph_capture, host, port, parallel, max_queue,
          api_key, model_name, shutdown_timeout, verify):
    """Serve BUNDLE over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/responses, /v1/models)."""
    from .serve import missing_extra

    if (message := missing_extra()) is not None:
        raise _UserError(message)
    from .serve.server import default_model_name, run_server

    model = _load(bundle, provider, threads, max_context, allow_fallback, graph_capture, verify)
    run_server(model, model_name or default_model_name(bundle), host=host, port=port, parallel=parallel,
               max_queue=max_queue, api_key=api_key, grace=shutdown_timeout)


if __name__ == "__main__":  # pragma: no cover
    main()
