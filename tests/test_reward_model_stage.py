"""stage=reward_model: Bradley-Terry on preference pairs, checked data, a folder reward=model loads."""

import json

import pytest

from rlhand.data.prompts import PromptError
from rlhand.stages import build_run
from tests.conftest import compose_cfg

RM = ["stage=reward_model", "trainer.max_steps=4", "rm.batch_size=8", "rm.num_pairs=64", "logging=plain", "trainer.save_final=false"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_in_the_common_layouts_load(tmp_path):
    shared = write_jsonl(tmp_path / "shared.jsonl", [{"prompt": "ab=", "chosen": "ab", "rejected": "zz"}] * 8)
    whole = write_jsonl(tmp_path / "whole.jsonl", [{"chosen": "Q: ab A: ab", "rejected": "Q: ab A: zz"}] * 8)
    for path, extra in ((shared, []), (whole, ["rm.prompt_column=null"])):
        run = build_run(compose_cfg(RM + [f"rm.path={path}"] + extra), tmp_path / path.stem)
        pair = run.stage.inputs.train[0]
        assert pair.chosen != pair.rejected
    whole_run = build_run(compose_cfg(RM + [f"rm.path={whole}", "rm.prompt_column=null"]), tmp_path / "w2").stage
    prompt, completion = whole_run.inputs.train[0].chosen
    assert whole_run.inputs.tokenizer.decode(prompt + completion, skip_special_tokens=True) == "Q: ab A: ab" and len(prompt) == 1


def test_bad_pairs_are_one_line_naming_the_line(tmp_path):
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "ab=", "chosen": "ab", "rejected": "zz"}, {"prompt": "ab=", "chosen": "ab", "rejected": "ab"}])
    with pytest.raises(PromptError, match=rf"^{same}: line 2: chosen and rejected are the same text"):
        build_run(compose_cfg(RM + [f"rm.path={same}"]), tmp_path / "a")
    no_column = write_jsonl(tmp_path / "cols.jsonl", [{"prompt": "ab=", "good": "ab", "bad": "zz"}])
    with pytest.raises(PromptError, match=r"line 1: no column 'chosen' .*set rm.chosen_column"):
        build_run(compose_cfg(RM + [f"rm.path={no_column}"]), tmp_path / "b")


def test_the_reward_model_learns_the_built_in_preferences_and_saves_what_reward_model_loads(tmp_path):
    overrides = ["stage=reward_model", "trainer.max_steps=150", "rm.num_pairs=1024", "rm.lr=3e-3", "eval.every=150", "eval.num_prompts=128", "logging=plain"]
    history = build_run(compose_cfg(overrides), tmp_path / "rm").fit()
    assert history[-1]["val/accuracy"] > 0.6  # chance is 0.5; 10% of the labels are flipped
    folder = tmp_path / "rm" / "final" / "reward_model"
    stats = json.loads((folder / "score_stats.json").read_text())
    assert stats["scores"] == 256 and stats["std"] > 0


def test_the_stages_chain_sft_then_reward_model_then_ppo_against_it(tmp_path):
    quick = ["trainer.max_steps=3", "logging=plain"]
    build_run(compose_cfg(quick + ["stage=sft", "sft.num_examples=64", "sft.batch_size=8"]), tmp_path / "sft").fit()
    build_run(compose_cfg(quick + ["stage=reward_model", "rm.num_pairs=64", "rm.batch_size=8"]), tmp_path / "rm").fit()
    ppo = ["trainer.max_steps=2", "algo.rollout_batch_size=8", "algo.num_minibatches=1", "generation.max_new_tokens=6", "logging=plain"]
    ppo += ["model=hf", f"model.policy={tmp_path / 'sft' / 'final' / 'policy'}", "reward=model", f"model.reward_model={tmp_path / 'rm' / 'final' / 'reward_model'}"]
    run = build_run(compose_cfg(ppo + ["reward.normalize=saved"]), tmp_path / "ppo")
    stats = json.loads((tmp_path / "rm" / "final" / "reward_model" / "score_stats.json").read_text())
    assert run.stage.normalizer.saved == (stats["mean"], stats["std"])
    history = run.fit()
    assert len(history) == 2 and all(r["reward/mean"] == r["reward/mean"] for r in history)  # scored by the learned model
    assert run.stage.models.reward_model.config.num_labels == 1


def test_normalising_a_reward_model_without_score_stats_is_one_line(tmp_path):
    from rlhand.errors import RewardError

    build_run(compose_cfg(["trainer.max_steps=1", "logging=plain", "stage=reward_model", "rm.num_pairs=64", "rm.batch_size=8"]), tmp_path / "rm").fit()
    folder = tmp_path / "rm" / "final" / "reward_model"
    (folder / "score_stats.json").unlink()
    ppo = ["model=hf", f"model.policy={folder}", "reward=model", f"model.reward_model={folder}", "reward.normalize=saved", "logging=plain"]
    with pytest.raises(RewardError, match=r"^reward.normalize: .*score_stats.json is missing or unreadable"):
        build_run(compose_cfg(ppo), tmp_path / "ppo")


def test_a_margin_that_is_not_a_number_is_one_line(tmp_path):
    pairs = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "ab=", "chosen": "ab", "rejected": "zz", "m": 1.0}, {"prompt": "ab=", "chosen": "ab", "rejected": "zz", "m": "n/a"}])
    with pytest.raises(PromptError, match=rf"^{pairs}: line 2: the margin 'n/a' is not a finite number$"):
        build_run(compose_cfg(RM + [f"rm.path={pairs}", "rm.margin_column=m"]), tmp_path / "a")
