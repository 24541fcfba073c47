"""`gptoss-export` without the `[export]` extra (torch, onnx, ml_dtypes, huggingface_hub not installed): each
command says which extra to install, in one line, instead of a ModuleNotFoundError traceback.

The missing packages are simulated in a fresh interpreter: `sys.modules[name] = None` makes every import of them
fail exactly as an absent package does (ModuleNotFoundError naming the module)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gptoss.compile.cli import EXTRA_OF_MODULE

REPO = Path(__file__).resolve().parents[2]


def _extra_packages(extra: str) -> set[str]:
    """The distributions an extra of pyproject.toml installs, as import names (ml-dtypes -> ml_dtypes)."""
    reqs = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("-", "_") for r in reqs}


def without(modules, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`gptoss-export ARGS` in a fresh interpreter where `modules` cannot be imported."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({sorted(modules)!r})); sys.argv[0] = 'gptoss-export'; "
            "from gptoss.compile.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_module_map_is_the_export_extra():
    assert set(EXTRA_OF_MODULE) == _extra_packages("export")
    assert set(EXTRA_OF_MODULE.values()) == {"export"}


@pytest.mark.parametrize("command", [["export", "{ckpt}", "-o", "{out}"], ["synth", "{out}"], ["targets"],
                                     ["inspect", "{ckpt}"]])
def test_each_command_names_the_extra(command, tiny_hf, tmp_path):
    args = [a.format(ckpt=tiny_hf, out=tmp_path / "out") for a in command]
    run = without(EXTRA_OF_MODULE, *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("Error: this command needs ") and "pip install 'gptoss[export]'" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", sorted(EXTRA_OF_MODULE))
def test_one_missing_package_is_named(missing, tiny_hf, tmp_path):
    """Whichever of the extra's packages the export reaches first and misses is the one named (huggingface_hub:
    only when a repo id sends it to the Hugging Face cache)."""
    source = "openai/gpt-oss-20b" if missing == "huggingface_hub" else str(tiny_hf)
    run = without([missing], "export", source, "-o", str(tmp_path / "out"), "--target", "portable", cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"Error: this command needs {missing}, which is not "
                                                          "installed: it comes with the exporter's extra")


def test_help_works_without_the_extra():
    run = without(EXTRA_OF_MODULE, "synth", "--help")
    assert run.returncode == 0 and "--layers" in run.stdout, run.stderr


def test_other_missing_modules_are_not_blamed_on_the_extra(tiny_hf, tmp_path):
    """A module no extra provides is a real bug: it keeps its traceback."""
    run = without(["tqdm"], "synth", str(tmp_path / "out"))
    assert run.returncode == 1 and "ModuleNotFoundError" in run.stderr and "gptoss[export]" not in run.stderr
