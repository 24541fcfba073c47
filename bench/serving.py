"""Serving throughput: aggregate generated tokens/s of a live `gptoss serve` at 1, 2, 4 and 8 concurrent streams.

    python bench/serving.py BUNDLE [--threads 2] [--streams 1 2 4 8] [--prompt-tokens 128] [--max-tokens 64]
                                   [--rounds 3] [--seed 0] [--markdown docs/serving.md] [--json out.json]
    python bench/serving.py --url http://127.0.0.1:8000/v1 ...     (a server already running)

Starts `gptoss serve BUNDLE --port 0 --parallel MAX(streams) --threads T` (its log goes to a temporary file),
warms it up with one request, then for each stream count and round sends that many streaming chat requests at
once (the official `openai` client, one per thread, released together). Each request has its own seeded prompt
of a fixed length (a distinct first line, so no stream reuses another's KV rows beyond the system message) and
the same max_tokens. Per round:

    aggregate tok/s   completion tokens of all the round's streams / (last stream's end - first request sent)
    stream tok/s      the median stream's completion tokens / (its end - its request sent): what one client sees,
                      prefill and waiting for its turn included
    latency s         the median stream's time from request sent to its last chunk

No time to first token: the server streams text as the harmony parser completes it, and a synthetic or sliced
model's gibberish may open no channel until its end, so a first chunk's time would not be the first token's.

Each metric is summarized over the rounds as median, min, max (bench/stats.py). A random or sliced model can
emit a stop token before max_tokens: the counts are the tokens each stream really got (its usage).
Prints one JSON object; --markdown writes the table into that file (replacing an earlier table of this script,
else appending it). Runs in the project's .venv (openai comes with the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summarize  # noqa: E402  (stdlib only)

FILLER = " river"                   # one token, also repeated (the pre-tokenizer splits at the spaces)
TABLE_START, TABLE_END = "<!-- bench/serving.py table: start -->", "<!-- bench/serving.py table: end -->"
SYSTEM = "You are a benchmark. Keep talking."


# ------------------------------------------------------------------------------------------ the server
class Server:
    """`gptoss serve` in a subprocess on a free port; `url` is its /v1 base."""

    def __init__(self, bundle: Path, threads: int, parallel: int, max_context: int | None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="gptoss-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "gptoss.runtime.cli", "serve", str(bundle), "--port", "0",
               "--parallel", str(parallel), "--max-queue", str(parallel), "--threads", str(threads)]
        if max_context is not None:
            cmd += ["--max-context", str(max_context)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "OpenAI API at " not in line:
            self.stop()
            raise SystemExit(f"gptoss serve did not start ({line.strip()!r}); its log: {self.log.name}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ------------------------------------------------------------------------------------------ requests
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=os.environ.get("GPTOSS_API_KEY", "none"), max_retries=0,
                         timeout=3600)


def prompt_text(number: int, words: int) -> str:
    """Request `number`'s prompt: a distinct first line of a fixed token count, then `words` filler tokens."""
    return f"Request {number:06d}:" + FILLER * words


