"""checkpoint -> bundle, one named stage after another, each returning a typed result:

    plan      Plan        the target row, each part's scheme, the logits mode: arguments checked before any work
    read      Source      the checkpoint, every header validated (Checkpoint.open), and a reader of its tensors
    portable  Portable    one portable graph per graph role of the target's shapes (export/graph.py), weights lazy
    lower     Lowered     the target's passes, in order, then its boundary checks; the contract they produced;
                          cut into parts when the target splits its graphs (ir.split)
    write     Written     the graph files and their one weights file, streamed a tensor at a time (ir.onnx_io)
    aot       Written     with --aot, the target's ahead-of-time step (EP context models, targets/aot.py)
    manifest              manifest.json (bundle.Manifest) with the size and sha256 of every file

Everything is written into a temporary sibling folder and renamed into place at the end (staging.py): an
interrupted or failed export leaves no half-written bundle, and an existing bundle is replaced only with `force`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gptoss import __version__
from gptoss.bundle.manifest import GraphContract, GraphFile, Manifest, TargetSpec, TokenizerSpec
from gptoss.bundle.shapes import Static
from gptoss.export.checkpoint import Checkpoint, mxfp4_reader
from gptoss.export.config import ModelConfig
from gptoss.export.errors import ExportError
from gptoss.export.graph import build_portable_graph
from gptoss.export.hub import resolve_checkpoint
from gptoss.ir.graph import Graph
from gptoss.targets.base import LoweringContext, Target
from gptoss.targets.passes.checks import check_lowered
from gptoss.targets.registry import get_target

from .staging import Log, staged_folder, write_tokenizer

WEIGHTS_FILE = "model.weights"
GRAPH_FILES = {"main": "model.onnx", "prefill": "prefill.onnx", "decode": "decode.onnx"}


@dataclass(frozen=True)
class Plan:
    target: Target
    schemes: dict[str, str]
    logits: str
    aot: bool = False
    kv_dtype: str | None = None        # a KV cache dtype other than the target's own (--kv-cache), else None


@dataclass(frozen=True)
class Source:
    checkpoint: Checkpoint
    read: Callable
    config: ModelConfig


@dataclass(frozen=True)
class Portable:
    graphs: dict[str, Graph]          # role -> graph
    contract: GraphContract


@dataclass(frozen=True)
class Lowered:
    graphs: dict[str, list[Graph]]    # role -> its parts, in order (one unless the target splits)
    contract: GraphContract


@dataclass(frozen=True)
class Written:
    graph_files: dict[str, GraphFile]
    parts: dict[str, int]             # packed bytes per part
    weights: tuple[str, ...] = (WEIGHTS_FILE,)


def plan(target: str | Target, quant: dict[str, str] | None, logits: str | None, aot: bool = False,
         kv_cache: str | None = None) -> Plan:
    tgt = target if isinstance(target, Target) else get_target(target)
    if aot and tgt.aot is None:
        raise ExportError(f"target {tgt.name} has no ahead-of-time step; drop --aot")
    static = isinstance(tgt.shapes, Static)
    logits = logits or ("all" if static else "selectable")
    if static and logits != "all":
        raise ExportError(f"target {tgt.name} has static shapes, whose graphs return every position's logits: "
                          f"--logits must be 'all', got {logits!r}")
    return Plan(tgt, tgt.schemes(quant), logits, aot, tgt.cache_dtype(kv_cache))


def read(checkpoint_dir: str | Path, layout: str | None) -> Source:
    ckpt = Checkpoint.open(checkpoint_dir, layout=layout)
    return Source(ckpt, mxfp4_reader(ckpt), ckpt.config)


def _named(checkpoint: str | Path, folder: Path) -> str:
    """What stage 1 prints: the folder, and the repo id it was found for when it came from the Hugging Face cache."""
    return str(folder) if Path(checkpoint) == folder else f"{checkpoint} (Hugging Face cache: {folder})"


def portable(source: Source, p: Plan) -> Portable:
    graphs, contracts = {}, set()
    for role, tokens in p.target.shapes.graph_tokens().items():
        graphs[role], contract = build_portable_graph(source.config, source.read, logits=p.logits,
                                                      kv_dtype=p.target.kv_dtype, shapes=p.target.shapes,
                                                      tokens=tokens, activations=p.target.activations)
        contracts.add(contract)
    (contract,) = contracts
    return Portable(graphs, contract)


def lower(graphs: Portable, p: Plan, config: ModelConfig) -> Lowered:
    ctx = LoweringContext(p.schemes, p.kv_dtype, capturable=p.target.graph_capture is not None)
    contracts, lowered = set(), {}
    for role, graph in graphs.graphs.items():
        contract = graphs.contract
        for pass_ in p.target.passes:
            contract = pass_(graph, contract, ctx)
        graph.drop_dead_nodes()
        check_lowered(graph, p.target)
        contracts.add(contract)
        lowered[role] = _split(graph, p.target, config)
    (contract,) = contracts
    if p.target.kv_device:
        contract = dataclasses.replace(contract, kv=dataclasses.replace(contract.kv, device="device"))
        contract.kv.validate()
    return Lowered(lowered, contract)


def _split(graph: Graph, target: Target, config: ModelConfig) -> list[Graph]:
    if target.split is None:
        return [graph]
    from gptoss.bundle import names
    from gptoss.ir.split import split_graph

    ids = next(v for v in graph.inputs if v.name == names.INPUT_IDS)
    batch, seq = [d.dim_value or d.dim_param for d in ids.type.tensor_type.shape.dim]
    return split_graph(graph, target.split.cuts(config.num_hidden_layers), [batch, seq, config.hidden_size],
                       names.HIDDEN_IN, names.HIDDEN_OUT)


def write(lowered: Lowered, folder: Path, after_tensor: Callable[[], None], log: Log) -> Written:
    """Stream the weights; after each tensor the checkpoint's pages are released (RSS stays flat)."""
    from gptoss.ir.onnx_io import weights_nbytes, write_onnx

    files = {role: GraphFile(role, _part_files(GRAPH_FILES[role], len(lowered.graphs[role])), tokens)
             for role, tokens in lowered.contract.shapes.graph_tokens().items()}
    graphs = {name: g for role, parts in lowered.graphs.items() for name, g in zip(files[role].parts, parts)}
    with log.bytes_bar(weights_nbytes(graphs), "weights") as bar:
        def on_tensor(t):
            after_tensor()
            bar(t.nbytes)

        try:
            parts = write_onnx(graphs, folder, WEIGHTS_FILE, on_tensor=on_tensor)
        except OSError as e:
            raise ExportError(f"writing the bundle into {folder}: {e.strerror or e}") from None
    return Written(files, parts)


