"""Build `gptoss-runtime` (or one of its flavors) from the repository's `__init__.py`, `errors.py`, `bundle/` and
`runtime/`.

The repository root is the `gptoss` package, so the sources are staged into build/src/gptoss first (only the root
`__init__.py` and `errors.py`, the bundle contract and the runtime: the wheel never holds export/, compile/, ir/,
quant/ or targets/), then packaged.

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
# Bundles need ONNX Runtime 1.32's contrib kernels (QMoE fp4, GroupQueryAttention with head_sink).
FLAVORS = {
    "cpu": ("", "onnxruntime>=1.32,<1.33"),
    "gpu": ("-gpu", "onnxruntime-gpu>=1.32,<1.33"),
}
COMMON = ["numpy>=1.26", "tiktoken>=0.9", "click>=8.1"]
# Plugin execution providers install beside the stock onnxruntime: extras (the runtime registers them itself); so
# does the HTTP server's web stack.
EXTRAS = {
    "qnn": ["onnxruntime-qnn>=2.7"],
    "openvino": ["onnxruntime-ep-openvino>=1.8"],
    "webgpu": ["onnxruntime-ep-webgpu>=0.4"],
    "trt-rtx": ["onnxruntime-ep-nv-tensorrt-rtx>=0.5"],
    # `gptoss serve` (gptoss/runtime/serve/, shipped in the wheel, imported only by that command)
    "serve": ["starlette>=0.37", "uvicorn>=0.30"],
}
MODULES = ("__init__.py", "errors.py")            # the root package's own modules the runtime needs
PACKAGES = ("bundle", "runtime")                  # copied whole (their .py files, subpackages included)


def stage() -> list[str]:
    """Copy the runtime's sources into STAGE/gptoss; return the package names to ship."""
    shutil.rmtree(STAGE, ignore_errors=True)
    pkg = STAGE / "gptoss"
    pkg.mkdir(parents=True)
    for name in MODULES:
        shutil.copy2(REPO / name, pkg / name)
    for package in PACKAGES:
        for source in sorted((REPO / package).rglob("*.py")):
            target = pkg / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return packages()


def packages() -> list[str]:
    root = STAGE / "gptoss"
    return ["gptoss"] + sorted("gptoss." + ".".join(p.parent.relative_to(root).parts)
                               for p in root.rglob("__init__.py") if p.parent != root)


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
    license_expression="Apache-2.0",
    python_requires=">=3.11",
    package_dir={"": os.path.relpath(STAGE, HERE)},
    packages=packages(),
    install_requires=[onnxruntime, *COMMON],
    extras_require=EXTRAS if flavor == "cpu" else {},
    entry_points={"console_scripts": ["gptoss = gptoss.runtime.cli:main"]},
    zip_safe=False,
)
