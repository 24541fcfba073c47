"""The peer to beat: onnxruntime-genai's model builder and runtime, measured the way we measure ours.

Runs in the peer's own virtual environment, never in the project's (it does not import gptoss):

    /work/peer-venv/bin/python bench/peer.py build CKPT OUT [--threads 2] [--force]
    /work/peer-venv/bin/python bench/peer.py inspect OUT
    /work/peer-venv/bin/python bench/peer.py measure OUT [--threads 2] [--prompts 128 512 2048]
                                             [--contexts 1024 8192] [--new-tokens 32] [--prefill-chunk 0]

Each command prints one JSON object on stdout (progress goes to stderr), for bench scripts to parse.

build    runs `python -m onnxruntime_genai.models.builder -i CKPT -o OUT -p int4 -e cpu` as a child
         process (wall time, peak RSS from the child's own rusage and from polling its process tree;
         a failure comes back with its exit status and the tail of its log), then writes the intra-op
         thread count into OUT/genai_config.json (model.decoder.session_options.intra_op_num_threads).
inspect  op types of OUT/model.onnx by domain, the QMoE / MatMulNBits / GroupQueryAttention attributes,
         initializer bytes per part (experts, embedding, lm_head, attention, router, other), size on disk.
measure  og.Model load time; per prompt length N: time to first token and prefill tok/s (N random ids
         appended with og.Generator.append_tokens, then the first greedy token); per context C: C random
         ids prefilled, then decode tok/s over M greedy tokens; peak RSS of each phase and of the process.

Prompts are the ids our own `gptoss bench` uses (numpy default_rng(seed), ordinary text tokens 1000..199997).
Greedy search with min_length = max_length, so no stop token ends a run early. The generator's KV buffer
is sized to the phase (max_length = C + M + 1): onnxruntime-genai allocates past_present_share_buffer
caches at max_length, and the model's context_length (131072 for 20b) would cost GiBs we never use.
Phases run in ascending size in one process; ORT's CPU arena keeps what a phase grew, so each phase's
peak (VmHWM, reset between phases) includes the arena left by the phases before it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

PEER_PACKAGES = ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "onnxscript", "transformers",
                 "torch", "accelerate", "safetensors", "tokenizers", "numpy")
TEXT_IDS = (1000, 199998)   # o200k: ids below 199998 are ordinary text tokens
LOG_TAIL_LINES = 40


class PeerError(RuntimeError):
    """A peer step that cannot go on (missing model folder, bad config, out-of-range request)."""


def log(msg: str, who: str = "peer") -> None:
    print(f"[{who}] {msg}", file=sys.stderr, flush=True)


def versions(packages=PEER_PACKAGES) -> dict:
    """Python's version and each package's (None: not installed)."""
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------- build

def _tree_rss(proc) -> int:
    """RSS of a psutil.Process and its descendants, bytes (0 once it is gone)."""
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            total += p.memory_info().rss
    except psutil.Error:
        pass
    return total


def run_measured(cmd: list[str], log_path: Path, env: dict, poll_s: float = 0.5) -> dict:
    """Run cmd with stdout+stderr to log_path. Wall time, exit status, peak RSS (bytes) from the
    child's rusage (ru_maxrss: its largest resident set, exact) and from polling its process tree."""
    import psutil

    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        polled = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            polled = max(polled, _tree_rss(ps))
            time.sleep(poll_s)
    proc.returncode = os.waitstatus_to_exitcode(status)   # reaped by wait4; keep Popen consistent
    return {"wall_s": time.perf_counter() - t0, "returncode": proc.returncode,
            "peak_rss_bytes": max(usage.ru_maxrss * 1024, polled),
            "peak_rss_rusage_bytes": usage.ru_maxrss * 1024, "peak_rss_polled_bytes": polled}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a builder log, without progress-bar redraws and INFO chatter."""
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    keep = [line for line in text if line.strip() and "[INFO]" not in line and "it/s]" not in line]
    return "\n".join(keep[-lines:])


def set_session_threads(model_dir: Path, threads: int) -> dict:
    """Write intra_op_num_threads into genai_config.json's decoder session options; returns them."""
    path = model_dir / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    path.write_text(json.dumps(config, indent=4) + "\n")
    return options


