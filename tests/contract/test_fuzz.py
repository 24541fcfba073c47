"""Fuzzing bundles and checkpoints (issue 12): seeded mutants of every file the project reads, each of which must
either work or fail with ONE line from a GptOssError that names the file at fault (its path); never another
exception type, never a crash.

Bundles (the tiny cpu bundle of conftest, files hard-linked, a mutated file written anew): byte flips, truncations,
insertions, deletions and overwrites of manifest.json, model.onnx, model.weights and the tokenizer files, plus
structured mutations of the manifest and encoding.json (keys deleted or renamed, values of the wrong type, huge
numbers, NaN, paths with '..', absolute, with a backslash or a NUL). Half the byte mutants of a listed file are
"relisted" (their new size and sha256 written into the manifest, as a bundle that rewrites its own manifest would
do), so they get past the integrity check to the parsers behind it. Each mutant is loaded (`Model.load`) and
takes one decode step, which gives finite logits or an error, and its tokenizer encodes and decodes a line. These
reach onnxruntime, whose parser a hostile graph might crash: they run in a worker process (this file, run as a
script), which reports each mutant before trying it; after a crash the next worker goes on with the rest.

Checkpoints (a smaller synthetic one than conftest's tiny_hf, sharded so it has an index, with a 512-token vocabulary:
its export takes 0.05 s instead of 4 s; and an `original/` layout one): structured mutations of config.json, the
index json, original/dtypes.json and the safetensors headers (dtype, shape, data_offsets, __metadata__, the header
length), byte mutations anywhere. Each mutant is opened and every tensor read (Checkpoint.open/read, what an export
streams), in process (no onnxruntime); the first MAX_EXPORTS that read cleanly are exported, and the bundles they
give take a decode step in the worker like the bundle mutants.

SEED fixes every mutant; GPTOSS_FUZZ_SEED=N runs another set (the test prints the failing mutants' names).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SEED = int(os.environ.get("GPTOSS_FUZZ_SEED", "12"))
MAX_EXPORTS = 16
WORKER_TIMEOUT_S = 120
PROMPT = [1, 2, 3]
MARK = "FUZZ "                      # the worker's report lines (onnxruntime may print to stdout too)
HUGE_INT = "1" + "0" * 5000        # past Python's 4300-digit int parsing limit: json.loads raises ValueError
ODD_VALUES = [None, True, False, 0, -1, 1, 2**31, 2**63, 2**64 + 1, 1e308, -1e308, 1e-320, float("nan"),
              float("inf"), "", "x", "../outside", "/etc/passwd", "a/../../b", "a\\b", "nul\x00byte", "\u202e", "\ud800",
              [], [1, "a"], {}, {"a": 1}, HUGE_INT]


# ---------------------------------------------------------------------------------------------- the mutations

def mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One byte-level mutation: (what it did, the new bytes)."""
    n = len(data)
    at = rng.randrange(max(n, 1))
    kind = rng.choice(["flip", "flip", "truncate", "insert", "delete", "overwrite"])
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= rng.randrange(1, 256)
        return f"flip@{at}", bytes(out)
    if kind == "truncate":
        return f"truncate@{at}", data[:at]
    if kind == "insert":
        return f"insert@{at}", data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    if kind == "delete":
        return f"delete@{at}", data[:at] + data[at + rng.randint(1, 64):]
    return f"overwrite@{at}", data[:at] + rng.randbytes(min(rng.randint(1, 64), n - at)) + data[at + 64:]


