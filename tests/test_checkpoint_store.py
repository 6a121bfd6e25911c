"""Checkpoint folders: atomic writes, manifest verification, newest-valid lookup, pruning, safe loading."""

import os

import pytest
import torch

from rlhand.checkpoint.atomic import atomic_dir, recover_partial_writes
from rlhand.checkpoint.rng import capture_rng, restore_rng
from rlhand.checkpoint.store import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    verify_checkpoint,
    write_checkpoint,
)
from rlhand.checkpoint.training import read_rank_state, read_training_state


def write(root, step, payload=b"x" * 1000):
    def files(folder):
        (folder / "sub").mkdir()
        (folder / "sub" / "weights.bin").write_bytes(payload)
        (folder / "training_state.pt").write_bytes(b"state")

    return write_checkpoint(root, step, files)


def test_written_checkpoint_verifies(tmp_path):
    path = write(tmp_path, 3)
    assert path.name == "step_3" and verify_checkpoint(path) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file_is_rejected(tmp_path):
    path = write(tmp_path, 3)
    with open(path / "sub" / "weights.bin", "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(CheckpointError, match=r"sub/weights.bin has 10 bytes.*truncated"):
        verify_checkpoint(path)


def test_flipped_byte_is_rejected(tmp_path):
    path = write(tmp_path, 3)
    data = bytearray((path / "sub" / "weights.bin").read_bytes())
    data[500] ^= 0xFF
    (path / "sub" / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256.*corrupted"):
        verify_checkpoint(path)


def test_missing_manifest_or_file_is_rejected(tmp_path):
    path = write(tmp_path, 3)
    (path / "sub" / "weights.bin").unlink()
    with pytest.raises(CheckpointError, match="weights.bin is missing"):
        verify_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json"):
        verify_checkpoint(path)


def test_latest_valid_skips_and_reports_broken_newer_ones(tmp_path):
    write(tmp_path, 2)
    write(tmp_path, 4)
    bad = write(tmp_path, 6)
    (bad / "training_state.pt").write_bytes(b"")
    (tmp_path / "step_8.tmp").mkdir()  # a writer killed mid-write
    (tmp_path / "step_8.tmp" / "junk").write_text("x")
    warnings = []
    assert latest_valid_checkpoint(tmp_path, warnings.append).name == "step_4"
    assert len(warnings) == 1 and "step_6" in warnings[0]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4, 6]


def test_none_when_no_checkpoint(tmp_path):
    assert latest_valid_checkpoint(tmp_path / "nothing", print) is None


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3, 4, 9):
        write(tmp_path, step)
    # step_9 is left from an earlier trajectory (it failed verification when this run started):
    # pruning after step 4 keeps 3 and 4 and never deletes a later folder.
    removed = prune_checkpoints(tmp_path, keep=2, newest=4)
    assert [p.name for p in removed] == ["step_1", "step_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3", "step_4", "step_9"]


def test_recover_partial_writes(tmp_path):
    write(tmp_path, 3)
    (tmp_path / "step_4.tmp").mkdir()  # killed mid-write
    (tmp_path / "step_3.old").mkdir()  # killed after the new step_3 arrived
    old = write(tmp_path, 5)
    os.replace(old, tmp_path / "step_5.old")  # killed between the two renames
    recover_partial_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3", "step_5"]
    assert verify_checkpoint(tmp_path / "step_5") == 5


def test_an_interrupt_inside_fsync_leaves_no_temporary_folder(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, 3)
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "best"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "old" and not (tmp_path / "best.tmp").exists()
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["best"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_training_state_never_unpickles_arbitrary_objects(tmp_path):
    torch.save({"step": 1, "payload": Evil()}, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointError, match="cannot read training_state.pt"):
        read_training_state(tmp_path)
    torch.save({"rng": Evil()}, tmp_path / "rank_0.pt")
    with pytest.raises(CheckpointError, match="cannot read rank_0.pt"):
        read_rank_state(tmp_path, 0)


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    torch.save({"rng": capture_rng()}, tmp_path / "rank_0.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    restore_rng(read_rank_state(tmp_path, 0)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
