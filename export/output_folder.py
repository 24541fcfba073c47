"""Writing a whole folder at once (a bundle, a synthetic checkpoint): nothing half-written, nothing lost.

    with staged(out, force=force, replaceable=is_bundle, kind="bundle", inputs=checkpoint_files) as tmp:
        ...                          # write everything into tmp, a sibling of out
    # out now holds exactly what was written; after an error or Ctrl-C tmp is gone and out untouched

Rules for OUT, checked before anything is written:
  * a folder that does not exist, or an empty one, is always fine;
  * an existing non-empty one is replaced only with `force`, and only if `replaceable` says it holds the kind of
    thing being written (a previous bundle; a previous checkpoint), never anything else;
  * never an input (the checkpoint being exported), a folder holding one, or a folder inside the input folder;
  * never the current folder or one holding it.

The siblings are named `.NAME.tmp-PID` (being written) and `.NAME.old-PID` (the previous folder, during a replace
without RENAME_EXCHANGE). A process killed by SIGKILL or SIGTERM leaves them behind; the next write to the same OUT
removes those of processes that no longer run, and puts `.NAME.old-PID` back when the kill fell between the two
renames of a replace (OUT then missing).

Replacing is atomic on Linux: renameat2(RENAME_EXCHANGE) swaps the new folder and the old one in one step, so OUT
always holds a whole bundle, old or new. Where the kernel, the file system or the C library lacks it, two renames
do the job and a later run recovers from a kill between them, as said above.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import ExportError

TMP, OLD = "tmp", "old"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# OSErrors that the machine causes (a full disk, a read-only mount, a folder in use), not this code: reported as one
# line naming the file, never a traceback.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EBUSY,
                                errno.EIO, errno.EFBIG, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EXDEV})


def sibling(out: Path, kind: str, pid: int | None = None) -> Path:
    """`.NAME.tmp-PID` or `.NAME.old-PID` beside `out`."""
    return out.parent / f".{out.name}.{kind}-{os.getpid() if pid is None else pid}"


# ------------------------------------------------------------------------------------------------- checks
def check_output(out: Path, force: bool, replaceable: Callable[[Path], bool], kind: str,
                 inputs: Iterable[Path] = ()) -> Path:
    """`out` as an absolute path, after the rules of the module docstring; an ExportError otherwise."""
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        raise ExportError(f"output {out} is a symbolic link; name the folder itself")
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    _check_not_an_input(out, inputs)
    if out.exists() and _holds(out, _cwd()):
        raise ExportError(f"output {out} is the current folder or holds it; name a new folder for the {kind}")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"output folder {out} exists and is not empty; pass --force to replace it")
        if not replaceable(out):
            raise ExportError(f"output folder {out} is not empty and does not hold a {kind}; --force replaces only "
                              f"an empty folder or a previous {kind}, so remove it yourself if you mean it")
    return out


def _cwd() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:          # the current folder was deleted: nothing at `out` can hold it
        return Path("/nonexistent-current-folder")


def _holds(folder: Path, path: Path) -> bool:
    """`path` is `folder` or lies inside it, symlinks resolved."""
    folder, path = folder.resolve(), path.resolve()
    return path == folder or folder in path.parents


def _check_not_an_input(out: Path, inputs: Iterable[Path]) -> None:
    for path in inputs:
        if _holds(out, path):
            raise ExportError(f"output {out} {'is' if out.resolve() == path.resolve() else 'holds'} the input "
                              f"{path}, which writing there would delete; write the output elsewhere")
        if path.is_dir() and _holds(path, out):
            raise ExportError(f"output {out} lies inside the input folder {path}; write the output elsewhere")


# ---------------------------------------------------------------------------------------- stale siblings
def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True                    # no cheap, harmless liveness test: leave the folder alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_siblings(out: Path) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every `.NAME.tmp-PID` / `.NAME.old-PID` beside `out` whose process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.({TMP}|{OLD})-(\d+)")
    if not out.parent.is_dir():
        return
    for path in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(path.name)
        if m and int(m[2]) != os.getpid() and not _alive(int(m[2])):
            yield m[1], path


def recover(out: Path) -> None:
    """Clean up after writers to `out` that were killed: put back a previous folder that a kill left as
    `.NAME.old-PID` with nothing at `out`, then remove every other stale sibling."""
    stale = list(stale_siblings(out))
    for kind, path in stale:
        if kind == OLD and not os.path.lexists(out):
            os.rename(path, out)
    for _, path in stale:
        if os.path.lexists(path):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ replace
@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2       # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one step (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False                   # a kernel or file system without it
    raise OSError(err, os.strerror(err), str(b))


def replace(tmp: Path, out: Path) -> None:
    """Put folder `tmp` at `out`, replacing what is there."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
    elif exchange(tmp, out):           # tmp now holds the previous folder; a kill from here on leaves it stale
        _remove(tmp)
    else:
        old = sibling(out, OLD)
        os.rename(out, old)            # a kill between these two renames: recover() puts `old` back
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _remove(old)


# ------------------------------------------------------------------------------------------------ staging
@contextlib.contextmanager
def staged(out: str | Path, *, force: bool, replaceable: Callable[[Path], bool], kind: str,
           inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yields an empty sibling folder of `out`; puts it at `out` when the block succeeds, removes it when anything
    (an error, Ctrl-C) interrupts the block. OSErrors the machine causes (ENVIRONMENT_ERRNOS) become one-line
    ExportErrors."""
    out = Path(os.path.abspath(out))
    with one_line_os_errors(out):
        recover(out)                   # first: a folder it puts back is then checked like any other
    out = check_output(out, force, replaceable, kind, list(inputs))
    tmp = sibling(out, TMP)
    try:
        with one_line_os_errors(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
            tmp.mkdir()
    except BaseException:
        _remove(tmp)
        raise
    try:
        with one_line_os_errors(out):
            yield tmp
            replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def one_line_os_errors(out: Path):
    """An OSError of ENVIRONMENT_ERRNOS in the block becomes an ExportError naming the file and saying what failed."""
    try:
        yield
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = e.filename if e.filename is not None else out
        raise ExportError(f"writing {out}: {where}: {e.strerror or os.strerror(e.errno)}"
                          f"{' (free some space, or write elsewhere)' if e.errno in (errno.ENOSPC, errno.EDQUOT) else ''}"
                          ) from None
