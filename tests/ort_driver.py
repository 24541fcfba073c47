"""A minimal, independent driver of a bundle's graph (the tests' own, not the runtime's).

Reads the manifest through the bundle contract and feeds input_ids/position_ids and per-layer caches exactly as
docs/bundle-format.md says: in "concat" mode it keeps the last `keep` positions of sliding layers; in "shared"
mode it feeds each layer's whole buffer back as it came out. The tests check the graph contract itself.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort

from gptoss.bundle import load_manifest, names


class BundleDriver:
    def __init__(self, bundle: Path):
        self.manifest = load_manifest(bundle)
        self.kv = self.manifest.kv
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(self.manifest.graph_paths("main")[0]), opts,
                                            providers=["CPUExecutionProvider"])

    @property
    def shared(self) -> bool:
        return self.kv.mode == "shared"

    def empty_cache(self, capacity: int = 512):
        """concat mode: empty past; shared mode: zeroed buffers of the layer's capacity (full layers: `capacity`)."""
        def shape(i):
            rows = (self.kv.capacity[i] or capacity) if self.shared else 0
            return (1, self.kv.num_kv_heads, rows, self.kv.head_dim)
        return [(np.zeros(shape(i), np.float32), np.zeros(shape(i), np.float32)) for i in range(self.kv.num_layers)]

    def step(self, tokens: np.ndarray, start: int, cache):
        feeds = {names.INPUT_IDS: tokens[None].astype(np.int64),
                 names.POSITION_IDS: np.arange(start, start + len(tokens), dtype=np.int64)[None]}
        if self.manifest.logits == "selectable":
            feeds[names.LOGITS_FROM] = np.zeros(1, np.int64)        # score every position
        for i, (k, v) in enumerate(cache):
            feeds[names.past_key(i)], feeds[names.past_value(i)] = k, v
        out = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
        new_cache = []
        for i, keep in enumerate(self.kv.keep):
            k, v = out[names.present_key(i)], out[names.present_value(i)]
            if keep is not None and not self.shared:     # shared buffers come back whole, as they went in
                k, v = k[:, :, -keep:], v[:, :, -keep:]
            new_cache.append((k, v))
        return out[names.LOGITS][0], new_cache

    def full(self, tokens: np.ndarray) -> np.ndarray:
        return self.step(tokens, 0, self.empty_cache())[0]

    def prefill_then_decode(self, tokens: np.ndarray, prefill: int) -> np.ndarray:
        logits, cache = self.step(tokens[:prefill], 0, self.empty_cache())
        steps = [logits]
        for t in range(prefill, len(tokens)):
            logits, cache = self.step(tokens[t:t + 1], t, cache)
            steps.append(logits)
        return np.concatenate(steps)