def build(ckpt: Path, out: Path, threads: int = 2, precision: str = "int4", force: bool = False,
          extra_options: list[str] | None = None) -> dict:
    """Build the peer's ONNX model from a Hugging Face checkpoint folder (int4, CPU provider)."""
    if not (ckpt / "config.json").is_file():
        raise PeerError(f"{ckpt} has no config.json: not a Hugging Face checkpoint folder")
    if not (ckpt / "tokenizer.json").is_file():
        raise PeerError(f"{ckpt} has no tokenizer.json (write the checkpoint with TIKTOKEN_CACHE_DIR set)")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise PeerError(f"{out} is not empty (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="peer-cache-", dir=out.parent))
    log_path = out.parent / f"{out.name}.build.log"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(cache)]
    if extra_options:
        cmd += ["--extra_options", *extra_options]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log(f"building: {' '.join(cmd)}")
    try:
        result = run_measured(cmd, log_path, env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    ckpt_config = json.loads((ckpt / "config.json").read_text())
    result.update(command=cmd, log=str(log_path), checkpoint=str(ckpt), output=str(out),
                  checkpoint_bytes=dir_bytes(ckpt), num_hidden_layers=ckpt_config.get("num_hidden_layers"),
                  versions=versions())
    if result["returncode"] != 0:
        result.update(ok=False, error=log_tail(log_path))
        return result
    result.update(ok=True, session_options=set_session_threads(out, threads), model_bytes=dir_bytes(out),
                  files={f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()})
    return result


# -------------------------------------------------------------------------------------------- inspect

def _initializer_part(name: str) -> str:
    if ".moe.experts." in name or name.endswith("/QMoE"):
        return "experts"
    for part, key in (("embedding", "embed_tokens"), ("lm_head", "lm_head"), ("router", ".moe.router"),
                      ("attention", ".attn.")):
        if key in name:
            return part
    return "other"


def _tensor_bytes(tensor) -> int:
    from onnx import helper

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    count = 1
    for d in tensor.dims:
        count *= d
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def inspect(model_dir: Path) -> dict:
    """What the peer's model.onnx is made of (the graph only: external data is not read)."""
    import onnx
    from onnx import helper

    config = json.loads((model_dir / "genai_config.json").read_text())
    graph_file = model_dir / config["model"]["decoder"]["filename"]
    model = onnx.load(str(graph_file), load_external_data=False)
    ops = collections.Counter(f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node)
    attrs: dict[str, dict] = {}
    for node in model.graph.node:
        key = node.op_type
        if key in ("QMoE", "GroupQueryAttention", "MatMulNBits", "GatherBlockQuantized"):
            label = key
            if key == "MatMulNBits":   # one entry per role: qkv_proj, o_proj, router, lm_head
                label = f"{key} " + re.sub(r"/model/layers\.\d+/|/MatMul\w*$", "", node.name).strip("/")
            attrs.setdefault(label, {a.name: _plain(helper.get_attribute_value(a)) for a in node.attribute})
    parts: dict[str, int] = collections.Counter()
    dtypes: dict[str, str] = {}
    for init in model.graph.initializer:
        part = _initializer_part(init.name)
        parts[part] += _tensor_bytes(init)
        if part in ("experts", "embedding", "lm_head") or "layers.0." in init.name:
            dtypes[init.name] = f"{helper.tensor_dtype_to_string(init.data_type)}{list(init.dims)}"
    return {"model_dir": str(model_dir), "model_bytes": dir_bytes(model_dir), "op_types": dict(sorted(ops.items())),
            "node_attributes": attrs, "initializer_bytes": dict(parts),
            "initializers": {k: v for k, v in dtypes.items() if "layers." not in k or ".layers.0." in k},
            "inputs": [i.name for i in model.graph.input], "outputs": [o.name for o in model.graph.output],
            "genai_config": config}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str)) else str(value)


# -------------------------------------------------------------------------------------------- measure

