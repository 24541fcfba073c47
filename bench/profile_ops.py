"""Per-op time of one graph call on a bundle (ONNX Runtime's profiler), for finding where time goes.

    python bench/profile_ops.py BUNDLE T      # one call appending T tokens to an empty cache (T=1: a decode step)
    GRAPH=other.onnx python bench/profile_ops.py BUNDLE T   # an edited copy of the graph beside model.onnx

Prints the call's wall time and the kernel time per op type (the second of two identical calls).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gptoss.bundle import load_manifest, names

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/ is not a package: its siblings, by name
from decode_account import kernel_time_per_op


def feeds(manifest, T: int) -> dict:
    kv = manifest.kv
    f = {names.INPUT_IDS: np.random.default_rng(0).integers(1000, 199998, (1, T)),
         names.POSITION_IDS: np.arange(T)[None]}
    if manifest.logits == "selectable":
        f[names.LOGITS_FROM] = np.array([T - 1])
    for i in range(kv.num_layers):
        rows = (kv.capacity[i] or T + 1) if kv.mode == "shared" else 0      # shared: whole buffers; concat: empty
        for name in (names.past_key(i), names.past_value(i)):
            f[name] = np.zeros((1, kv.num_kv_heads, rows, kv.head_dim), np.dtype(kv.dtype))
    return f


def main(bundle: str, T: int) -> None:
    manifest = load_manifest(bundle)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 2, True
    graph = os.environ.get("GRAPH") or manifest.graphs["main"].parts[0]
    session = ort.InferenceSession(os.path.join(bundle, graph), so, providers=["CPUExecutionProvider"])
    f = feeds(manifest, T)
    session.run(None, f)
    session.run(None, f)
    path = session.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    os.remove(path)
    last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    per_op = kernel_time_per_op(events, last["ts"])
    total = sum(per_op.values())
    print("run ms", last["dur"] / 1000)
    for op, d in per_op.most_common(6):
        print(f"  {op:28s} {d / 1000:8.1f} ms {100 * d / total:5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