def _locations(doc, path=()):
    """Every (container, key) in a JSON document, depth first, with its dotted path."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield path + (key,), doc, key
        yield from _locations(value, path + (key,))


def _odd_string(rng: random.Random, value: str) -> str:
    return rng.choice([f"../{value}", f"/{value}", f"{value}/../..", f"..\\{value}", f"{value}\x00",
                       value.upper(), value * 50, ""])


def mutate_json(rng: random.Random, doc) -> tuple[str, str]:
    """One structured mutation of a JSON document: (what it did, the new text). The text may hold NaN or a
    5000-digit integer, as a hostile file may."""
    doc = json.loads(json.dumps(doc))
    where, container, key = rng.choice(list(_locations(doc)))
    value = container[key]
    kind = rng.choice(["delete", "odd", "odd", "rename", "nudge"] + ["path"] * isinstance(value, str))
    if kind == "delete" or (kind == "rename" and isinstance(container, list)):
        kind = "delete"
        del container[key]
    elif kind == "rename":
        container[f"{key}_"] = container.pop(key)
    elif kind == "path":
        container[key] = _odd_string(rng, value)
    elif kind == "nudge" and isinstance(value, (int, float)) and not isinstance(value, bool):
        container[key] = rng.choice([value + 1, value - 1, -value, value * 1000, 0, value / 3])
    else:
        kind = "odd"
        container[key] = rng.choice(ODD_VALUES)
    text = json.dumps(doc, allow_nan=True).replace(json.dumps(HUGE_INT), HUGE_INT)
    return f"{kind} {'.'.join(map(str, where))}", text


def replace(path: Path, data: bytes) -> None:
    """Write a new file at `path`: never through a hard link into the shared original."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def linked_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def relist(folder: Path, rel: str) -> None:
    """Record `rel`'s current size and sha256 in the bundle's manifest (a bundle rewriting its own manifest)."""
    doc = json.loads((folder / "manifest.json").read_text())
    data = (folder / rel).read_bytes()
    doc["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    replace(folder / "manifest.json", json.dumps(doc).encode())


# -------------------------------------------------------------------------------------------- the outcomes

def outcome_of(call) -> dict:
    """Run `call()`: {"outcome": "ok"} or the exception's type, whether it is a GptOssError, its message."""
    from gptoss.errors import GptOssError

    try:
        call()
        return {"outcome": "ok"}
    except BaseException as e:      # a fuzzer reports everything, tiktoken's PanicException included
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"outcome": "error", "type": type(e).__name__, "ours": isinstance(e, GptOssError),
                "message": str(e)}


def faults(results: dict[str, dict], folders: dict[str, Path]) -> list[str]:
    """The mutants whose outcome breaks the rule: a crash, a foreign exception, a message of several lines or one
    that does not name the file (the mutant's folder)."""
    bad = []
    for name, r in results.items():
        if r["outcome"] == "ok":
            continue
        if r["outcome"] == "crash":
            bad.append(f"{name}: the worker died (status {r['status']}): {r['stderr'][-300:]}")
        elif not r["ours"]:
            bad.append(f"{name}: {r['type']}: {r['message'][:300]}")
        elif "\n" in r["message"].strip():
            bad.append(f"{name}: {r['type']} of several lines: {r['message'][:300]!r}")
        elif str(folders[name]) not in r["message"]:
            bad.append(f"{name}: {r['type']} names no file of {folders[name]}: {r['message'][:300]}")
    return bad


# ---------------------------------------------------------------------- the worker (bundles: onnxruntime)

def probe_bundle(folder: Path) -> None:
    """Load a bundle, take one decode step, and round-trip a line through its tokenizer."""
    from gptoss.runtime import Model

    model = Model.load(folder)
    list(model.generate(PROMPT, max_new_tokens=1, temperature=0, stop_tokens=()))   # non-finite logits raise
    if model.tokenizer is not None:
        model.decode(model.encode("Hello, world! 🤖"))


def worker(jobs_file: str) -> None:
    """Probe each (name, folder) of the jobs file, reporting before each start and after each outcome."""
    for name, folder in json.loads(Path(jobs_file).read_text()):
        print(MARK + json.dumps({"start": name}), flush=True)
        print(MARK + json.dumps({"name": name, **outcome_of(lambda: probe_bundle(Path(folder)))}), flush=True)


def run_in_workers(jobs: dict[str, Path], tmp_path: Path) -> dict[str, dict]:
    """Each bundle's outcome from worker processes; a mutant that kills its worker is a "crash"."""
    results: dict[str, dict] = {}
    todo = list(jobs)
    while todo:
        jobs_file = tmp_path / f"jobs-{len(results)}.json"
        jobs_file.write_text(json.dumps([(n, str(jobs[n])) for n in todo]))
        proc = subprocess.run([sys.executable, __file__, str(jobs_file)], capture_output=True, text=True,
                              timeout=WORKER_TIMEOUT_S)
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith(MARK):
                record = json.loads(line[len(MARK):])
                started = record.get("start", started)
                if "outcome" in record:
                    results[record.pop("name")] = record
                    started = None
        if started is not None:             # it died on this one
            results[started] = {"outcome": "crash", "status": proc.returncode, "stderr": proc.stderr}
        elif proc.returncode != 0 and all(n not in results for n in todo):
            raise AssertionError(f"the fuzz worker failed before any mutant: {proc.stderr[-2000:]}")
        todo = [n for n in todo if n not in results]
    return results


