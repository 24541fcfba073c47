"""Logits of onnxruntime-genai for one prompt, every position (runs in the peer's virtual environment).

    /work/peer-venv/bin/python bench/peer_logits.py MODEL_DIR IDS.npy OUT.npy

Writes float32 [T, vocab]: the logits of the prompt pass, for bench/fidelity.py to compare with the reference.
"""

import sys

import numpy as np
import onnxruntime_genai as og


def main(model_dir: str, ids_path: str, out_path: str) -> None:
    ids = np.load(ids_path).astype(np.int32)
    model = og.Model(model_dir)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=max(len(ids) + 1, 129))
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    np.save(out_path, np.asarray(generator.get_output("logits"), dtype=np.float32)[0])


if __name__ == "__main__":
    main(*sys.argv[1:4])