def stream_once(api: openai.OpenAI, model: str, text: str, max_tokens: int, seed: int, go=None) -> dict:
    """One streaming request: {sent, end (perf_counter s), tokens, prompt_tokens}."""
    if go is not None:
        go.wait()
    sent = time.perf_counter()
    usage = None
    for chunk in api.chat.completions.create(
            model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            max_tokens=max_tokens, seed=seed, stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    return {"sent": sent, "end": time.perf_counter(), "tokens": usage.completion_tokens,
            "prompt_tokens": usage.prompt_tokens}


def calibrate(api: openai.OpenAI, model: str, prompt_tokens: int) -> int:
    """Words of filler that make a prompt of `prompt_tokens` tokens (each filler word is one token)."""
    base = stream_once(api, model, prompt_text(999999, 0), 1, 0)["prompt_tokens"]
    return max(0, prompt_tokens - base)


def one_round(url: str, model: str, streams: int, words: int, max_tokens: int, seed: int, first: int) -> dict:
    """`streams` requests released at once; the round's aggregate and per-stream numbers."""
    go, results, errors = threading.Event(), [None] * streams, []

    def worker(i: int) -> None:
        try:
            results[i] = stream_once(client(url), model, prompt_text(first + i, words), max_tokens, seed + i, go)
        except Exception as e:                     # reported in the round, not a traceback per thread
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    time.sleep(0.2)                                 # every thread is waiting on `go`
    go.set()
    for t in threads:
        t.join()
    if errors:
        return {"ok": False, "errors": errors}
    wall = max(r["end"] for r in results) - min(r["sent"] for r in results)
    return {"ok": True, "wall_s": wall, "tokens": sum(r["tokens"] for r in results),
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
            "stream_tok_s": statistics.median(r["tokens"] / (r["end"] - r["sent"]) for r in results),
            "latency_s": statistics.median(r["end"] - r["sent"] for r in results),
            "prompt_tokens": sorted({r["prompt_tokens"] for r in results})}


# ------------------------------------------------------------------------------------------ the run
def measure(args, url: str) -> dict:
    api = client(url)
    model = api.models.list().data[0].id
    words = calibrate(api, model, args.prompt_tokens)       # a target below the chat template's floor gets the floor
    stream_once(api, model, prompt_text(999998, words), args.max_tokens, args.seed)
    out = {"model": model, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
           "rounds": args.rounds, "seed": args.seed, "threads": args.threads, "streams": {}}
    for streams in args.streams:
        runs = [one_round(url, model, streams, words, args.max_tokens, args.seed + 1000 * r, 1000 * streams + 10 * r)
                for r in range(args.rounds)]
        good = [r for r in runs if r["ok"]]
        out["streams"][str(streams)] = {
            "aggregate_tok_s": summarize([r["aggregate_tok_s"] for r in good], True),
            "stream_tok_s": summarize([r["stream_tok_s"] for r in good], True),
            "latency_s": summarize([r["latency_s"] for r in good], False),
            "tokens_per_round": [r["tokens"] for r in good],
            "prompt_tokens_seen": sorted({n for r in good for n in r["prompt_tokens"]}),
            "failed_rounds": [r["errors"] for r in runs if not r["ok"]]}
        print(f"{streams} streams: {out['streams'][str(streams)]['aggregate_tok_s']}", file=sys.stderr)
    out["prompt_tokens_seen"] = sorted({n for s in out["streams"].values() for n in s["prompt_tokens_seen"]})
    return out


def markdown(result: dict, command: str) -> str:
    def spread(s, fmt):
        return "-" if s is None else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"

    rows = ["| streams | aggregate tok/s | per-stream tok/s | latency s | tokens per round |", "|---|---|---|---|---|"]
    for streams, s in result["streams"].items():
        rows.append(f"| {streams} | {spread(s['aggregate_tok_s'], '{:.1f}')} | {spread(s['stream_tok_s'], '{:.1f}')}"
                    f" | {spread(s['latency_s'], '{:.2f}')} | {', '.join(map(str, s['tokens_per_round']))} |")
    env = result["environment"]
    return "\n".join([
        TABLE_START, "",
        f"Model `{result['model']}`, prompts of {'/'.join(map(str, result['prompt_tokens_seen']))} tokens, max_tokens {result['max_tokens']}, "
        f"seeded sampling (seed {result['seed']}), {result['rounds']} rounds per row: median (min-max). "
        f"Server threads {result['threads']}; {env['cpus']} CPUs ({env['machine']}), Python {env['python']}, "
        f"openai {env['openai']}, measured {env['date']}.", "",
        f"```bash\n{command}\n```", "", *rows, "", TABLE_END, ""])


def write_markdown(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + table.rstrip("\n") + rest.split(TABLE_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + table if text else table
    path.write_text(text)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, nargs="?", help="the bundle to serve (or --url)")
    ap.add_argument("--url", help="benchmark a server already running at this /v1 base instead")
    ap.add_argument("--threads", type=int, default=2, help="the server's intra-op threads")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-context", type=int, default=None, help="the server's --max-context")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--markdown", type=Path, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    if (args.bundle is None) == (args.url is None):
        ap.error("give a BUNDLE to serve, or the --url of a running server")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    server = None if args.url else Server(args.bundle, args.threads, max(args.streams), args.max_context)
    try:
        result = measure(args, args.url or server.url)
    finally:
        if server is not None:
            server.stop()
    result["environment"] = {"cpus": os.cpu_count(), "machine": platform.machine(),
                             "python": platform.python_version(), "openai": openai.__version__,
                             "date": time.strftime("%Y-%m-%d")}
    result["bundle"] = str(args.bundle) if args.bundle else None
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.markdown:
        command = "python bench/serving.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_markdown(args.markdown, markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
