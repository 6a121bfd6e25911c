from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from rlhand.config import ConfigError
from rlhand.config.schema import TrainConfig
from tests.conftest import CONF_DIR, compose_cfg, compose_raw

GROUPS = ["model", "algo", "replay", "scheduler", "logging", "task", "reward"]


def options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_default_composes_to_typed_config():
    cfg = compose_cfg()
    assert isinstance(cfg, TrainConfig)
    assert cfg.algo.name == "ppo" and cfg.replay.name == "off" and cfg.model.name == "tiny"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_is_named_after_its_file(group):
    required = {
        ("model", "hf"): ["model.policy=some/model"],
        ("task", "file"): ["task.path=p.jsonl", "reward=letters"],
        ("task", "random_text"): ["reward=model"],
        ("reward", "none"): ["reward.function._target_=rlhand.tasks.letters.letters_reward"],
        ("scheduler", "plateau"): ["eval.every=5"],
        ("reward", "remote"): ["reward.url=http://127.0.0.1:5000/get_reward"],
    }
    for option in options(group):
        extra = required.get((group, option), [])
        cfg = compose_cfg([f"{group}={option}", *extra])
        assert getattr(cfg, group).name == option


def test_every_yaml_lists_its_schema_first():
    """Plain options list the schema; presets (`# @package _global_`, e.g. algo=ppo_v1) extend
    another option of their group, which does."""
    for group in GROUPS:
        for path in (Path(CONF_DIR) / group).glob("*.yaml"):
            text = path.read_text()
            first = yaml.safe_load(text)["defaults"][0]
            if text.startswith("# @package _global_"):
                base = first.split("@")[0].removeprefix(f"/{group}/")
                assert base in options(group) and base != path.stem, path
            else:
                assert first == f"{group}_schema", path


def test_overrides_reach_the_dataclass():
    cfg = compose_cfg(["algo.clip_ratio_low=0.1", "trainer.max_steps=7", "seed=3"])
    assert cfg.algo.clip_ratio_low == 0.1 and cfg.trainer.max_steps == 7 and cfg.seed == 3


@pytest.mark.parametrize(
    "override",
    [
        "algo.clip_rato=0.1",  # unknown key
        "algo.clip_ratio_low=abc",  # wrong type
        "algo.kl_estimator=k9",  # unknown enum choice
        "algo=ppo_v9",  # unknown group option
        "trainer.max_step=3",
        "model.n_layer=two",
    ],
)
def test_composition_errors(override):
    with pytest.raises(ConfigCompositionException):
        compose_raw([override])


@pytest.mark.parametrize(
    "override, field",
    [
        ("algo.clip_ratio_low=0", "algo.clip_ratio_low"),
        ("algo.clip_ratio_high=-0.1", "algo.clip_ratio_high"),
        ("algo.gamma=1.5", "algo.gamma"),
        ("algo.lam=-0.1", "algo.lam"),
        ("algo.rollout_batch_size=10", "algo.rollout_batch_size"),
        ("algo.lr=0", "algo.lr"),
        ("algo.kl_coef=-1", "algo.kl_coef"),
        ("generation.temperature=0", "generation.temperature"),
        ("generation.top_p=1.5", "generation.top_p"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("model.n_embd=65", "model.n_embd"),
        ("model.n_positions=16", "model.n_positions"),
        ("scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio"),
        ("+algo.typo=1", "typo"),
        ("+trainer.typo=1", "typo"),
        # replay's values are checked with replay off too (the default): none is taken silently
        ("replay.fresh_fraction=1.5", "replay.fresh_fraction"),
        ("replay.sample_size=0", "replay.sample_size"),
        ("replay.adaptive_reuse=[[0.01,0]]", "replay.adaptive_reuse"),
        ("trainer.logits_chunk_mb=0", "trainer.logits_chunk_mb"),
        ("trainer.score_max_tokens=0", "trainer.score_max_tokens"),
    ],
)
def test_value_errors_name_the_field_in_one_line(override, field):
    with pytest.raises(ConfigError) as err:
        compose_cfg([override])
    message = str(err.value)
    assert field in message and "\n" not in message


def test_hf_model_needs_a_path():
    with pytest.raises((ConfigError, ConfigCompositionException)):
        compose_cfg(["model=hf"])


def test_hf_critic_from_reward_model_needs_one():
    with pytest.raises(ConfigError, match="model.critic_init"):
        compose_cfg(["model=hf", "model.policy=x", "model.critic_init=reward_model"])


def test_reward_function_needs_target():
    with pytest.raises(ConfigError, match="^reward: no reward chosen"):
        compose_cfg(["reward.function=null"])


@pytest.mark.parametrize("task", [["task=file", "task.path=p.jsonl"], ["task=random_text"]])
def test_a_task_without_a_reward_of_its_own_needs_one_chosen(task):
    # Prompts of one's own must never be scored silently by the built-in letters reward.
    with pytest.raises(ConfigError, match="^reward: no reward chosen"):
        compose_cfg(task)
    assert compose_cfg([*task, "reward.function._target_=my_rewards.brevity"]).reward.function == {"_target_": "my_rewards.brevity"}
    assert compose_cfg([*task, "reward=model"]).reward.name == "model"


def test_the_letters_task_brings_its_reward_unless_another_is_named():
    assert compose_cfg().reward.name == "letters"
    assert compose_cfg(["reward=model"]).reward.name == "model"
    assert compose_cfg(["algo=ppo_v2"]).reward.name == "letters"


def test_presets_are_the_algorithm_plus_feature_groups():
    """algo=ppo_v1 is algo=ppo with features=production; algo=ppo_v2 adds replay=standard."""
    from rlhand.config.load import config_dict

    def settings(*overrides):
        config = config_dict(compose_cfg(list(overrides)))
        config["algo"].pop("name")
        return config

    assert settings("algo=ppo_v1") == settings("algo=ppo", "features=production")
    assert settings("algo=ppo_v2") == settings("algo=ppo", "features=production", "replay=standard")
    assert settings("algo=ppo") != settings("algo=ppo", "features=production")
