"""The replay buffer: storage round trip, staleness and reuse caps before sampling, FIFO eviction,
PER frequencies and weights, checkpoint state (checklist D49, D52-D54)."""

import numpy as np
import pytest
import torch

from rlhand.config.schema import ReplayConfig
from rlhand.replay.buffer import ReplayBuffer
from rlhand.rollout.batch import Rollout

PAD = 0


def fake_rollout(n, *, prompt_width=5, response_width=4, seed=0, score=None):
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(1, prompt_width + 1, (n,), generator=g)
    response_len = torch.randint(1, response_width + 1, (n,), generator=g)
    prompt_mask = (torch.arange(prompt_width) >= prompt_width - prompt_len.unsqueeze(1)).long()
    response_mask = (torch.arange(response_width) < response_len.unsqueeze(1)).long()
    per_token = lambda: torch.randn(n, response_width, generator=g) * response_mask  # noqa: E731
    return Rollout(
        prompt_ids=torch.randint(3, 90, (n, prompt_width), generator=g) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=torch.randint(3, 90, (n, response_width), generator=g) * response_mask,
        response_mask=response_mask,
        behaviour_logprobs=(behaviour := per_token()),
        proximal_logprobs=behaviour,
        ref_logprobs=per_token(),
        values=per_token(),
        scores=torch.full((n,), float(score)) if score is not None else torch.randn(n, generator=g),
        raw_scores=torch.randn(n, generator=g),
        ended=torch.rand(n, generator=g) > 0.5,
        fresh=torch.ones(n, dtype=torch.bool),
        advantages=per_token(),
    )


def make_buffer(**overrides):
    cfg = ReplayConfig(name="t", enabled=True, **{"buffer_size": 64, "min_size": 1, "sample_size": 4, **overrides})
    return ReplayBuffer(cfg, prompt_width=5, response_width=4, vocab_size=99, with_ref=True, seed=0)


def test_stored_samples_come_back_exactly():
    buffer, rollout = make_buffer(), fake_rollout(6)
    buffer.add(rollout, step=1, priorities=torch.ones(6))
    back = buffer.rollout(np.arange(6), torch.device("cpu"), PAD)
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "behaviour_logprobs", "ref_logprobs", "values", "scores", "ended"):
        original, restored = getattr(rollout, name), getattr(back, name)
        if original.dim() == 2:  # trimmed to the longest sample among those drawn
            width = restored.shape[1]
            original = original[:, -width:] if name.startswith("prompt") else original[:, :width]
        assert torch.equal(original.to(restored.dtype), restored), name
    assert buffer.data["prompt_ids"].dtype == torch.int16  # compact ids


def test_stale_samples_are_never_drawn_d52():
    buffer = make_buffer(staleness_threshold=3, max_reuse=10_000, sample_size=1)
    for step in range(11):
        buffer.add(fake_rollout(2, seed=step), step=step, priorities=torch.ones(2))
    drawn = np.concatenate([buffer.draw(50, step=10).indices for _ in range(100)])
    assert set(buffer.data["step"].numpy()[drawn].tolist()) == {7, 8, 9, 10}
    stale = buffer.data["step"].numpy()[: buffer.count] < 7
    assert (buffer.tree.leaves()[: buffer.count][stale] == 0).all()  # zeroed in the tree, not filtered after
    drawn = np.concatenate([buffer.draw(50, step=11).indices for _ in range(20)])
    assert 7 not in buffer.data["step"].numpy()[drawn]


def test_reuse_cap_is_never_exceeded_d53():
    buffer = make_buffer(max_reuse=2)
    buffer.add(fake_rollout(3), step=0, priorities=torch.ones(3))
    counts = np.zeros(3, dtype=int)
    first = buffer.draw(6, step=0)  # 3 items x 2 reuses: exactly enough, duplicates included
    np.add.at(counts, first.indices, 1)
    assert counts.tolist() == [2, 2, 2]
    assert buffer.draw(1, step=0) is None  # nothing left to draw
    buffer.add(fake_rollout(1, seed=5), step=0, priorities=torch.ones(1))
    assert buffer.draw(1, step=0).indices.tolist() == [3]  # a fresh insert re-enables sampling


def test_draw_waits_for_min_size_and_enough_reuses():
    buffer = make_buffer(min_size=5, max_reuse=1)
    buffer.add(fake_rollout(4), step=0, priorities=torch.ones(4))
    assert buffer.draw(2, step=0) is None
    buffer.add(fake_rollout(1, seed=1), step=0, priorities=torch.ones(1))
    assert buffer.draw(6, step=0) is None  # 5 eligible, 1 reuse each: 6 cannot be served
    assert len(buffer.draw(5, step=0).indices) == 5


