"""Build `gptoss-runtime` (or one of its flavors) from the repository's `__init__.py` and `runtime/`.

The repository root is the `gptoss` package, so the sources are staged into build/src/gptoss first (only
`__init__.py` and `runtime/*.py`: the wheel never holds export/, quant/ or targets/), then packaged.

One onnxruntime package per flavor, chosen with GPTOSS_RUNTIME_FLAVOR at build time. They are separate
distributions rather than extras because an extra cannot *replace* a dependency: `gptoss-runtime[gpu]`
would install onnxruntime and onnxruntime-gpu side by side, and both own the `onnxruntime` module.
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STAGE = HERE / "build" / "src"

# flavor -> (distribution name suffix, the onnxruntime package it runs on)
FLAVORS = {
    "cpu": ("", "onnxruntime>=1.20"),
    "gpu": ("-gpu", "onnxruntime-gpu>=1.20"),
    "qnn": ("-qnn", "onnxruntime-qnn>=1.20"),
    "directml": ("-directml", "onnxruntime-directml>=1.20"),
    "openvino": ("-openvino", "onnxruntime-openvino>=1.20"),
}
COMMON = ["numpy>=1.26", "tiktoken>=0.9", "click>=8.1"]


def stage() -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    pkg = STAGE / "gptoss"
    (pkg / "runtime").mkdir(parents=True)
    shutil.copy2(REPO / "__init__.py", pkg / "__init__.py")
    for source in sorted((REPO / "runtime").glob("*.py")):
        shutil.copy2(source, pkg / "runtime" / source.name)


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (REPO / "__init__.py").read_text(), re.M)
    if not match:
        raise SystemExit(f"no __version__ in {REPO / '__init__.py'}")
    return match.group(1)


flavor = os.environ.get("GPTOSS_RUNTIME_FLAVOR", "cpu")
if flavor not in FLAVORS:
    raise SystemExit(f"GPTOSS_RUNTIME_FLAVOR={flavor!r}; known: {sorted(FLAVORS)}")
suffix, onnxruntime = FLAVORS[flavor]
if (REPO / "runtime").is_dir():       # building from the repository (not from an sdist)
    stage()

setup(
    name=f"gptoss-runtime{suffix}",
    version=version() if (REPO / "__init__.py").is_file() else "0.0.0",
    description="The lean gpt-oss runtime: run gptoss bundles with ONNX Runtime (numpy + tiktoken, no torch)",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": os.path.relpath(STAGE, HERE)},
    packages=["gptoss", "gptoss.runtime"],
    install_requires=[onnxruntime, *COMMON],
    entry_points={"console_scripts": ["gptoss = gptoss.runtime.cli:main"]},
    zip_safe=False,
)
