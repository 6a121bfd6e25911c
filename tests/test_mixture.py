"""Data mixtures: each source drawn in proportion to its weight, deterministic and resumable, for
the RL prompts and the supervised stages."""

import json
import math

import pytest

from rlhand.config.load import ConfigError
from rlhand.data.mixture import MixtureSampler
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg


def test_sources_are_drawn_in_proportion_to_their_weights():
    labels = [0] * 50 + [1] * 7 + [2] * 30  # sizes do not matter, weights do
    sampler = MixtureSampler(labels, [6.0, 3.0, 1.0], seed=0)
    drawn = [labels[i] for _ in range(250) for i in sampler.next_indices(16)]
    n = len(drawn)
    for source, p in enumerate([0.6, 0.3, 0.1]):
        assert abs(drawn.count(source) / n - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 standard errors
    assert sampler.counts == [drawn.count(s) for s in range(3)]


def test_a_mixture_resumes_where_it_stopped():
    labels = [0] * 5 + [1] * 9
    whole = MixtureSampler(labels, [1.0, 2.0], seed=3)
    first = [whole.next_indices(4) for _ in range(3)]
    rest = [whole.next_indices(4) for _ in range(5)]
    again = MixtureSampler(labels, [1.0, 2.0], seed=3)
    assert [again.next_indices(4) for _ in range(3)] == first
    resumed = MixtureSampler(labels, [1.0, 2.0], seed=3)
    resumed.load_state_dict(json.loads(json.dumps(again.state_dict())))  # through a checkpoint's JSON-able state
    assert [resumed.next_indices(4) for _ in range(5)] == rest


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_trains_on_a_mixture_and_counts_each_source(tmp_path):
    a = write(tmp_path / "a.jsonl", [{"prompt": "ab=", "completion": "ba"}] * 20)
    b = write(tmp_path / "b.jsonl", [{"prompt": "cd=", "completion": "dc"}] * 20)
    mixture = [f"+sft.mixture.a.path={a}", "+sft.mixture.a.weight=3", f"+sft.mixture.b.path={b}", "+sft.mixture.b.weight=1"]
    history = build_run(compose_cfg(["stage=sft", "trainer.max_steps=20", "sft.batch_size=8", "logging=plain", *mixture]), tmp_path / "run").fit()
    last = history[-1]
    assert last["data/a"] + last["data/b"] == last["train/examples_seen"] == 160
    assert 0.6 < last["data/a"] / 160 < 0.9


def test_rl_prompts_from_a_mixture(tmp_path):
    a = write(tmp_path / "a.jsonl", [{"prompt": "abcdefgh="}] * 16)
    b = write(tmp_path / "b.jsonl", [{"prompt": "qbkxmcwe="}] * 16)
    mixture = ["task=file", "reward=letters", f"+task.mixture.a.path={a}", "+task.mixture.a.weight=1", f"+task.mixture.b.path={b}", "+task.mixture.b.weight=1"]
    history = build_run(compose_cfg(FAST + mixture), tmp_path / "run").fit()
    assert history[-1]["data/a"] + history[-1]["data/b"] == 2 * 8


def test_a_mixture_and_a_path_together_or_a_weight_missing_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sft.mixture: give sft.path or sft.mixture, not both"):
        compose_cfg(["stage=sft", "sft.path=x.jsonl", "+sft.mixture.a.path=y.jsonl", "+sft.mixture.a.weight=1"])
    with pytest.raises(ConfigError, match=r"rm.mixture.a.weight: needs a number > 0"):
        compose_cfg(["stage=reward_model", "+rm.mixture.a.path=y.jsonl", "+rm.mixture.a.weight=0"])


def test_a_source_emptied_by_the_hold_out_is_one_line(tmp_path):
    a = write(tmp_path / "a.jsonl", [{"prompt": "ab=", "completion": "ba"}] * 20)
    b = write(tmp_path / "b.jsonl", [{"prompt": "cd=", "completion": "dc"}] * 2)
    mixture = [f"+sft.mixture.a.path={a}", "+sft.mixture.a.weight=1", f"+sft.mixture.b.path={b}", "+sft.mixture.b.weight=1"]
    with pytest.raises(ConfigError, match=r"sft.mixture.b: no examples left to train on after the 21 held out"):
        build_run(compose_cfg(["stage=sft", "logging=plain", "eval.every=5", "eval.num_prompts=21", *mixture]), tmp_path / "run")
