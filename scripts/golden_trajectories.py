"""Record or check "golden" trajectories: short runs of named configurations whose every logged
figure (times and memory aside) and final weights must stay bit-identical across a refactor.

    python scripts/golden_trajectories.py record /tmp/golden.json     # before the change
    python scripts/golden_trajectories.py check /tmp/golden.json      # after: names what moved
    python scripts/golden_trajectories.py check /tmp/golden.json --only default,replay

The digests depend on this machine's CPU kernels and the locked versions: record and check on the
same machine. A run is 6 iterations of the configuration below (a few seconds each).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 6
RUNS = {
    "default": [],
    "shared_critic": ["model.critic_backbone=shared"],
    "replay": ["replay=priority", "replay.min_size=16", "replay.sample_size=16"],
    "kl_loss_accum": ["algo.kl_placement=loss", "algo.kl_estimator=k3", "algo.grad_accum_steps=2"],
    "one_thread": ["trainer.threads=1"],
    "variants": ["algo.loss_agg=seq_mean_token_mean", "algo.clip_ratio_high=0.28", "algo.kl_estimator=k2", "algo.whiten_rewards=true", "algo.kl_control=adaptive"],
    "v1": ["algo=ppo_v1", "eval.every=3", "eval.num_prompts=16", "checkpoint.every=0"],
    "no_padding_free": ["model.remove_padding=false"],
    "grpo": ["estimator=grpo"],
    "rloo_dynamic": ["estimator=rloo", "algo.dynamic_sampling=true"],
    "two_ranks": ["@torchrun", "trainer.threads=1"],
}
SKIPPED = ("time/", "memory/")


def digest_run(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "logs" / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in row.items() if not k.startswith(SKIPPED)} for row in rows]
    weights = hashlib.sha256()
    for path in sorted((folder / "final").rglob("*.safetensors")):
        weights.update(path.relative_to(folder).as_posix().encode())
        weights.update(path.read_bytes())
    return {
        "metrics": hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16],
        "weights": weights.hexdigest()[:16],
        "reward_last": kept[-1].get("reward/mean"),
        "rows": kept,
    }


def run(name: str, overrides: list[str], root: Path) -> dict:
    folder = root / name
    args = [a for a in overrides if a != "@torchrun"]
    common = [f"trainer.max_steps={STEPS}", "logging=plain", f"hydra.run.dir={folder}"]
    bin_dir = Path(sys.executable).parent
    if "@torchrun" in overrides:
        cmd = [str(bin_dir / "torchrun"), "--nproc-per-node", "2", "--master-port", "29731", "-m", "rlhand.train", *common, *args]
    else:
        cmd = [str(bin_dir / "rlhand-train"), *common, *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return digest_run(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("record", "check"))
    parser.add_argument("file")
    parser.add_argument("--only", default="", help="comma-separated run names")
    args = parser.parse_args()
    names = [n for n in RUNS if not args.only or n in args.only.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        for name in names:
            results[name] = run(name, RUNS[name], Path(tmp))
            print(f"{name}: metrics {results[name]['metrics']} weights {results[name]['weights']} reward {results[name]['reward_last']}", flush=True)
    if args.mode == "record":
        Path(args.file).write_text(json.dumps(results, indent=1))
        return
    recorded = json.loads(Path(args.file).read_text())
    moved = []
    for name in names:
        old, new = recorded[name], results[name]
        if (old["metrics"], old["weights"]) != (new["metrics"], new["weights"]):
            first = next(
                (f"step {i + 1} {k}: {a[k]!r} -> {b.get(k)!r}" for i, (a, b) in enumerate(zip(old["rows"], new["rows"])) for k in a if a[k] != b.get(k)),
                "weights only" if old["metrics"] == new["metrics"] else "keys differ",
            )
            moved.append(f"{name}: {first}")
    print("\n".join(moved) if moved else f"all {len(names)} trajectories bit-identical")
    raise SystemExit(1 if moved else 0)


if __name__ == "__main__":
    main()
