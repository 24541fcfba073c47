"""Nothing lost, nothing half-written (issue 12 items 1, 2 and 8): where an export or a synth may write, what
`--force` may replace, killed writers cleaned up after, atomic replaces, and the machine's errors (a full disk, a
read-only mount, a folder in use) as one line.

Before: `gptoss-export export CK -o CK --force` deleted the checkpoint and exited 0; a SIGKILL left `.b.tmp-PID`
folders no later export removed; a kill between the two renames of a replace left no bundle at all; ENOSPC, EROFS
and `-o .` (EBUSY) ended in tracebacks."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gptoss.compile.cli import main
from gptoss.compile.pipeline import export_bundle
from gptoss.export import output_folder
from gptoss.export.checkpoint import Checkpoint
from gptoss.export.errors import ExportError
from gptoss.export.synth import synth_config, write_synthetic

SMALL = synth_config("tiny", vocab=256, layers=1)
REPO = Path(__file__).resolve().parents[2]


def cli(*args, cwd=None):
    if cwd is None:
        return CliRunner().invoke(main, [str(a) for a in args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


def one_line_error(r) -> str:
    """The CLI's error: exit status 2, no traceback, `Error: ...` as the last line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("Error: ")
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below `folder` (following symlinks)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The id of a process that has exited."""
    r = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    return int(r.stdout)


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def fake_bundle(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "gptoss-bundle", "format_version": 1}))
    return folder


@pytest.fixture
def ck(tmp_path):
    return write_synthetic(tmp_path / "ck", SMALL, layout="hf", seed=5)


# ------------------------------------------------------------------------------------ item 1: the input is safe
@pytest.mark.parametrize("where", ["itself", "inside", "original inside"])
def test_export_never_writes_onto_or_into_its_checkpoint(tmp_path, where):
    ck = write_synthetic(tmp_path / "ck", SMALL, layout="original" if "original" in where else "hf", seed=5)
    out = {"itself": ck, "inside": ck / "sub", "original inside": ck / "original"}[where]
    before = snapshot(ck)
    line = one_line_error(cli("export", ck, "-o", out, "--force", "--target", "portable"))
    assert "the input" in line or "inside the input folder" in line
    assert snapshot(ck) == before and Checkpoint.open(ck).config.to_original() == SMALL.to_original()
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_export_never_replaces_a_folder_holding_its_checkpoint(tmp_path):
    """Even when that folder looks like a previous bundle (a manifest.json), which --force could otherwise replace."""
    parent = fake_bundle(tmp_path / "old-bundle")
    ck = write_synthetic(parent / "ck", SMALL, layout="hf", seed=5)
    before = snapshot(parent)
    line = one_line_error(cli("export", ck, "-o", parent, "--force", "--target", "portable"))
    assert f"holds the input {ck}" in line
    assert snapshot(parent) == before


def test_export_never_replaces_the_hf_cache_blobs_its_snapshot_links_to(tmp_path, ck):
    """A cache snapshot's files are symlinks into ../../blobs: the blobs folder holds the real input."""
    repo = tmp_path / "hub" / "models--openai--gpt-oss-tiny"
    snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in ck.iterdir():
        blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
        os.link(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    fake_bundle(blobs)                               # as if it looked like a bundle, the worst case
    before = snapshot(repo)
    line = one_line_error(cli("export", snap, "-o", blobs, "--force", "--target", "portable"))
    assert "holds the input" in line and snapshot(repo) == before


def test_force_replaces_only_an_empty_folder_or_a_previous_bundle(tmp_path, ck):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    line = one_line_error(cli("export", ck, "-o", home, "--force", "--target", "portable"))
    assert "does not hold a bundle; --force replaces only an empty folder or a previous bundle" in line
    assert (home / "thesis.tex").read_text() == "years of work"
    (home / "manifest.json").write_text('{"format": "something else"}')
    one_line_error(cli("export", ck, "-o", home, "--force", "--target", "portable"))
    (home / "manifest.json").write_text("{not json")
    one_line_error(cli("export", ck, "-o", home, "--force", "--target", "portable"))
    assert (home / "thesis.tex").exists() and siblings(home) == []


def test_synth_force_replaces_only_an_empty_folder_or_a_checkpoint(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    line = one_line_error(cli("synth", home, "--vocab", 256, "--layers", 1, "--force"))
    assert "does not hold a checkpoint" in line and (home / "thesis.tex").exists()
    bundle = fake_bundle(tmp_path / "bundle")
    one_line_error(cli("synth", bundle, "--vocab", 256, "--layers", 1, "--force"))
    assert (bundle / "manifest.json").exists()
    ck = write_synthetic(tmp_path / "ck", SMALL, layout="original", seed=1)
    assert cli("synth", ck, "--vocab", 256, "--layers", 1, "--force").exit_code == 0
    assert Checkpoint.open(ck).layout == "hf" and not (ck / "original").exists()


@pytest.mark.parametrize("command", ["export", "synth"])
def test_the_current_folder_is_never_replaced(tmp_path, ck, command):
    """`-o .` used to fail with a raw EBUSY traceback (or rename the folder the shell stands in)."""
    here = tmp_path / "here"
    here.mkdir()
    args = ["export", ck, "-o", ".", "--target", "portable"] if command == "export" else \
        ["synth", ".", "--vocab", 256, "--layers", 1]
    line = one_line_error(cli(*args, cwd=here))
    assert "is the current folder or holds it" in line
    assert list(here.iterdir()) == [] and siblings(here) == []


# ------------------------------------------------------------------------------------ item 2: killed writers
@pytest.mark.parametrize("previous", [False, True])
def test_stale_folders_of_dead_processes_are_removed_by_the_next_write(tmp_path, previous):
    out = tmp_path / "ck"
    if previous:
        write_synthetic(out, SMALL, seed=1)
    dead = dead_pid()
    for kind in ("tmp", "old") if previous else ("tmp",):   # `.old-` with no `out` is put back: another test
        stale = tmp_path / f".ck.{kind}-{dead}"
        stale.mkdir()
        (stale / "model.safetensors").write_bytes(b"x" * 1000)
    write_synthetic(out, SMALL, seed=2, force=previous)
    assert siblings(out) == [] and Checkpoint.open(out).config == SMALL


def test_a_live_writers_folder_is_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".ck.tmp-{sleeper.pid}"
        live.mkdir()
        write_synthetic(tmp_path / "ck", SMALL)
        assert live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    write_synthetic(tmp_path / "ck", SMALL, force=True)
    assert siblings(tmp_path / "ck") == []


def run_killed(code: str, ready_file: Path | None = None, timeout: float = 120) -> int:
    """Run `code` in a fresh Python; SIGKILL it once `ready_file` exists (or let it kill itself). Returns its pid."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if ready_file is not None:
        t0 = time.time()
        while not ready_file.exists():
            if proc.poll() is not None or time.time() - t0 > timeout:
                proc.kill()
                raise AssertionError(f"the child never got ready: {proc.communicate()[1][-3000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode in (-signal.SIGKILL, 9), err[-3000:]     # SIGKILL, or os._exit(9)
    return proc.pid


def test_sigkilled_export_leaves_a_folder_the_next_export_removes(tmp_path, tiny_hf):
    """A real SIGKILL in the middle of writing the weights, then a real export to the same path."""
    out, ready = tmp_path / "b", tmp_path / "ready"
    pid = run_killed(f"""
        import time
        from pathlib import Path
        import gptoss.compile.pipeline as pipeline
        def write(*args, **kwargs):
            Path({str(ready)!r}).touch()
            time.sleep(120)
        pipeline.write = write
        pipeline.export_bundle({str(tiny_hf)!r}, {str(out)!r}, target="portable")
    """, ready)
    assert siblings(out) == [f".b.tmp-{pid}"] and not out.exists()
    export_bundle(tiny_hf, out, target="portable")
    assert siblings(out) == [] and (out / "manifest.json").is_file()


def kill_during_replace(out: Path, seed: int, where: str) -> int:
    """A synth --force that dies (os._exit: no handler, no cleanup) at `where` of its replace of `out`."""
    return run_killed(f"""
        import os
        from pathlib import Path
        from gptoss.export import output_folder
        from gptoss.export.synth import synth_config, write_synthetic
        out = Path({str(out)!r})
        if {where!r} == "between renames":          # the fallback replace, without RENAME_EXCHANGE
            output_folder.exchange = lambda a, b: False
            rename = os.rename
            def dying_rename(src, dst):
                rename(src, dst)
                if Path(src) == out:
                    os._exit(9)
            output_folder.os.rename = dying_rename
        else:                                       # after the exchange, while the previous folder is removed
            exchange, remove, swapped = output_folder.exchange, output_folder._remove, []
            output_folder.exchange = lambda a, b: swapped.append(exchange(a, b)) or swapped[-1]
            output_folder._remove = lambda path: os._exit(9) if swapped else remove(path)
        write_synthetic(out, synth_config("tiny", vocab=256, layers=1), seed={seed}, force=True)
    """)


def test_a_kill_between_the_two_renames_is_recovered_by_the_next_run(tmp_path):
    out = write_synthetic(tmp_path / "ck", SMALL, seed=1)
    before = snapshot(out)
    pid = kill_during_replace(out, seed=2, where="between renames")
    assert not out.exists() and siblings(out) == [f".ck.old-{pid}", f".ck.tmp-{pid}"]
    with pytest.raises(ExportError, match="pass --force"):   # the previous checkpoint is back, and not empty
        write_synthetic(out, SMALL, seed=3)
    assert snapshot(out) == before and siblings(out) == []


def test_the_replace_is_one_step_on_linux(tmp_path):
    """With RENAME_EXCHANGE the new folder takes the old one's place at once: killed right after, `out` already holds
    the new checkpoint, and the old one, left stale, is removed by the next run."""
    if output_folder._renameat2() is None:
        pytest.skip("no renameat2 in this C library")
    out = write_synthetic(tmp_path / "ck", SMALL, seed=1)
    old = Checkpoint.open(out).read("layers.0.sinks").copy()
    pid = kill_during_replace(out, seed=2, where="after the exchange")
    new = Checkpoint.open(out).read("layers.0.sinks")
    assert not np.array_equal(old.view(np.uint16), new.view(np.uint16))
    assert siblings(out) == [f".ck.tmp-{pid}"]
    write_synthetic(tmp_path / "other", SMALL)               # another output: its neighbour's stale folder stays
    assert siblings(out) == [f".ck.tmp-{pid}"]
    write_synthetic(out, SMALL, seed=2, force=True)
    assert siblings(out) == []


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not output_folder.exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_a_failed_second_rename_puts_the_previous_folder_back(tmp_path, monkeypatch):
    out = write_synthetic(tmp_path / "ck", SMALL, seed=1)
    before = snapshot(out)
    monkeypatch.setattr(output_folder, "exchange", lambda a, b: False)
    rename = os.rename

    def failing(src, dst):
        if Path(dst) == out and ".tmp-" in str(src):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(dst))
        rename(src, dst)

    monkeypatch.setattr(output_folder.os, "rename", failing)
    with pytest.raises(ExportError, match=f"writing {out}: {out}: Device or resource busy"):
        write_synthetic(out, SMALL, seed=2, force=True)
    assert snapshot(out) == before and siblings(out) == []


# --------------------------------------------------------------------------- item 8: the machine's errors
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/model.weights")


@pytest.mark.parametrize("stage", ["weights", "manifest"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_hf, monkeypatch, stage):
    import gptoss.bundle.manifest as manifest
    import gptoss.ir.onnx_io as onnx_io

    if stage == "weights":
        monkeypatch.setattr(onnx_io, "open", enospc, raising=False)
    else:
        monkeypatch.setattr(manifest.Manifest, "write", enospc)
    line = one_line_error(cli("export", tiny_hf, "-o", tmp_path / "b", "--target", "portable"))
    assert "No space left on device" in line
    assert list(tmp_path.iterdir()) == []


def test_synth_on_a_full_disk(tmp_path, monkeypatch):
    import gptoss.export.safetensors_io as st

    monkeypatch.setattr(st, "open", enospc, raising=False)
    line = one_line_error(cli("synth", tmp_path / "ck", "--vocab", 256, "--layers", 1))
    assert "No space left on device (free some space, or write elsewhere)" in line
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_is_one_line(tmp_path, tiny_hf, monkeypatch):
    def erofs(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "mkdir", erofs)
    line = one_line_error(cli("export", tiny_hf, "-o", tmp_path / "b", "--target", "portable"))
    assert "Read-only file system" in line and str(tmp_path / ".b.tmp-") in line
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_ours_is_not_disguised(tmp_path, monkeypatch):
    """Only the machine's errnos become one line: a FileNotFoundError from a bug keeps its traceback."""
    import gptoss.export.synth as synth

    def bug(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent")

    monkeypatch.setattr(synth, "_write_files", bug)
    with pytest.raises(FileNotFoundError):
        write_synthetic(tmp_path / "ck", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_a_negative_seed_names_the_option(tmp_path):
    r = cli("synth", tmp_path / "ck", "--seed", -1)
    assert r.exit_code == 2 and "'--seed'" in r.output and "-1" in r.output and "Traceback" not in r.output
