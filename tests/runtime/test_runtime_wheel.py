"""The minimal runtime wheel: built from packaging/runtime, it holds the root gptoss/__init__.py and errors.py, the
bundle contract and the runtime only, installs into an empty virtual environment with onnxruntime, numpy, tiktoken and click, and runs a
tiny bundle there exactly as the development install does."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gptoss.runtime import Model
from helpers import FP32

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
from gptoss.runtime import Model
m = Model.load(sys.argv[1])
ids = [e.token_id for e in m.generate("Hello world", max_new_tokens=12, temperature=0, stop_tokens=())]
heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "onnx"))
try:
    import gptoss.export
    has_export = True
except ImportError:
    has_export = False
print(json.dumps({"ids": ids, "heavy": heavy, "has_export": has_export}))
"""


def run(cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", REPO / "packaging" / "runtime",
         "-w", out])
    (wheel,) = out.glob("gptoss_runtime-*.whl")
    return wheel


def test_wheel_holds_only_the_runtime(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert "gptoss/__init__.py" in code and "gptoss/runtime/model.py" in code and "gptoss/runtime/cli.py" in code
    assert all(n in ("gptoss/__init__.py", "gptoss/errors.py") or n.startswith(("gptoss/runtime/", "gptoss/bundle/"))
               for n in code), code
    expected = {f"gptoss/{p.relative_to(REPO).as_posix()}" for d in ("runtime", "bundle") for p in (REPO / d).rglob("*.py")}
    assert expected == set(code) - {"gptoss/__init__.py", "gptoss/errors.py"}
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    lines = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    name = lambda req: req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip()  # noqa: E731
    assert sorted(name(r) for r in lines if "extra ==" not in r) == ["click", "numpy", "onnxruntime", "tiktoken"]
    assert "onnxruntime<1.33,>=1.32" in [r.split(";")[0].replace(" ", "") for r in lines]      # 1.32's kernels
    extras = {(r.split("extra ==")[1].strip(" '\""), name(r)) for r in lines if "extra ==" in r}
    assert extras == {("qnn", "onnxruntime-qnn"), ("openvino", "onnxruntime-ep-openvino"),
                      ("webgpu", "onnxruntime-ep-webgpu"), ("trt-rtx", "onnxruntime-ep-nv-tensorrt-rtx"),
                      ("serve", "starlette"), ("serve", "uvicorn")}
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gptoss = gptoss.runtime.cli:main" in entry


@pytest.mark.slow
def test_wheel_runs_a_bundle_in_an_empty_venv(wheel, tiny_bundle, tmp_path):
    bundle = tiny_bundle("cpu", quant=FP32)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])          # no system site-packages: only what the wheel pulls in
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", wheel])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = json.loads(run([python, "-c", CHECK, bundle], env=env, cwd=tmp_path).strip().splitlines()[-1])
    expected = [e.token_id for e in Model.load(bundle).generate("Hello world", max_new_tokens=12, temperature=0,
                                                                stop_tokens=())]
    assert result == {"ids": expected, "heavy": [], "has_export": False}
    bench = json.loads(run([venv / "bin" / "gptoss", "bench", bundle, "--prompt-tokens", 8, "--new-tokens", 2,
                            "--json"], env=env, cwd=tmp_path))
    assert bench["decode_tok_s"] > 0


def test_wheel_requirements_agree_with_the_project(wheel):
    """The runtime wheel asks for what the project asks for: the Python version, each base dependency's versions
    (onnxruntime 1.32, whose kernels bundles need; click for the `gptoss` command), the plugin extras, the license."""
    import email.parser
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = zipfile.ZipFile(wheel).namelist()
    meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(
        "METADATA"))).decode())
    assert meta["Requires-Python"] == project["requires-python"]
    assert meta["License-Expression"] == project["license"]
    declared = {None: {Requirement(r).name: Requirement(r).specifier for r in project["dependencies"]}}
    declared |= {extra: {Requirement(r).name: Requirement(r).specifier for r in reqs}
                 for extra, reqs in project["optional-dependencies"].items()}
    wheel_extras = set()
    for line in meta.get_all("Requires-Dist"):
        req = Requirement(line)
        extra = next(e for e in declared if e and req.marker.evaluate({"extra": e})) if req.marker else None
        wheel_extras.add(extra)
        assert req.specifier == declared[extra][req.name], f"{line}: the project asks for {declared[extra]}"
    assert {"qnn", "openvino", "webgpu", "trt-rtx"} <= wheel_extras