def vm_hwm_bytes() -> int:
    """Peak RSS of this process since the last reset_peak() (VmHWM), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise PeerError("no VmHWM in /proc/self/status")


def vm_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise PeerError("no VmRSS in /proc/self/status")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class CpuShare:
    """How much of the machine other processes used while a phase ran (0: it had the machine to itself;
    on 2 cores with 2 threads, 0.5 means someone else took a whole core and the phase's times are off)."""

    def __init__(self):
        self.t0, self.busy0, self.mine0 = time.perf_counter(), self._busy_s(), self._mine_s()

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]   # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _mine_s() -> float:
        t = os.times()
        return t.user + t.system

    def foreign(self) -> float:
        wall = time.perf_counter() - self.t0
        other = (self._busy_s() - self.busy0) - (self._mine_s() - self.mine0)
        return round(max(other, 0.0) / (wall * os.cpu_count()), 3) if wall > 0 else 0.0


def prompt_ids(n: int, seed: int = 0):
    """n token ids from the ordinary-text range, the same ids `gptoss bench` feeds our side."""
    import numpy as np

    return np.random.default_rng(seed).integers(*TEXT_IDS, size=n).astype(np.int32)


class Peer:
    """A loaded onnxruntime-genai model, and the timed phases run on it."""

    def __init__(self, model_dir: Path, threads: int):
        import onnxruntime_genai as og

        self.og = og
        if not (model_dir / "genai_config.json").is_file():
            raise PeerError(f"{model_dir} has no genai_config.json: build it first (bench/peer.py build)")
        self.file_config = json.loads((model_dir / "genai_config.json").read_text())
        self.context_length = self.file_config["model"]["context_length"]
        window = self.file_config["model"]["decoder"].get("sliding_window") or {}
        # GroupQueryAttention with sliding_window_cache refuses a KV buffer shorter than the window
        # ("KV cache capacity (37) must be at least local_window_size (128)").
        self.min_max_length = window.get("window_size", 0) + 1
        reset_peak()
        t0 = time.perf_counter()
        config = og.Config(str(model_dir))
        # genai_config.json already says so after `build`; the overlay makes a hand-built model match too.
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.load_s = time.perf_counter() - t0
        self.load_peak_rss_bytes = vm_hwm_bytes()
        self.rss_after_load_bytes = vm_rss_bytes()

    def generator(self, max_length: int):
        if max_length > self.context_length:
            raise PeerError(f"{max_length} tokens exceed the model's context_length {self.context_length}")
        max_length = max(max_length, self.min_max_length)
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max_length, min_length=max_length)
        return self.og.Generator(self.model, params)

    @staticmethod
    def prefill(gen, ids, chunk: int) -> float:
        t0 = time.perf_counter()
        step = chunk if chunk > 0 else len(ids)
        for start in range(0, len(ids), step):
            gen.append_tokens(ids[start:start + step])
        return time.perf_counter() - t0

    def prompt(self, n: int, chunk: int, seed: int) -> dict:
        """Time to first token for an n-token prompt: prefill (logits of the last position), then the
        first greedy token (the generator only samples: its logits are already there)."""
        reset_peak()
        share = CpuShare()
        gen = self.generator(n + 1)
        ids = prompt_ids(n, seed)
        t0 = time.perf_counter()
        prefill_s = self.prefill(gen, ids, chunk)
        gen.generate_next_token()
        ttft = time.perf_counter() - t0
        del gen
        return {"tokens": n, "prefill_chunk": chunk or n, "prefill_s": prefill_s, "prefill_tok_s": n / prefill_s,
                "ttft_s": ttft, "peak_rss_bytes": vm_hwm_bytes(), "foreign_cpu": share.foreign()}

    def decode(self, context: int, new_tokens: int, chunk: int, seed: int) -> dict:
        """context ids prefilled, then new_tokens greedy decode steps (each one forward pass of one token)."""
        reset_peak()
        gen = self.generator(context + new_tokens + 1)
        prefill_s = self.prefill(gen, prompt_ids(context, seed), chunk)
        gen.generate_next_token()   # the first token comes from the prefill's logits: no forward pass
        share = CpuShare()
        steps = []
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            gen.generate_next_token()
            steps.append(time.perf_counter() - t0)
        tokens = [int(t) for t in gen.get_sequence(0)[context:]]
        del gen
        steps_sorted = sorted(steps)
        return {"context": context, "new_tokens": new_tokens, "prefill_chunk": chunk or context,
                "prefill_s": prefill_s, "prefill_tok_s": context / prefill_s,
                "decode_tok_s": new_tokens / sum(steps), "decode_ms_median": 1e3 * steps_sorted[len(steps) // 2],
                "decode_ms_max": 1e3 * steps_sorted[-1], "decode_ms": [round(1e3 * s, 2) for s in steps],
                "peak_rss_bytes": vm_hwm_bytes(), "decode_foreign_cpu": share.foreign(),
                "first_tokens": tokens[:8]}

    def warmup(self) -> float:
        """One short prompt and a few decode steps: the first calls of each shape are slow."""
        t0 = time.perf_counter()
        self.decode(32, 4, 0, seed=1)
        return time.perf_counter() - t0


def measure(model_dir: Path, threads: int = 2, prompts=(128, 512, 2048), contexts=(1024, 8192),
            new_tokens: int = 32, prefill_chunk: int = 0, seed: int = 0, warmup: bool = True) -> dict:
    peer = Peer(model_dir, threads)
    log(f"loaded in {peer.load_s:.2f} s, RSS {peer.rss_after_load_bytes / 2**30:.2f} GiB")
    result = {"model_dir": str(model_dir), "threads": threads, "model_bytes": dir_bytes(model_dir),
              "num_hidden_layers": peer.file_config["model"]["decoder"]["num_hidden_layers"],
              "load_s": peer.load_s, "load_peak_rss_bytes": peer.load_peak_rss_bytes,
              "rss_after_load_bytes": peer.rss_after_load_bytes, "warmup_s": peer.warmup() if warmup else None,
              "prompts": [], "contexts": [], "versions": versions(), "loadavg_start": os.getloadavg()}
    for n in sorted(prompts):
        result["prompts"].append(peer.prompt(n, prefill_chunk, seed))
        log(f"prompt {n}: {json.dumps(result['prompts'][-1])}")
    for c in sorted(contexts):
        result["contexts"].append(peer.decode(c, new_tokens, prefill_chunk, seed))
        log(f"context {c}: {json.dumps(result['contexts'][-1])}")
    result["loadavg_end"] = os.getloadavg()   # other work on the machine skews every number above
    result["peak_rss_bytes"] = max([peer.load_peak_rss_bytes]
                                   + [p["peak_rss_bytes"] for p in result["prompts"] + result["contexts"]])
    return result


# ------------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="onnxruntime-genai's builder: HF checkpoint -> int4 CPU model")
    b.add_argument("ckpt", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--threads", type=int, default=2, help="intra-op threads written to genai_config.json")
    b.add_argument("--precision", choices=["int4", "int8", "fp32"], default="int4",
                   help="the builder's -p (int4: the peer's CPU recipe we compare against)")
    b.add_argument("--force", action="store_true", help="replace OUT if it is not empty")
    b.add_argument("--extra-options", nargs="+", metavar="KEY=VALUE", help="passed to the builder as is")
    i = sub.add_parser("inspect", help="op types, node attributes and initializer bytes of a built model")
    i.add_argument("model", type=Path)
    m = sub.add_parser("measure", help="load, TTFT, prefill and decode tok/s, peak RSS")
    m.add_argument("model", type=Path)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--prompts", type=int, nargs="*", default=[128, 512, 2048], help="prompt lengths (TTFT)")
    m.add_argument("--contexts", type=int, nargs="*", default=[1024, 8192], help="contexts for decode tok/s")
    m.add_argument("--new-tokens", type=int, default=32, help="greedy decode steps per context")
    m.add_argument("--prefill-chunk", type=int, default=0,
                   help="tokens per append_tokens call (0: the whole prompt in one call)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args(argv)
    commands = {
        "build": lambda: build(args.ckpt, args.out, args.threads, args.precision, args.force, args.extra_options),
        "inspect": lambda: inspect(args.model),
        "measure": lambda: measure(args.model, args.threads, args.prompts, args.contexts, args.new_tokens,
                                   args.prefill_chunk, args.seed, warmup=not args.no_warmup),
    }
    return emit(commands[args.command], PeerError)


def emit(command, expected: type[Exception]) -> int:
    """Run a bench script's command and print its JSON: exit 0, 1 when it says {"ok": false}, 2 (with the error as
    JSON) when it raised `expected`."""
    try:
        out = command()
    except expected as e:
        print(json.dumps({"ok": False, "error": str(e)}))
        return 2
    print(json.dumps(out, indent=1))
    return 0 if out.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