def test_fifo_eviction_d54():
    buffer = make_buffer(buffer_size=4, max_reuse=10_000)
    buffer.add(fake_rollout(4, score=1.0), step=0, priorities=torch.ones(4))
    buffer.add(fake_rollout(2, score=2.0), step=1, priorities=torch.full((2,), 3.0))
    assert buffer.data["scores"].tolist() == [2.0, 2.0, 1.0, 1.0] and buffer.count == 4
    assert buffer.data["step"].tolist() == [1, 1, 0, 0] and buffer.data["reuse"].tolist() == [0, 0, 0, 0]
    drawn = buffer.draw(400, step=1).indices
    assert set(drawn.tolist()) == {0, 1, 2, 3}


def test_prioritized_frequencies_and_weights_d48_d49():
    buffer = make_buffer(buffer_size=4, prioritized=True, alpha=0.6, beta=0.4, beta_increment=0.0, max_reuse=10**6)
    buffer.add(fake_rollout(4), step=0, priorities=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    draw = buffer.draw(40_000, step=0)
    probs = np.array([0.148230, 0.224674, 0.286555, 0.340542])
    counts = np.bincount(draw.indices, minlength=4)
    chi2 = (((counts - probs * counts.sum()) ** 2) / (probs * counts.sum())).sum()
    assert chi2 < 16.27
    expected = np.array([1.0, 0.846745, 0.768229, 0.716978])[draw.indices]
    assert draw.weights.numpy() == pytest.approx(expected, abs=1e-5)
    assert draw.weights.max() <= 1.0


def test_uniform_sampling_has_unit_weights_and_beta_anneals():
    buffer = make_buffer(beta=0.4, beta_increment=0.3)
    buffer.add(fake_rollout(8), step=0, priorities=torch.rand(8) + 0.1)
    betas = [buffer.draw(2, step=0).beta for _ in range(3)]
    assert betas == pytest.approx([0.4, 0.7, 1.0])
    assert buffer.draw(2, step=0).weights.tolist() == [1.0, 1.0]


def test_priorities_refresh_and_capped_rows_stay_out():
    buffer = make_buffer(prioritized=True, alpha=1.0, max_reuse=1)
    buffer.add(fake_rollout(4), step=0, priorities=torch.ones(4))
    draw = buffer.draw(1, step=0)
    buffer.update_priorities(draw.indices, torch.tensor([9.0]))
    assert buffer.tree.leaves()[draw.indices[0]] == 0.0  # used up: stays out despite the new priority
    buffer = make_buffer(prioritized=True, alpha=1.0, max_reuse=5)
    buffer.add(fake_rollout(4), step=0, priorities=torch.ones(4))
    draw = buffer.draw(1, step=0)
    buffer.update_priorities(draw.indices, torch.tensor([9.0]))
    assert buffer.tree.leaves()[draw.indices[0]] == 9.0


def test_state_round_trip_continues_identically():
    a = make_buffer(prioritized=True, max_reuse=3)
    a.add(fake_rollout(10), step=0, priorities=torch.rand(10) + 0.1)
    a.draw(4, step=1)
    b = make_buffer(prioritized=True, max_reuse=3)
    b.load_state_dict(a.state_dict())
    for step in (2, 3):
        da, db = a.draw(4, step), b.draw(4, step)
        assert da.indices.tolist() == db.indices.tolist() and torch.equal(da.weights, db.weights)


def test_bytes_per_sample_at_the_default_shape():
    cfg = ReplayConfig(name="t", enabled=True)
    buffer = ReplayBuffer(cfg, prompt_width=32, response_width=16, vocab_size=99, with_ref=True, seed=0)
    # ids: (32 + 16) x int16; lengths 2 x int16; ended bool; step int32; reuse int16; prompt row int32;
    # 4 per-token float32 tensors x 16; 2 float32 scores; 2 float64 tree leaves.
    assert buffer.bytes_per_sample == 48 * 2 + 4 + 1 + 4 + 2 + 4 + 4 * 16 * 4 + 8 + 16 == 391


def test_each_rank_draws_from_its_buffer_with_a_stream_of_its_own():
    """With several ranks every buffer holds its own samples; drawn with the same seed on every rank,
    ranks whose buffers look alike would replay the same positions in lock step."""
    from types import SimpleNamespace

    from rlhand.distributed.context import DistContext
    from rlhand.stages.ppo.setup import build_replay
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["replay=standard", "replay.min_size=4", "replay.sample_size=8", "replay.buffer_size=64"])
    inputs = SimpleNamespace(tokenizer=type("Tokenizer", (), {"pad_token_id": PAD, "__len__": lambda self: 100})())
    draws = []
    for rank in (0, 1):
        replay = build_replay(cfg, inputs, SimpleNamespace(has_reference=True), torch.device("cpu"), DistContext(rank=rank, world_size=2))
        replay.buffer.add(fake_rollout(16), step=1, priorities=torch.ones(16))  # the same samples on both
        draws.append([replay.buffer.draw(4, step=2).indices.tolist() for _ in range(3)])
    assert draws[0] != draws[1]
