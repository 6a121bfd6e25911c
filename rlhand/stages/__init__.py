"""Training stages. Each supplies its inputs, state, step and metrics (rlhand/run/stage.py) to the
one run lifecycle (rlhand/run/lifecycle.py); `build_run` gives a run of the stage a config names."""

from pathlib import Path

from rlhand.config.schema import TrainConfig
from rlhand.config.stages import StageKind


def build_run(cfg: TrainConfig, run_dir: Path):
    """A run of the config's stage, everything checked and built (models loaded, a checkpoint
    resumed), ready to fit()."""
    from rlhand.run.lifecycle import Run

    return Run(cfg, run_dir, stage_class(cfg.stage))


def stage_class(kind: StageKind):
    """The class that trains `stage=<kind>` (imported when chosen: the RL stage's engines are not
    loaded for a supervised run)."""
    if kind is StageKind.sft:
        from rlhand.stages.sft.stage import SFTStage

        return SFTStage
    if kind is StageKind.reward_model:
        from rlhand.stages.reward_model.stage import RewardModelStage

        return RewardModelStage
    from rlhand.stages.ppo.stage import PPOStage

    return PPOStage


def train(cfg: TrainConfig, run_dir: Path) -> list[dict]:
    """Train the config's stage into run_dir; each iteration's metrics. Errors are raised (a UserError
    for what a user can fix); rlhand-train adds the command line, signals and one-line exits."""
    return build_run(cfg, run_dir).fit()
