import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rlhand.config import load_config, register_configs
from rlhand.train import conf_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
register_configs()
CONF_DIR = conf_dir()

# Small and fast: a few seconds per run on 2 CPU cores.
FAST = [
    "trainer.max_steps=2",
    "algo.rollout_batch_size=8",
    "algo.num_minibatches=2",
    "algo.ppo_epochs=2",
    "task.num_prompts=32",
    "generation.max_new_tokens=6",
    "logging=plain",
]


def pytest_addoption(parser):
    parser.addoption(
        "--reverse-order",
        action="store_true",
        help="run the collected tests last to first, to find order dependence (use with -p no:randomly)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()


def pytest_collection_finish(session):
    """Say which random order this is, also under -q (pytest-randomly's own header line is not)."""
    config = session.config
    if config.pluginmanager.hasplugin("randomly") and not config.getoption("--reverse-order"):
        seed = config.getoption("randomly_seed")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and isinstance(seed, int):
            reporter.write_line(f"random test order, seed {seed} (repeat it with -p randomly --randomly-seed={seed})")


@pytest.fixture(autouse=True)
def restore_process_state():
    """A Trainer sets torch's thread count for its process (trainer.threads), and a test may chdir:
    each test starts from the state the process began with, whatever ran before it."""
    threads, cwd = torch.get_num_threads(), os.getcwd()
    yield
    torch.set_num_threads(threads)
    os.chdir(cwd)


def compose_raw(overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def compose_cfg(overrides=()):
    return load_config(compose_raw(overrides))


@pytest.fixture
def fast_cfg():
    return lambda *extra: compose_cfg(FAST + list(extra))


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def letters_server():
    """rlhand-serve-reward serving the letters reward on 127.0.0.1: its URL."""
    from rlhand.rewards.serve import function_scorer, make_server
    from tests.test_remote_reward import serving

    server = make_server(function_scorer("rlhand.tasks.letters.letters_reward"))
    yield serving(server)
    server.shutdown()


@pytest.fixture
def rm_folder(tmp_path):
    """A reward-model folder whose tokenizer is not the policy's (the same characters, other ids)."""
    from tests.test_reward_tokenizer import reward_model, shuffled_char_tokenizer

    tokenizer = shuffled_char_tokenizer()
    reward_model(tokenizer).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    """A tiny ChatML chat model folder (tests/chat_model.py): Qwen2.5's template with tools, pad = EOS
    = <|im_end|>, generation_config listing <|im_end|> and <|endoftext|>. Written once per session."""
    from tests.chat_model import write_chat_model

    return write_chat_model(tmp_path_factory.mktemp("chat") / "policy")
