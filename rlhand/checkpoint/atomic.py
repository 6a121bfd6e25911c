"""Write a folder under a temporary name, then rename it into place: a crash mid-write never leaves
a half-written folder under the real name, nor destroys the previous one."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: Path):
    """Yields an empty temporary folder; on success it replaces `target` (which may exist).
    Any exception before the rename (Ctrl-C inside fsync included) removes the temporary folder."""
    tmp = fresh_tmp(target)
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, target)


def fresh_tmp(target: Path) -> Path:
    """An empty `<target>.tmp` folder (one left by a process killed mid-write is cleared first)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(tmp: Path, target: Path, flush: bool = False) -> None:
    """Rename the finished `tmp` to `target`, replacing an existing one (kept as `.old` until the
    new one is in place)."""
    if flush:
        _fsync_tree(tmp)
    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


def recover_partial_writes(parent: Path) -> None:
    """Tidy what a process killed inside atomic_dir can leave in `parent`: a `.tmp` folder is an
    unfinished write (removed); a `.old` folder is the previous version, put back if the new one
    never arrived, else removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for tmp in parent.glob("*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in parent.glob("*.old"):
        target = old.with_name(old.name[: -len(".old")])
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename publishes them (the rename itself is atomic)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
