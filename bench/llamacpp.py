"""The second peer: llama.cpp (through llama-cpp-python's C API bindings), measured the way bench/peer.py measures
onnxruntime-genai and bench/ours.py measures ours.

Runs in its own virtual environment, never in the project's (it does not import gptoss):

    /work/llama-venv/bin/python bench/llamacpp.py convert CKPT OUT.gguf [--outtype q8_0] [--force]
    /work/llama-venv/bin/python bench/llamacpp.py measure MODEL.gguf [--threads 2] [--prompts 128 512 2048]
                                             [--contexts 1024 8192] [--new-tokens 32] [--ubatch 512]
                                             [--flash-attn auto|on|off]
    /work/llama-venv/bin/python bench/llamacpp.py check MODEL.gguf [--threads 2] [--tokens 64] [--new-tokens 16]

Each command prints one JSON object on stdout (progress goes to stderr), in the schema of peer.py / ours.py.

convert  llama.cpp's own converter (the vendored convert_hf_to_gguf.py of the llama-cpp-python sdist, see
         bench/README.md) on a Hugging Face checkpoint folder: the MXFP4 experts pass through as GGUF MXFP4 (the
         checkpoint's bytes, repacked), `--outtype q8_0` makes the other matrices Q8_0 (symmetric int8, blocks of
         32, an fp16 scale each: the closest match to our default int8 dense weights); the router, norms, biases
         and sinks stay F32 whatever the outtype. Written to OUT.gguf.part, renamed when complete.
measure  model load time (llama_model_load_from_file, memory-mapped as llama.cpp does by default); per prompt
         length N: time to first token and prefill tok/s (N ids in one llama_decode, then the greedy token: argmax
         of the last position's logits); per context C: C ids prefilled, then decode tok/s over M greedy steps,
         each one llama_decode of one token. A fresh llama_context per phase, sized to it (n_ctx = tokens + 1:
         as peer.py sizes its generator and ours.py its cache); its creation is outside the timed region.
check    the same prompt greedily decoded in two fresh contexts must give the same tokens, and every logits row
         read must be finite.

Prompts are the ids our own `gptoss bench` uses (peer.prompt_ids). n_threads = n_threads_batch = --threads.
llama_decode splits a batch into micro-batches of --ubatch tokens (llama.cpp's default, 512); only the last
position's logits are computed. Flash attention is llama.cpp's default, `auto` (on where the CPU backend has it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import CpuShare, emit, prompt_ids, reset_peak, vm_hwm_bytes, vm_rss_bytes  # noqa: E402  (stdlib only)
from peer import log as peer_log  # noqa: E402
from peer import versions as package_versions  # noqa: E402

PACKAGES = ("llama-cpp-python", "gguf", "numpy", "torch", "transformers", "safetensors")
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}       # enum llama_flash_attn_type
DEFAULT_CONVERTER = Path("/work/llama-venv/src/llama.cpp/convert_hf_to_gguf.py")
# llama.cpp's log lines worth keeping in the JSON: what it resolved at load and context creation.
LOG_KEYS = re.compile(r"flash_attn|n_ctx|n_ubatch|n_batch|buffer size|type\s+\w+:|file type|n_swa|CPU_REPACK"
                      r"|model size|causal_attn|swa_full|n_expert")


class LlamaCppError(RuntimeError):
    """A step that cannot go on (missing file, a failed load or decode, an out-of-range request)."""


def versions() -> dict:
    return package_versions(PACKAGES)


def log(msg: str) -> None:
    peer_log(msg, "llama.cpp")


# ---------------------------------------------------------------------------------------------- convert

def convert(ckpt: Path, out: Path, outtype: str = "q8_0", converter: Path = DEFAULT_CONVERTER,
            force: bool = False) -> dict:
    """Run llama.cpp's convert_hf_to_gguf.py on ckpt (wall time, peak RSS, exit status, log tail on failure)."""
    from peer import log_tail, run_measured

    if not (ckpt / "config.json").is_file():
        raise LlamaCppError(f"{ckpt} has no config.json: not a Hugging Face checkpoint folder")
    if not converter.is_file():
        raise LlamaCppError(f"{converter} does not exist: copy llama.cpp's converter there (bench/README.md)")
    if out.exists() and not force:
        raise LlamaCppError(f"{out} exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    log_path = out.with_name(out.name + ".convert.log")
    cmd = [sys.executable, str(converter), str(ckpt), "--outfile", str(part), "--outtype", outtype]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log(f"converting: {' '.join(cmd)}")
    try:
        result = run_measured(cmd, log_path, env)
        if result["returncode"] == 0:
            part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    result.update(command=cmd, log=str(log_path), checkpoint=str(ckpt), output=str(out), outtype=outtype,
                  versions=versions())
    if result["returncode"] != 0:
        result.update(ok=False, error=log_tail(log_path))
        return result
    result.update(ok=True, model_bytes=out.stat().st_size, tensor_types=tensor_types(out))
    return result


def tensor_types(gguf_path: Path) -> dict:
    """{GGML type: [tensor count, bytes]} of a GGUF file (needs the gguf package)."""
    from gguf import GGUFReader

    counts: dict[str, list[int]] = {}
    for t in GGUFReader(str(gguf_path)).tensors:
        entry = counts.setdefault(t.tensor_type.name, [0, 0])
        entry[0] += 1
        entry[1] += int(t.n_bytes)
    return counts


# ---------------------------------------------------------------------------------------------- the model

class LlamaCpp:
    """A llama.cpp model loaded through llama-cpp-python's ctypes API, and the timed phases run on it."""

    def __init__(self, path: Path, threads: int, ubatch: int = 512, flash_attn: str = "auto"):
        import llama_cpp

        if not path.is_file():
            raise LlamaCppError(f"{path} does not exist: convert a checkpoint first (bench/llamacpp.py convert)")
        self.lib, self.threads, self.ubatch = llama_cpp, threads, ubatch
        self.flash_attn = FLASH_ATTN[flash_attn]
        self.log_lines: list[str] = []
        self._log_cb = llama_cpp.llama_log_callback(self._on_log)     # kept: the C side holds the pointer
        llama_cpp.llama_log_set(self._log_cb, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()               # mmap on, no GPU layers
        reset_peak()
        t0 = time.perf_counter()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        self.load_s = time.perf_counter() - t0
        if not self.model:
            raise LlamaCppError(f"llama.cpp could not load {path}: {' '.join(self.errors()[-3:])}")
        self.load_peak_rss_bytes = vm_hwm_bytes()
        self.rss_after_load_bytes = vm_rss_bytes()
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.n_layer = llama_cpp.llama_model_n_layer(self.model)
        self.n_ctx_train = llama_cpp.llama_n_ctx_train(self.model)

    def _on_log(self, level: int, text: bytes, _user) -> None:
        line = text.decode("utf-8", errors="replace").rstrip("\n")
        if line:
            self.log_lines.append(line)
            if level in (2, 3):        # GGML_LOG_LEVEL_WARN, _ERROR
                print(f"[llama.cpp] {line}", file=sys.stderr, flush=True)

    def errors(self) -> list[str]:
        return [line for line in self.log_lines if "error" in line.lower() or "failed" in line.lower()]

    def settings(self) -> list[str]:
        """The log lines that say what llama.cpp resolved (flash attention, buffer sizes, tensor types)."""
        seen, out = set(), []
        for line in self.log_lines:
            if LOG_KEYS.search(line) and line not in seen:
                seen.add(line)
                out.append(line.strip())
        return out

    def context(self, tokens: int):
        """A fresh llama_context for `tokens` positions, with one llama_decode able to take them all."""
        if tokens > self.n_ctx_train:
            raise LlamaCppError(f"{tokens} tokens exceed the model's context length {self.n_ctx_train}")
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = tokens
        params.n_batch = tokens
        params.n_ubatch = min(self.ubatch, tokens)
        params.n_threads = params.n_threads_batch = self.threads
        params.flash_attn_type = self.flash_attn
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise LlamaCppError(f"llama.cpp could not create a {tokens}-token context: {' '.join(self.errors()[-3:])}")
        return ctx

    def forward(self, ctx, ids) -> np.ndarray:
        """ids through the model in one llama_decode; the last position's logits (a view into llama.cpp's buffer,
        valid until the next call)."""
        lib = self.lib
        arr = (lib.llama_token * len(ids))(*ids)
        rc = lib.llama_decode(ctx, lib.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise LlamaCppError(f"llama_decode of {len(ids)} tokens returned {rc}: {' '.join(self.errors()[-3:])}")
        return np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,))

    def prompt(self, n: int, seed: int) -> dict:
        """Time to first token for an n-token prompt: prefill (the last position's logits), then the greedy token."""
        reset_peak()
        share = CpuShare()
        ctx = self.context(n + 1)
        ids = prompt_ids(n, seed).tolist()
        try:
            t0 = time.perf_counter()
            logits = self.forward(ctx, ids)
            prefill_s = time.perf_counter() - t0
            int(np.argmax(logits))                       # the first greedy token
            ttft = time.perf_counter() - t0
        finally:
            self.lib.llama_free(ctx)
        return {"tokens": n, "prefill_chunk": n, "ubatch": min(self.ubatch, n), "prefill_s": prefill_s,
                "prefill_tok_s": n / prefill_s, "ttft_s": ttft, "peak_rss_bytes": vm_hwm_bytes(),
                "foreign_cpu": share.foreign()}

    def decode(self, context: int, new_tokens: int, seed: int, keep_logits: bool = False) -> dict:
        """context ids prefilled, then new_tokens greedy decode steps (each one llama_decode of one token)."""
        reset_peak()
        ctx = self.context(context + new_tokens + 1)
        rows = []
        try:
            t0 = time.perf_counter()
            logits = self.forward(ctx, prompt_ids(context, seed).tolist())
            prefill_s = time.perf_counter() - t0
            token = int(np.argmax(logits))
            if keep_logits:
                rows.append(logits.copy())
            share = CpuShare()
            steps, tokens = [], [token]
            for _ in range(new_tokens):
                t1 = time.perf_counter()
                logits = self.forward(ctx, [token])
                token = int(np.argmax(logits))
                steps.append(time.perf_counter() - t1)
                tokens.append(token)
                if keep_logits:
                    rows.append(logits.copy())
        finally:
            self.lib.llama_free(ctx)
        steps_sorted = sorted(steps)
        out = {"context": context, "new_tokens": new_tokens, "prefill_chunk": context,
               "ubatch": min(self.ubatch, context), "prefill_s": prefill_s, "prefill_tok_s": context / prefill_s,
               "decode_tok_s": new_tokens / sum(steps), "decode_ms_median": 1e3 * steps_sorted[len(steps) // 2],
               "decode_ms_max": 1e3 * steps_sorted[-1], "decode_ms": [round(1e3 * s, 2) for s in steps],
               "peak_rss_bytes": vm_hwm_bytes(), "decode_foreign_cpu": share.foreign(), "first_tokens": tokens[:8]}
        if keep_logits:
            out["tokens"], out["logits"] = tokens, rows
        return out

    def warmup(self) -> float:
        """One short prompt and a few decode steps: the first calls of each shape are slow."""
        t0 = time.perf_counter()
        self.decode(32, 4, seed=1)
        return time.perf_counter() - t0


def measure(path: Path, threads: int = 2, prompts=(128, 512, 2048), contexts=(1024, 8192), new_tokens: int = 32,
            seed: int = 0, ubatch: int = 512, flash_attn: str = "auto", warmup: bool = True) -> dict:
    m = LlamaCpp(path, threads, ubatch, flash_attn)
    log(f"loaded in {m.load_s:.2f} s, RSS {m.rss_after_load_bytes / 2**30:.2f} GiB")
    result = {"model": str(path), "threads": threads, "model_bytes": path.stat().st_size,
              "num_hidden_layers": m.n_layer, "ubatch": ubatch, "flash_attn": flash_attn,
              "load_s": m.load_s, "load_peak_rss_bytes": m.load_peak_rss_bytes,
              "rss_after_load_bytes": m.rss_after_load_bytes, "warmup_s": m.warmup() if warmup else None,
              "prompts": [], "contexts": [], "versions": versions(),
              "system_info": m.lib.llama_print_system_info().decode().strip(), "loadavg_start": os.getloadavg()}
    for n in sorted(prompts):
        result["prompts"].append(m.prompt(n, seed))
        log(f"prompt {n}: {json.dumps(result['prompts'][-1])}")
    for c in sorted(contexts):
        result["contexts"].append(m.decode(c, new_tokens, seed))
        log(f"context {c}: {json.dumps(result['contexts'][-1])}")
    result["loadavg_end"] = os.getloadavg()   # other work on the machine skews every number above
    result["peak_rss_bytes"] = max([m.load_peak_rss_bytes]
                                   + [p["peak_rss_bytes"] for p in result["prompts"] + result["contexts"]])
    result["llama_log"] = m.settings()
    return result


def check(path: Path, threads: int = 2, tokens: int = 64, new_tokens: int = 16, seed: int = 0,
          ubatch: int = 512, flash_attn: str = "auto") -> dict:
    """Greedy decoding is deterministic (two fresh contexts, the same tokens) and every logits row is finite."""
    m = LlamaCpp(path, threads, ubatch, flash_attn)
    runs = [m.decode(tokens, new_tokens, seed, keep_logits=True) for _ in range(2)]
    first, second = (np.stack(r["logits"]) for r in runs)
    same, finite = runs[0]["tokens"] == runs[1]["tokens"], bool(np.isfinite(first).all() and np.isfinite(second).all())
    return {"ok": same and finite, "model": str(path), "prompt_tokens": tokens, "new_tokens": new_tokens,
            "tokens": [r["tokens"] for r in runs], "same_tokens": same, "logits_finite": finite,
            "max_abs_logit_diff_between_runs": float(np.abs(first - second).max()),
            "logit_range": [float(first.min()), float(first.max())], "n_vocab": m.n_vocab,
            "llama_log": m.settings(), "versions": versions()}


# ------------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="llama.cpp's convert_hf_to_gguf.py: HF checkpoint -> GGUF (MXFP4 experts)")
    c.add_argument("ckpt", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--outtype", default="q8_0", help="the converter's --outtype for the non-expert matrices")
    c.add_argument("--converter", type=Path, default=DEFAULT_CONVERTER)
    c.add_argument("--force", action="store_true", help="replace OUT if it exists")
    for name, helptext in (("measure", "load, TTFT, prefill and decode tok/s, peak RSS"),
                           ("check", "greedy determinism and finite logits")):
        m = sub.add_parser(name, help=helptext)
        m.add_argument("model", type=Path)
        m.add_argument("--threads", type=int, default=2)
        m.add_argument("--ubatch", type=int, default=512, help="llama.cpp's micro-batch (n_ubatch)")
        m.add_argument("--flash-attn", choices=sorted(FLASH_ATTN), default="auto")
        m.add_argument("--seed", type=int, default=0)
        if name == "measure":
            m.add_argument("--prompts", type=int, nargs="*", default=[128, 512, 2048], help="prompt lengths (TTFT)")
            m.add_argument("--contexts", type=int, nargs="*", default=[1024, 8192], help="contexts for decode tok/s")
            m.add_argument("--new-tokens", type=int, default=32, help="greedy decode steps per context")
            m.add_argument("--no-warmup", action="store_true")
        else:
            m.add_argument("--tokens", type=int, default=64, help="prompt length")
            m.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    commands = {
        "convert": lambda: convert(args.ckpt, args.out, args.outtype, args.converter, args.force),
        "measure": lambda: measure(args.model, args.threads, args.prompts, args.contexts, args.new_tokens, args.seed,
                                   args.ubatch, args.flash_attn, warmup=not args.no_warmup),
        "check": lambda: check(args.model, args.threads, args.tokens, args.new_tokens, args.seed, args.ubatch,
                               args.flash_attn),
    }
    return emit(commands[args.command], LlamaCppError)


if __name__ == "__main__":
    sys.exit(main())
