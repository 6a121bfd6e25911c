"""rlhand-train: the Hydra entry point. Compose config -> check it -> Trainer(cfg).fit()."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlhand.config import ConfigError, load_config, register_configs


def conf_dir() -> str:
    """Configs ship inside the wheel as rlhand/conf; a source checkout keeps them in ./conf.
    An absolute path, because Hydra resolves relative ones against the module (a known pitfall)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").exists():
            return str(candidate)
    raise FileNotFoundError(f"rlhand: no conf/train.yaml next to {here}")


def run(cfg: DictConfig, run_dir: Path) -> list[dict]:
    from rlhand.data.prompts import PromptError
    from rlhand.trainer.loop import Trainer

    try:
        config = load_config(cfg)
        trainer = Trainer(config, run_dir)
    except (ConfigError, PromptError, ValueError) as err:
        print(f"rlhand-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return trainer.fit()


register_configs()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
