"""The seed's advanced replay options: the KL-adaptive reuse cap (replay.adaptive_reuse) and the
fresh/replayed mixing ratio (replay.fresh_fraction). Both off by default."""

import numpy as np
import pytest
import torch

from rlhand.config import ConfigError
from rlhand.config.schema import ReplayConfig
from rlhand.stages import build_run
from rlhand.stages.ppo.update import minibatch_indices
from tests.conftest import FAST, compose_cfg
from tests.test_replay_buffer import fake_rollout, make_buffer

SMALL_REPLAY = ["replay=standard", "replay.min_size=8", "replay.sample_size=4", "replay.buffer_size=64", "trainer.max_steps=6", "trainer.save_final=false"]


def test_the_cap_follows_the_kl_by_the_seeds_rule():
    seed_rule = ReplayConfig(name="t", enabled=True, max_reuse=2, adaptive_reuse=[[0.01, 6]])  # "KL < 0.01: 6, else 2"
    assert [seed_rule.reuse_cap(kl) for kl in (None, 0.0, 0.009, 0.01, 0.5)] == [2, 6, 6, 2, 2]
    steps = ReplayConfig(name="t", enabled=True, max_reuse=1, adaptive_reuse=[[0.01, 8], [0.1, 3]])
    assert [steps.reuse_cap(kl) for kl in (0.001, 0.05, 0.2)] == [8, 3, 1]
    assert ReplayConfig(name="t", enabled=True, max_reuse=4).reuse_cap(0.0) == 4  # off by default


def test_a_lowered_cap_retires_rows_and_a_raised_one_brings_them_back_with_their_priority():
    buffer = make_buffer(max_reuse=4, prioritized=True, min_size=1)
    buffer.add(fake_rollout(8), step=1, priorities=torch.arange(1.0, 9.0))
    buffer.data["reuse"][:4] = 2  # rows 0-3 were replayed twice
    buffer.set_reuse_cap(2)
    eligible = buffer.retire_ineligible(step=2)
    assert eligible.tolist()[:8] == [False] * 4 + [True] * 4
    assert np.all(buffer.tree.leaves()[:4] == 0)
    draw = buffer.draw(4, step=2)
    assert set(draw.indices.tolist()) <= {4, 5, 6, 7}
    buffer.set_reuse_cap(6)
    buffer.retire_ineligible(step=2)
    assert np.allclose(buffer.tree.leaves()[:4], np.arange(1.0, 5.0) ** 0.6)  # their priorities, as stored


def test_the_cap_and_stored_leaves_survive_a_checkpoint():
    buffer = make_buffer(max_reuse=4)
    buffer.add(fake_rollout(8), step=1, priorities=torch.ones(8))
    buffer.set_reuse_cap(1)
    other = make_buffer(max_reuse=4)
    other.load_state_dict(buffer.state_dict())
    assert other.max_reuse == 1 and np.array_equal(other.stored_leaves, buffer.stored_leaves)


def test_in_a_run_the_cap_is_set_from_each_updates_kl(tmp_path):
    # Any KL is below 1e9: the cap is 1 after the first update, so no sample is replayed twice.
    history = build_run(compose_cfg(FAST + SMALL_REPLAY + ["replay.max_reuse=4", "replay.adaptive_reuse=[[1e9,1]]"]), tmp_path / "a").fit()
    assert all(row["replay/reuse_cap"] == 1 for row in history)
    assert max(row["replay/max_reuse"] for row in history) <= 1 and any(row["replay/sampled"] for row in history)
    # No KL is below 1e-12: max_reuse stays.
    history = build_run(compose_cfg(FAST + SMALL_REPLAY + ["replay.max_reuse=4", "replay.adaptive_reuse=[[1e-12,1]]"]), tmp_path / "b").fit()
    assert all(row["replay/reuse_cap"] == 4 for row in history) and max(row["replay/max_reuse"] for row in history) > 1


def test_fresh_fraction_sets_the_replayed_rows_and_every_minibatch_holds_that_share(tmp_path):
    cfg = compose_cfg(FAST + SMALL_REPLAY + ["replay.fresh_fraction=0.5"])
    assert cfg.replay.sample_size == 8  # 8 fresh rows at 50%: 8 replayed
    fresh = torch.tensor([True] * 8 + [False] * 8)
    torch.manual_seed(0)
    for part in minibatch_indices(fresh, 2, stratify=True):
        assert int(fresh[part].sum()) == 4 and len(part) == 8
    history = build_run(cfg, tmp_path).fit()
    assert any(row["replay/sampled"] == 8 for row in history)
    assert compose_cfg(FAST + SMALL_REPLAY + ["replay.fresh_fraction=0.8"]).replay.sample_size == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["replay.fresh_fraction=0.3"], "not a whole number"),
        (["replay.fresh_fraction=1.0"], "outside"),
        (["replay.adaptive_reuse=[[0.05,6],[0.01,3]]"], "increase"),
        (["replay.adaptive_reuse=[[0.01,0]]"], "caps >= 1"),
        (["replay.adaptive_reuse=[0.01]"], "pairs"),
    ],
)
def test_bad_replay_options_name_their_field(overrides, message):
    with pytest.raises(ConfigError, match=f"^replay.(fresh_fraction|adaptive_reuse): .*{message}"):
        compose_cfg(FAST + SMALL_REPLAY + overrides)
