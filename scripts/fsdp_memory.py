"""Per-rank memory of the trained state (parameters, gradients, AdamW states of policy and critic)
after one PPO iteration, on 1 process or N (torchrun). A measurement for docs/distributed.md:

    python scripts/fsdp_memory.py model.n_layer=8 model.n_embd=512
    torchrun --nproc-per-node 2 scripts/fsdp_memory.py model.n_layer=8 model.n_embd=512 [trainer.strategy=ddp]

Prints one JSON line per rank: bytes held by that rank for each part, and its peak RSS.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

from rlhand.distributed import context
from rlhand.reporting.memory import memory_stats, reset_peak_memory


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def trained_state(learner) -> dict[str, int]:
    params = list(learner.module.parameters())
    states = [v for state in learner.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    return {
        "parameters": local_bytes(params),
        "gradients": local_bytes(p.grad for p in params),
        "optimizer": local_bytes(states),
        "elements": sum(p.numel() for p in params),  # whole-model count (DTensor numel is global)
    }


def main() -> None:
    ctx = context.init_from_env()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rlhand.stages import build_run
    from tests.conftest import compose_cfg

    overrides = ["logging=plain", "trainer.max_steps=1", "trainer.save_final=false", *sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        run = ctx.broadcast_object(tmp)
        job = build_run(compose_cfg(overrides), Path(run) / "run")
        reset_peak_memory(job.device)
        job.stage.step(1)  # gradients (kept: zero_grad sets them to None only before the next step) and AdamW states exist now
        peak = memory_stats(job.device)["memory/rss_peak_mb"]
        report = {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "strategy": job.env.layout.strategy.value,
            "policy": trained_state(job.stage.learners.policy),
            "critic": trained_state(job.stage.learners.critic),
            "rss_peak_mb": peak,
        }
        print(json.dumps(report), flush=True)
    context.shutdown()


if __name__ == "__main__":
    main()
