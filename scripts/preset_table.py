"""Which model classes each memory preset fits: the estimate rlhand-train prints before loading any
model, for Qwen2.5 0.5B-7B shapes (config.json only: nothing is built but on the meta device), at the
README's lengths for a real checkpoint (256 prompt + 256 new tokens, 64 responses per iteration,
the critic from the policy). docs/memory.md's preset table.

    python scripts/preset_table.py                   # every preset x shape
    python scripts/preset_table.py --lengths 512 512
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlhand.distributed.layout import resolve_layout  # noqa: E402
from rlhand.models.fit import GIB, estimate_from_shapes  # noqa: E402
from rlhand.models.shapes import model_shapes  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.real_shape import QWEN25, build_tokenizer, qwen2_config  # noqa: E402

PRESETS = ["8gb", "16gb", "24gb", "80gb"]
# Whatever a preset sets, each column's way of training: every weight, LoRA on a bf16 base, LoRA on an NF4 base.
MODES = {
    "full": ["model.lora.enabled=false", "model.quantization=none"],
    "LoRA": ["model.lora.enabled=true", "model.quantization=none"],
    "QLoRA": ["model.lora.enabled=true", "model.quantization=nf4"],
}


def estimate(folder: Path, preset: str, prompt: int, new: int, extra: list[str]):
    cfg = compose_cfg([
        f"memory={preset}", "model=hf", f"model.policy={folder}", "model.critic_init=policy", "task=file", "task.path=unused.jsonl",
        "reward.function._target_=tests.real_shape.length_reward", f"task.max_prompt_tokens={prompt}", f"generation.max_new_tokens={new}", *extra,
    ])
    est = estimate_from_shapes(cfg, model_shapes(cfg, None), [prompt] * 64, resolve_layout(cfg.trainer, 1), torch.device("cpu"))
    return est, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs=2, type=int, default=[256, 256], metavar=("PROMPT", "NEW"))
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name, shape in QWEN25.items():
            folders[name] = Path(tmp) / name
            qwen2_config(shape, tokenizer).save_pretrained(folders[name])
        print("| preset | " + " | ".join(f"{name} full | {name} LoRA | {name} QLoRA" for name in folders) + " |")
        print("| --- | " + " | ".join("--- | --- | ---" for _ in folders) + " |")
        for preset in PRESETS:
            cells = []
            for name, folder in folders.items():
                for mode in MODES.values():
                    est, cfg = estimate(folder, preset, *args.lengths, mode)
                    fits = "fits" if est.total <= cfg.trainer.device_memory_gb * GIB else "over"
                    cells.append(f"{est.total / GIB:.1f} {fits}")
            print(f"| `memory={preset}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
