"""A minimal, independent driver of a bundle's graph (the tests' own, not the runtime's).

Feeds input_ids/position_ids and per-layer caches exactly as docs/bundle-format.md says: in "concat" mode
it keeps the last `keep` positions of sliding layers; in "shared" mode it feeds each layer's whole buffer
back as it came out. The tests check the graph contract itself.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


class BundleDriver:
    def __init__(self, bundle: Path):
        self.manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        self.kv = self.manifest["graph"]["kv_cache"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(Path(bundle) / self.manifest["graph"]["file"]), opts,
                                            providers=["CPUExecutionProvider"])
        self.layers = len(self.kv["window"])

    @property
    def shared(self) -> bool:
        return self.kv.get("mode", "concat") == "shared"

    def empty_cache(self, capacity: int = 512):
        """concat mode: empty past; shared mode: zeroed buffers of the layer's capacity (full layers: `capacity`)."""
        def shape(i):
            rows = (self.kv["capacity"][i] or capacity) if self.shared else 0
            return (1, self.kv["num_kv_heads"], rows, self.kv["head_dim"])
        return [(np.zeros(shape(i), np.float32), np.zeros(shape(i), np.float32)) for i in range(self.layers)]

    def step(self, tokens: np.ndarray, start: int, cache):
        feeds = {"input_ids": tokens[None].astype(np.int64),
                 "position_ids": np.arange(start, start + len(tokens), dtype=np.int64)[None]}
        if "logits_from" in self.manifest["graph"]["inputs"]:
            feeds["logits_from"] = np.zeros(1, np.int64)        # score every position
        for i, (k, v) in enumerate(cache):
            feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = k, v
        out = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
        new_cache = []
        for i, keep in enumerate(self.kv["keep"]):
            k, v = out[f"present_key.{i}"], out[f"present_value.{i}"]
            if keep is not None and not self.shared:     # shared buffers come back whole, as they went in
                k, v = k[:, :, -keep:], v[:, :, -keep:]
            new_cache.append((k, v))
        return out["logits"][0], new_cache

    def full(self, tokens: np.ndarray) -> np.ndarray:
        return self.step(tokens, 0, self.empty_cache())[0]

    def prefill_then_decode(self, tokens: np.ndarray, prefill: int) -> np.ndarray:
        logits, cache = self.step(tokens[:prefill], 0, self.empty_cache())
        steps = [logits]
        for t in range(prefill, len(tokens)):
            logits, cache = self.step(tokens[t:t + 1], t, cache)
            steps.append(logits)
        return np.concatenate(steps)
