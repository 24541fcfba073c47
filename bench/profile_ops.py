"""Per-op time of one graph call on a bundle (ONNX Runtime's profiler), for finding where time goes.

    python bench/profile_ops.py BUNDLE T      # one call appending T tokens to an empty cache (T=1: a decode step)
    GRAPH=other.onnx python bench/profile_ops.py BUNDLE T   # an edited copy of the graph beside model.onnx

Prints the call's wall time and the kernel time per op type (the second of two identical calls).
"""
import onnxruntime as ort, numpy as np, json, sys, os, collections
b = sys.argv[1]; T = int(sys.argv[2])
m = json.load(open(f"{b}/manifest.json")); kv = m["graph"]["kv_cache"]
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.enable_profiling = True
s = ort.InferenceSession(f"{b}/" + os.environ.get("GRAPH", "model.onnx"), so, providers=["CPUExecutionProvider"])
L = len(kv["window"]); H = kv["num_kv_heads"]; D = kv["head_dim"]
f = {"input_ids": np.random.default_rng(0).integers(1000, 199998, (1, T)), "position_ids": np.arange(T)[None]}
if "logits_from" in m["graph"]["inputs"]:
    f["logits_from"] = np.array([T - 1])
shared = kv.get("mode") == "shared"
for i in range(L):
    rows = (kv["capacity"][i] or T + 1) if shared else 0      # shared: whole buffers; concat: empty past
    f[f"past_key.{i}"] = np.zeros((1, H, rows, D), np.float32); f[f"past_value.{i}"] = np.zeros((1, H, rows, D), np.float32)
s.run(None, f); s.run(None, f)
p = s.end_profiling(); ev = json.load(open(p)); os.remove(p)
runs = [e for e in ev if e.get("cat") == "Session" and e["name"] == "model_run"]
last = runs[-1]; agg = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last["ts"]:
        agg[e["args"]["op_name"]] += e["dur"]
tot = sum(agg.values()); print("run ms", last["dur"]/1000)
for op, d in agg.most_common(6): print(f"  {op:28s} {d/1000:8.1f} ms {100*d/tot:5.1f}%")