def _part_files(name: str, count: int) -> tuple[str, ...]:
    """model.onnx, or model.part0.onnx, model.part1.onnx, ... for a graph cut into `count` parts."""
    if count == 1:
        return (name,)
    stem, suffix = name.rsplit(".", 1)
    return tuple(f"{stem}.part{k}.{suffix}" for k in range(count))


def ahead_of_time(p: Plan, folder: Path, written: Written) -> Written:
    if not p.aot:
        return written
    compiled = p.target.aot(folder, {role: f.parts for role, f in written.graph_files.items()}, p.target)
    if not any(_uses_external_data(folder / part) for parts in compiled.values() for part in parts):
        for w in written.weights:                       # the compiled contexts carry the weights now
            (folder / w).unlink()
    weights = tuple(w for w in written.weights if (folder / w).exists())
    return Written({role: GraphFile(role, tuple(compiled[role]), f.tokens) for role, f in written.graph_files.items()},
                   written.parts, weights)


def calibrate(lowered: Lowered, written: Written, folder: Path, tokenizer: dict | None, config: ModelConfig,
              log: Log) -> None:
    """An int8 KV cache: measure its scales on a calibration prompt through the written graph (compile/calibrate.py)."""
    if lowered.contract.kv.dtype != "int8":
        return
    from .calibrate import calibrate_int8_cache, calibration_ids

    (graph_file,) = [part for f in written.graph_files.values() for part in f.parts]
    ids = calibration_ids(folder / tokenizer["dir"] if tokenizer else None, config.vocab_size)
    log.line(f"calibrating the int8 KV cache on {len(ids)} tokens")
    calibrate_int8_cache(folder, graph_file, lowered.contract.kv, ids)