# --------------------------------------------------------------------------------------- bundle mutants

BUNDLE_PLANS = {        # base bundle -> (file, how many byte mutants, how many structured mutants)
    "tiny": [("manifest.json", 4, 16), ("tokenizer/encoding.json", 3, 8), ("tokenizer/o200k_base.tiktoken", 4, 0)],
    "small": [("manifest.json", 10, 70), ("model.onnx", 40, 0), ("model.weights", 10, 0)],
}
"""The tiny bundle (conftest's, with the o200k tokenizer, whose load takes ~0.4 s) for the tokenizer files and some
manifest keys; the small one (no tokenizer, 1.4 MB of weights, loads in 15 ms) for the rest."""


def bundle_mutants(base: Path, plan: list, root: Path, rng: random.Random) -> dict[str, Path]:
    """name -> a mutated copy of bundle `base` under `root`."""
    out: dict[str, Path] = {}
    for rel, n_bytes, n_json in plan:
        original = (base / rel).read_bytes()
        for k in range(n_bytes + n_json):
            folder = linked_copy(base, root / f"{rel.replace('/', '_')}-{k}")
            if k < n_bytes:
                what, data = mutate_bytes(rng, original)
                replace(folder / rel, data)
                if rel != "manifest.json" and rng.random() < 0.5:
                    relist(folder, rel)
                    what += " relisted"
            else:
                what, text = mutate_json(rng, json.loads(original))
                replace(folder / rel, text.encode())
                if rel != "manifest.json":
                    relist(folder, rel)
            out[f"{rel}: {what}"] = folder
    return out


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from helpers import FP32

    return tiny_bundle("cpu", quant=FP32)


@pytest.fixture(scope="module")
def small_bundle(small_checkpoints, tmp_path_factory):
    from gptoss.compile.pipeline import export_bundle

    return export_bundle(small_checkpoints["hf"], tmp_path_factory.mktemp("fuzz-bundle") / "small", target="cpu")


@pytest.mark.parametrize("base", sorted(BUNDLE_PLANS))
def test_fuzzed_bundles_work_or_fail_with_one_line_naming_the_file(base, request, tmp_path):
    folder = request.getfixturevalue({"tiny": "bundle", "small": "small_bundle"}[base])
    jobs = bundle_mutants(folder, BUNDLE_PLANS[base], tmp_path / "mutants", random.Random(f"{SEED} {base}"))
    results = run_in_workers(jobs, tmp_path)
    bad = faults(results, jobs)
    assert not bad, f"{len(bad)} of {len(jobs)} mutants (seed {SEED}):\n" + "\n".join(bad)
    kinds = {r["type"] for r in results.values() if r["outcome"] == "error"}
    worked = sum(r["outcome"] == "ok" for r in results.values())
    assert "BundleError" in kinds and worked >= 3, (kinds, worked)      # the fuzzer reaches both sides


