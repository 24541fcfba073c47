"""A checkpoint named by its Hugging Face repo id, found offline in a Hugging Face cache laid out as huggingface_hub
lays it out: models--OWNER--NAME/{blobs/, refs/main, snapshots/<commit>/} with every snapshot file a relative
symlink into blobs/. The cache is built here from the tiny synthetic checkpoints; nothing touches the network."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gptoss.compile.cli import main
from gptoss.compile.pipeline import export_bundle
from gptoss.export.errors import CheckpointError
from gptoss.export.hub import resolve_checkpoint

pytest.importorskip("huggingface_hub", reason="huggingface_hub comes with the [export] extra")

REPO_ID = "openai/gpt-oss-20b"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT, ref: str | None = "main"):
    """Put `files` (path in the repo -> source file) into `cache` as huggingface_hub does; return the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        if not blob.exists():
            os.link(source, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def files_of(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory, tiny_hf, tiny_original) -> Path:
    """A cache holding openai/gpt-oss-20b at main: the tiny HF checkpoint at the root, its original/ beside it."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    fake_hf_cache(cache, REPO_ID, {**files_of(tiny_hf), **files_of(tiny_original / "original", "original/")})
    return cache


def checksums(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["files"]


def test_the_fake_cache_is_what_huggingface_hub_reads(hf_cache):
    from huggingface_hub import scan_cache_dir

    (repo,) = scan_cache_dir(hf_cache).repos
    assert repo.repo_id == REPO_ID and repo.refs["main"].commit_hash == COMMIT
    assert {f.file_name for f in repo.refs["main"].files} >= {"config.json", "model.safetensors"}
    assert all(p.is_symlink() for p in (hf_cache / f"models--openai--gpt-oss-20b/snapshots/{COMMIT}").iterdir()
               if p.is_file())


def test_a_repo_id_resolves_to_its_cached_snapshot(hf_cache):
    snapshot = hf_cache / "models--openai--gpt-oss-20b" / "snapshots" / COMMIT
    assert resolve_checkpoint(REPO_ID, cache_dir=hf_cache) == snapshot
    assert resolve_checkpoint(REPO_ID, revision=COMMIT, cache_dir=hf_cache) == snapshot


def test_a_local_folder_wins_and_stays_as_it_is(tmp_path, monkeypatch, hf_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "openai" / "gpt-oss-20b").mkdir(parents=True)
    assert resolve_checkpoint(REPO_ID, cache_dir=hf_cache) == Path(REPO_ID)
    assert resolve_checkpoint("some/dir/deeper") == Path("some/dir/deeper")    # not a repo id: left to the reader
    with pytest.raises(CheckpointError, match="revision applies to a Hugging Face repo id"):
        resolve_checkpoint(REPO_ID, revision="main")


def test_cached_repo_exports_like_its_folder(hf_cache, tiny_hf, tiny_bundle, tmp_path, monkeypatch):
    """From the cache (symlinked files), the bundle is byte for byte the one exported from the folder itself."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    result = CliRunner().invoke(main, ["export", REPO_ID, "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert f"{REPO_ID} (Hugging Face cache: {hf_cache}" in result.output
    assert checksums(tmp_path / "b") == checksums(tiny_bundle("cpu"))


def test_hf_home_is_honoured_and_layout_original_takes_original(hf_cache, tmp_path):
    """As a user runs it: a fresh process finds the cache through HF_HOME (HF_HOME/hub) and exports original/."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "hub").symlink_to(hf_cache)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    out = tmp_path / "b"
    run = subprocess.run([str(Path(sys.executable).parent / "gptoss-export"), "export", REPO_ID, "-o", str(out),
                          "--layout", "original", "--target", "portable"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((out / "manifest.json").read_text())["source"]["layout"] == "original"


def test_original_only_download_is_detected(tmp_path, tiny_original):
    """`hf download ... --include 'original/*'`: the snapshot holds only original/, found without --layout."""
    cache = tmp_path / "hub"
    fake_hf_cache(cache, REPO_ID, files_of(tiny_original / "original", "original/"))
    out = export_bundle(resolve_checkpoint(REPO_ID, cache_dir=cache), tmp_path / "b", target="portable")
    assert json.loads((out / "manifest.json").read_text())["source"]["layout"] == "original"


def test_a_revision_picks_that_snapshot(tmp_path, tiny_hf):
    cache = tmp_path / "hub"
    other = "f" * 40
    fake_hf_cache(cache, REPO_ID, files_of(tiny_hf))
    fake_hf_cache(cache, REPO_ID, files_of(tiny_hf), commit=other, ref="v2")
    assert resolve_checkpoint(REPO_ID, revision="v2", cache_dir=cache).name == other
    assert resolve_checkpoint(REPO_ID, cache_dir=cache).name == COMMIT


def test_not_in_the_cache_says_how_to_fetch_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["export", "openai/gpt-oss-120b", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: openai/gpt-oss-120b: no such folder, and not in the Hugging Face cache "
                           f"{tmp_path / 'empty'}")
    assert "`hf download openai/gpt-oss-120b`" in line and "HF_HOME" in line
    assert not (tmp_path / "b").exists()
    with pytest.raises(CheckpointError, match="at revision 'v9'"):
        resolve_checkpoint("openai/gpt-oss-120b", revision="v9", cache_dir=tmp_path / "empty")


def test_inspect_takes_a_repo_id(hf_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    result = CliRunner().invoke(main, ["inspect", REPO_ID, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["layout"] == "hf"


# The case, run last: a sharded snapshot, whose index names shards that are symlinks into blobs/. It needs
# the checkpoint reader to accept symlinked shards (export/checkpoint.py's index check, fixed separately).
def test_z_sharded_snapshot_with_symlinked_shards(tmp_path):
    from gptoss.export.config import preset
    from gptoss.export.synth import write_synthetic

    sharded = write_synthetic(tmp_path / "sharded", preset("tiny"), max_shard_bytes=8 << 20)
    assert (sharded / "model.safetensors.index.json").is_file()
    cache = tmp_path / "hub"
    fake_hf_cache(cache, REPO_ID, files_of(sharded))
    out = export_bundle(resolve_checkpoint(REPO_ID, cache_dir=cache), tmp_path / "b", target="portable")
    assert (out / "manifest.json").is_file()
