"""Named scorers, wherever several are taken (reward.components, eval.scorers, rlhand-eval): a spec
is a dict with exactly one of

    _target_: module.function   a reward function; its other keys are the function's arguments
    model: FOLDER               a reward model (*ForSequenceClassification, one label), read with its
                                own tokenizer and chat template when it has them (chat_template:
                                auto|on|off), else the policy's ids go straight through
    url: http://HOST:PORT/...   a reward server (OpenRLHF's protocol; timeout_s, retries,
                                request_size, in_flight as reward=remote takes them)

`prepare` checks a spec before any model loads (imports the function, reaches the server, finds the
folder and reads its tokenizer); `build` makes the scorer, loading a reward model then."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PreTrainedTokenizerBase

from rlhand.config.checks import SERVER_SETTINGS, check_scorer_spec
from rlhand.config.load import ConfigError
from rlhand.data.tokenizer import load_tokenizer
from rlhand.models.loaders import load_reward_model
from rlhand.models.sources import check_sequence_classifier, check_source, has_tokenizer, loading
from rlhand.rewards.function import FunctionLimits, FunctionScorer, resolve_reward_function
from rlhand.rewards.model import ModelScorer
from rlhand.rewards.remote import RemoteScorer, check_reachable
from rlhand.rewards.retokenize import RetokenizingScorer, same_tokenizer

NOT_ARGUMENTS = ("weight",)  # keys a caller reads (a component's weight), not the function's


@dataclass
class PreparedScorer:
    field: str  # where the spec came from, for every message about it
    spec: dict[str, Any]
    function: Callable | None = None
    tokenizer: PreTrainedTokenizerBase | None = None  # a reward model's own, read before any model loads
    limits: FunctionLimits | None = None  # a function's time limit and workers (none: unbounded, in process)

    @property
    def folder(self) -> str | None:
        return self.spec.get("model")


def prepare(spec: dict[str, Any], field: str, limits: FunctionLimits | None = None) -> PreparedScorer:
    """The checks that need no model: a typo in a function's name, a server that is down, a folder
    that is missing or not a reward model, each one line naming `field`. `limits` bound a function."""
    spec = {k: v for k, v in spec.items() if k not in NOT_ARGUMENTS}
    if spec.get("_target_"):
        return PreparedScorer(field, spec, function=resolve_reward_function(spec, field), limits=limits)
    try:
        check_scorer_spec(spec, field)  # the config checked it already; rlhand-eval's flags are checked here
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if spec.get("url"):
        check_reachable(spec["url"], field=f"{field}.url")
        return PreparedScorer(field, spec)
    folder = str(spec["model"])
    check_source(f"{field}.model", folder)
    check_sequence_classifier(f"{field}.model", folder)
    tokenizer = None
    if not Path(folder).is_dir() or has_tokenizer(Path(folder)):
        with loading(f"{field}.model", folder):
            tokenizer = load_tokenizer(folder)
    if spec.get("chat_template") == "on" and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{field}.chat_template: on, but {folder}'s tokenizer has no chat template")
    return PreparedScorer(field, spec, tokenizer=tokenizer)


def load_model(prepared: PreparedScorer, device: torch.device, dtype: torch.dtype = torch.float32):
    """A reward-model scorer's model, frozen (None for a function or a server)."""
    if not prepared.folder:
        return None
    return load_reward_model(prepared.folder, f"{prepared.field}.model", dtype=dtype).to(device).eval().requires_grad_(False)


def build(prepared: PreparedScorer, tokenizer: PreTrainedTokenizerBase, device: torch.device, dtype: torch.dtype = torch.float32, max_tokens: int | None = None, model=None):
    """The scorer, reading the policy's ids with the policy's `tokenizer`. A reward model loads now
    (in `dtype`, on `device`, scoring `max_tokens` tokens per forward) unless `model` is it, loaded
    once (load_model) for several policies."""
    spec, field = prepared.spec, prepared.field
    if prepared.function is not None:
        return FunctionScorer(prepared.function, tokenizer, name=field, limits=prepared.limits)
    if spec.get("url"):
        return RemoteScorer(spec["url"], tokenizer, **{k: spec[k] for k in SERVER_SETTINGS if k in spec}, field=f"{field}.url")
    model = model if model is not None else load_model(prepared, device, dtype)
    own = prepared.tokenizer
    if own is None or same_tokenizer(own, tokenizer):
        return ModelScorer(model, max_tokens)
    template = bool(getattr(own, "chat_template", None)) and spec.get("chat_template", "auto") != "off"
    return RetokenizingScorer(model, tokenizer, own, template, max_tokens)


def prepare_all(specs: dict[str, dict], section: str, limits: FunctionLimits | None = None) -> dict[str, PreparedScorer]:
    return {name: prepare(spec, f"{section}.{name}", limits) for name, spec in specs.items()}


def build_all(prepared: dict[str, PreparedScorer], tokenizer, device, dtype=torch.float32, max_tokens=None) -> dict[str, Callable]:
    return {name: build(p, tokenizer, device, dtype, max_tokens) for name, p in prepared.items()}
