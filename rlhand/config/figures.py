"""The validation figures a run logs, known from its config alone, and the one that early stopping,
the plateau LR, best/ and a tuning sweep follow (early_stop.metric, or the stage's own): a name
that no validation logs is one line before anything loads, not a KeyError after the first one."""

from rlhand.config.stages import StageKind

# Each stage's own figure; "-" in front: lower is better.
STAGE_FIGURES = {StageKind.ppo: "val/reward", StageKind.sft: "-val/loss", StageKind.reward_model: "val/accuracy"}
PPO_PER_SET = ("reward", "kl", "entropy", "response_length")  # and reward_<scorer> for each eval.scorers; kl with a reference
SUPERVISED = {StageKind.sft: ("loss", "perplexity"), StageKind.reward_model: ("loss", "accuracy", "margin", "score_mean", "score_std")}


def validation_figures(cfg) -> set[str]:
    """Every val/* figure a validation of this config logs."""
    if cfg.stage is not StageKind.ppo:
        return {f"val/{name}" for name in SUPERVISED[cfg.stage]}
    per_set = [name for name in PPO_PER_SET if name != "kl" or cfg.algo.needs_reference]
    per_set += [f"reward_{name}" for name in cfg.eval.scorers]
    figures = {f"val/{name}" for name in per_set}
    for prompt_set in cfg.eval.prompt_sets:
        figures |= {f"val/{prompt_set}/{name}" for name in per_set}
    return figures


def watched_figure(cfg) -> str:
    return cfg.early_stop.metric or STAGE_FIGURES[StageKind(cfg.stage)]


def split_watched(watched: str) -> tuple[float, str]:
    """(sign, the figure's name): "-val/loss" -> (-1, "val/loss"); the sign makes higher better."""
    return (-1.0, watched[1:]) if watched.startswith("-") else (1.0, watched)
