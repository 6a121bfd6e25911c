"""checkpoints/step_N/ folders: written atomically with a manifest of sizes and SHA-256 hashes, found,
verified and pruned. A folder that fails verification is never loaded."""

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from rlhand.checkpoint.atomic import fresh_tmp, publish
from rlhand.distributed.context import DistContext
from rlhand.errors import UserError

MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(UserError):
    """A missing, truncated or corrupted checkpoint; the message names the folder and what is wrong."""


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step}"


def checkpoint_step(folder: Path) -> int | None:
    """N of a step_N folder (None for any other name)."""
    found = STEP_DIR.match(Path(folder).name)
    return int(found.group(1)) if found else None


def write_checkpoint(root: Path, step: int, write_files: Callable[[Path], None], ctx: DistContext | None = None) -> Path:
    """`write_files(folder)` fills the folder, on every rank; then rank 0 writes the manifest inside
    the temporary folder and renames it into place. A fault on rank 0 (an interrupt, a full disk)
    removes the temporary folder; a rank that fails elsewhere ends the job (its launcher stops the
    others) and the next resume=auto removes what was left."""
    ctx = ctx or DistContext()
    target = checkpoint_dir(root, step)
    tmp = target.with_name(target.name + ".tmp")
    if ctx.is_main:
        fresh_tmp(target)
    try:
        ctx.barrier()
        write_files(tmp)
        ctx.barrier()
        if ctx.is_main:
            _write_manifest(tmp, step)
            publish(tmp, target, flush=True)
    except BaseException:
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    ctx.barrier()
    return target


def _write_manifest(folder: Path, step: int) -> None:
    files = {
        str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")


def verify_checkpoint(folder: Path) -> int:
    """The checkpoint's step, or CheckpointError saying why the folder cannot be trusted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files, step = manifest["files"], int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{folder}: missing or unreadable {MANIFEST} ({type(err).__name__}); not a complete checkpoint"
        ) from None
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        if path.stat().st_size != expected["bytes"]:
            raise CheckpointError(
                f"{folder}: {name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated?)"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{folder}: {name} does not match its SHA-256 in the manifest (corrupted)")
    return step


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) for every step_N folder under root, oldest first; temp folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def latest_valid_checkpoint(root: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that verifies; each newer one that does not is reported and skipped."""
    for _, folder in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(folder)
            return folder
        except CheckpointError as err:
            warn(f"skipping checkpoint: {err}")
    return None


def prune_checkpoints(root: Path, keep: int, newest: int) -> list[Path]:
    """Delete all but the newest `keep` step folders up to step `newest` (the one just written);
    returns what went. A folder of a later step is never touched: it can only be one that failed
    verification when this run started, and is the user's to inspect."""
    removed = []
    for _, folder in [c for c in list_checkpoints(root) if c[0] <= newest][:-keep]:
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
