"""A checkpoint named by its Hugging Face repo id, found in the local Hugging Face cache, offline.

    resolve_checkpoint("openai/gpt-oss-20b")   # -> $HF_HUB_CACHE/models--openai--gpt-oss-20b/snapshots/<commit>
    resolve_checkpoint("gpt-oss-20b/")          # a folder stays the folder (one that exists wins over a repo id)

The cache is huggingface_hub's own (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), read through
its API with `local_files_only=True`: nothing is downloaded and nothing is asked of the Hub. In that cache every
file of a snapshot is a symlink into the repo's `blobs/`; the checkpoint reader follows them. A snapshot may be a
partial download (only `original/`, say): the reader checks that what the asked-for layout needs is there.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CheckpointError

# owner/name, as the Hub spells repo ids (huggingface_hub validates the details).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def fetch_hint(repo_id: str) -> str:
    return (f"download it with `hf download {repo_id}` (huggingface_hub's command line; add "
            f"`--include 'original/*'` for OpenAI's original layout only)")


def resolve_checkpoint(name: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The folder `name` when it exists or is not a repo id; else the cached snapshot of repo `name` at
    `revision` (a branch, tag or commit; default: main). Raises CheckpointError when it is not cached."""
    path = Path(name)
    if path.exists() or not _REPO_ID.fullmatch(str(name)):
        if revision is not None:
            raise CheckpointError(f"{name}: a revision applies to a Hugging Face repo id, not to a local folder")
        return path
    return _cached_snapshot(str(name), revision, cache_dir)


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import HFValidationError, LocalEntryNotFoundError

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    at = f" at revision {revision!r}" if revision else ""
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id}: no such folder, and not a Hugging Face repo id ({e})") from None
    except LocalEntryNotFoundError as e:
        partial = getattr(e, "snapshot_path", None)      # huggingface_hub >= 2.4: the snapshot is only partly there
        if partial:
            return Path(partial)
        raise CheckpointError(f"{repo_id}: no such folder, and not in the Hugging Face cache {cache}{at}: "
                              f"{fetch_hint(repo_id)}, or set HF_HUB_CACHE (or HF_HOME) to the cache that holds it"
                              ) from None