def _uses_external_data(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def manifest(p: Plan, source: Source, lowered: Lowered, written: Written, tokenizer: dict | None, folder: Path,
             log: Log) -> Manifest:
    from gptoss.bundle.files import listing

    t = p.target
    return Manifest(
        model=source.config.to_dict(),
        target=TargetSpec(t.name, t.provider.name, dict(t.provider_options), dict(t.session_options),
                          t.graph_capture),
        graphs=written.graph_files, weights=written.weights, contract=lowered.contract, quant=dict(p.schemes),
        parts=written.parts, tokenizer=TokenizerSpec(**{**tokenizer, "files": tuple(tokenizer["files"])})
        if tokenizer else None,
        files=listing(folder, progress=log.files_bar), created_by=f"gptoss {__version__}",
        source={"layout": source.checkpoint.layout, "dense_experts": source.checkpoint.dense_experts})


def export_bundle(checkpoint_dir: str | Path, out_dir: str | Path, target: str | Target = "cpu",
                  quant: dict[str, str] | None = None, logits: str | None = None, force: bool = False,
                  layout: str | None = None, progress: bool = False, aot: bool = False,
                  revision: str | None = None, kv_cache: str | None = None) -> Path:
    """Export a gpt-oss checkpoint into a self-contained bundle for one target. Returns the bundle path.

    checkpoint_dir: a folder, or a Hugging Face repo id found in the local cache (export/hub.py; `revision`:
    its branch, tag or commit, default main); layout "original" takes its original/ subfolder.
    logits: "selectable" (default on dynamic targets), "all" or "last"; static targets return "all".
    aot: also compile the graphs ahead of time with the target's provider (targets with an AOT step).
    kv_cache: a KV cache dtype other than the target's own, among its `kv_dtypes` (cpu: "int8", calibrated)."""
    log, out_dir, t0 = Log(progress), Path(out_dir), time.time()
    p = plan(target, quant, logits, aot, kv_cache)
    folder = resolve_checkpoint(checkpoint_dir, revision)
    log.stage(1, "validate", _named(checkpoint_dir, folder))
    source = read(folder, layout)
    with staged_folder(out_dir, force, source.checkpoint.inputs) as tmp:
        log.stage(2, "tokenizer", "o200k_harmony, offline")
        tokenizer = write_tokenizer(tmp, source.checkpoint)
        log.stage(3, "graph", f"{source.config.num_hidden_layers} layers, {source.config.num_experts} experts")
        graphs = portable(source, p)
        log.stage(4, "lower", f"target {p.target.name}: {', '.join(x.name for x in p.target.passes) or 'no passes'}")
        lowered = lower(graphs, p, source.config)
        log.stage(5, "write", "weights, streamed")
        written = write(lowered, tmp, source.checkpoint.release_pages, log)
        calibrate(lowered, written, tmp, tokenizer, source.config, log)
        written = ahead_of_time(p, tmp, written)
        log.stage(6, "manifest", "checksums")
        manifest(p, source, lowered, written, tokenizer, tmp, log).write(tmp)
    log.line(f"done in {time.time() - t0:.1f} s: {out_dir}")
    return out_dir