def test_inspect_of_a_truncated_manifest_is_one_line(bundle, tmp_path):
    """`gptoss-export inspect` on manifest.json cut at every 97th byte: one `Error:` line naming the file."""
    from click.testing import CliRunner

    from gptoss.compile.cli import main

    folder = linked_copy(bundle, tmp_path / "cut")
    data = (bundle / "manifest.json").read_bytes()
    end = len(data.rstrip())                        # cut at least the closing brace
    for n in [*range(0, end, 97), end - 1]:
        replace(folder / "manifest.json", data[:n])
        result = CliRunner().invoke(main, ["inspect", str(folder)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (n, result.output)
        assert lines[0].startswith(f"Error: {folder / 'manifest.json'}: not valid JSON"), (n, lines)


# ----------------------------------------------------------------------------------- checkpoint mutants

@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """layout -> a small checkpoint: 2 layers, a 512-token vocabulary; the hf one sharded in 3 (an index)."""
    from gptoss.export.config import preset
    from gptoss.export.synth import write_synthetic

    cfg = preset("tiny").replace(vocab_size=512, num_hidden_layers=2)
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    return {"hf": write_synthetic(root / "hf", cfg, layout="hf", seed=0, max_shard_bytes=200_000),
            "original": write_synthetic(root / "original", cfg, layout="original", seed=0)}


def safetensors_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """A structured mutation of a safetensors file's header, or of its 8-byte header length."""
    (n,) = struct.unpack("<Q", data[:8])
    if rng.random() < 0.15:
        length = rng.choice([0, 1, n - 1, n + 1, len(data), 2**63, 2**64 - 1])
        return f"header length {length}", struct.pack("<Q", length) + data[8:]
    what, text = mutate_json(rng, json.loads(data[8:8 + n]))
    header = text.encode()
    return f"header {what}", struct.pack("<Q", len(header)) + header + data[8 + n:]


def checkpoint_files(folder: Path) -> dict[str, str]:
    """Relative path -> how to mutate it structurally ("json", "safetensors")."""
    kinds = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if f.suffix == ".safetensors":
            kinds[rel] = "safetensors"
        elif f.name in ("config.json", "dtypes.json", "model.safetensors.index.json"):
            kinds[rel] = "json"
    return kinds


def checkpoint_mutants(bases: dict[str, Path], root: Path, rng: random.Random, count: int) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for layout, base in bases.items():
        files = checkpoint_files(base)
        for k in range(count):
            rel = rng.choice(sorted(files))
            folder = linked_copy(base, root / f"{layout}-{k}")
            original = (base / rel).read_bytes()
            if rng.random() < 0.25:
                what, data = mutate_bytes(rng, original)
            elif files[rel] == "safetensors":
                what, data = safetensors_mutation(rng, original)
            else:
                what, text = mutate_json(rng, json.loads(original))
                data = text.encode()
            replace(folder / rel, data)
            out[f"{layout} {rel}: {what}"] = folder
    return out


def probe_checkpoint(folder: Path) -> None:
    from gptoss.export.checkpoint import Checkpoint

    ckpt = Checkpoint.open(folder)
    for name in ckpt.canonical_names():
        ckpt.read(name)


def test_fuzzed_checkpoints_read_or_fail_with_one_line_naming_the_file(small_checkpoints, tmp_path):
    from gptoss.compile.pipeline import export_bundle

    mutants = checkpoint_mutants(small_checkpoints, tmp_path / "mutants", random.Random(SEED), count=90)
    results = {name: outcome_of(lambda: probe_checkpoint(folder)) for name, folder in mutants.items()}
    exported: dict[str, Path] = {}
    for name in [n for n, r in results.items() if r["outcome"] == "ok"][:MAX_EXPORTS]:
        out = tmp_path / "bundles" / f"b{len(exported)}"
        results[name] = outcome_of(lambda: export_bundle(mutants[name], out, target="cpu"))
        if results[name]["outcome"] == "ok":
            exported[f"{name} (its bundle)"] = out
    bad = faults(results, mutants)
    assert not bad, f"{len(bad)} of {len(mutants)} checkpoint mutants (seed {SEED}):\n" + "\n".join(bad)
    assert sum(r["outcome"] == "error" for r in results.values()) >= len(mutants) // 3 and len(exported) >= 3
    decoded = run_in_workers(exported, tmp_path)
    bad = faults(decoded, exported)
    assert not bad, f"{len(bad)} bundles of mutated checkpoints (seed {SEED}):\n" + "\n".join(bad)


# ---------------------------------------------------------- what the fuzzer found (each raised a foreign exception)

def _edit_json(rel: str, edit):
    def apply(folder: Path) -> None:
        doc = json.loads((folder / rel).read_text())
        edit(doc)
        replace(folder / rel, json.dumps(doc).replace(json.dumps(HUGE_INT), HUGE_INT).encode())
    return apply


def _edit_header(rel: str, edit):
    def apply(folder: Path) -> None:
        data = (folder / rel).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        edit(header)
        text = json.dumps(header).replace(json.dumps(HUGE_INT), HUGE_INT).encode()
        replace(folder / rel, struct.pack("<Q", len(text)) + text + data[8 + n:])
    return apply


def _first_tensor(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


def _bad_bytes(rel: str, at: int):
    return lambda folder: replace(folder / rel, (folder / rel).read_bytes()[:at] + b"\xc3\x28" +
                                  (folder / rel).read_bytes()[at:])


SHARD = "model-00001-of-00003.safetensors"
CHECKPOINT_REGRESSIONS = {      # name -> (layout, how to break it, the file named, words of the error)
    "config.json not UTF-8 (UnicodeDecodeError)": ("hf", _bad_bytes("config.json", 20), "config.json",
                                                   "not valid JSON"),
    "config.json with a 5000-digit integer (ValueError)": (
        "hf", _edit_json("config.json", lambda d: d.update(use_cache=HUGE_INT)), "config.json", "not valid JSON"),
    "an index entry's name too long (OSError)": (
        "hf", _edit_json("model.safetensors.index.json",
                         lambda d: d["weight_map"].update({next(iter(d["weight_map"])): "x" * 300})),
        "model.safetensors.index.json", "cannot be opened (File name too long)"),
    "a header dtype that is a list (TypeError)": (
        "hf", _edit_header(SHARD, lambda h: _first_tensor(h).update(dtype=["BF16"])), SHARD, "unknown dtype"),
    "a header shape of booleans": (
        "hf", _edit_header(SHARD, lambda h: _first_tensor(h).update(shape=[True])), SHARD, "malformed shape"),
    "a header with a 5000-digit offset (ValueError)": (
        "hf", _edit_header(SHARD, lambda h: _first_tensor(h).update(data_offsets=[0, HUGE_INT])), SHARD,
        "header is not valid JSON"),
    "original/dtypes.json naming a dict (TypeError)": (
        "original", _edit_json("original/dtypes.json", lambda d: d.update({next(iter(d)): {}})),
        "original/dtypes.json", "is listed as {}"),
}


@pytest.mark.parametrize("name", CHECKPOINT_REGRESSIONS)
def test_checkpoint_regressions_are_one_line_errors(small_checkpoints, tmp_path, name):
    from gptoss.export.errors import CheckpointError

    layout, breaks, rel, words = CHECKPOINT_REGRESSIONS[name]
    folder = linked_copy(small_checkpoints[layout], tmp_path / "bad")
    breaks(folder)
    with pytest.raises(CheckpointError) as info:
        probe_checkpoint(folder)
    message = str(info.value)
    assert message.startswith(str(folder / rel)) and words in message and "\n" not in message, message


BUNDLE_REGRESSIONS = {          # name -> (how to break it, the exception, words of the error)
    "manifest.json with a 5000-digit integer (ValueError)": (
        _edit_json("manifest.json", lambda d: d["model"].update(hidden_size=HUGE_INT)), "BundleError",
        "manifest.json: not valid JSON"),
    "a graph file name too long (OSError)": (
        _edit_json("manifest.json", lambda d: d["graphs"]["main"].update(parts=["x" * 300])), "BundleError",
        "manifest.json: 'graphs.main.parts': 'xxx"),
    "a weights path too long (OSError)": (
        _edit_json("manifest.json", lambda d: d.update(weights=["a/" * 600 + "w"])), "BundleError",
        "manifest.json: 'weights': 'a/a/"),
    "a file name that is a lone surrogate (UnicodeEncodeError)": (
        _edit_json("manifest.json", lambda d: d["files"].update({"\ud800": d["files"]["model.onnx"]})),
        "BundleError", "manifest.json: 'files': '\\ud800' is not a valid file name"),
    "an unknown execution provider (named no file)": (
        _edit_json("manifest.json", lambda d: d["target"].update(execution_provider="tpu")), "ProviderError",
        "manifest.json: 'target.execution_provider': unknown execution provider 'tpu'"),
}


@pytest.mark.parametrize("name", BUNDLE_REGRESSIONS)
def test_bundle_regressions_are_one_line_errors(small_bundle, tmp_path, name):
    breaks, kind, words = BUNDLE_REGRESSIONS[name]
    folder = linked_copy(small_bundle, tmp_path / "bad")
    breaks(folder)
    result = outcome_of(lambda: probe_bundle(folder))
    assert (result.get("type"), result["outcome"]) == (kind, "error"), result
    assert result["message"].startswith(f"{folder}/{words}") and "\n" not in result["message"], result


def test_an_encoding_json_with_a_5000_digit_integer_is_a_tokenizer_error(bundle, tmp_path):
    from gptoss.bundle import TokenizerError
    from gptoss.bundle.tokenizer import read_tokenizer_dir

    folder = linked_copy(bundle / "tokenizer", tmp_path / "tokenizer")
    _edit_json("encoding.json", lambda d: d.update(n_vocab=HUGE_INT))(folder)
    with pytest.raises(TokenizerError, match=f"^{folder}/encoding.json: not valid JSON"):
        read_tokenizer_dir(folder)


if __name__ == "__main__":
    worker(sys.argv[1])
