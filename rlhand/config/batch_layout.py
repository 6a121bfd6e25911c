"""How an iteration's batch splits: over the ranks, into minibatches and micro-batches, into whole
groups of samples per prompt, with the replayed rows. One set of rules for the config on its own
(one rank, checked as it is composed) and for a run of N ranks (checked before anything loads):
each rank takes an equal share of everything, so every count must divide."""


def check_batch_layout(cfg, ranks: int = 1) -> None:
    """A ValueError "field: what does not split" for the first rule `cfg` breaks on `ranks` ranks."""
    algo, replay, group, n = cfg.algo, cfg.replay, cfg.generation.samples_per_prompt, ranks
    over = f" over {n} ranks" if n > 1 else ""

    def require(holds: bool, field: str, what: str) -> None:
        if not holds:
            raise ValueError(f"{field}: {what}")

    require(algo.rollout_batch_size % group == 0, "generation.samples_per_prompt", f"{group} does not divide algo.rollout_batch_size={algo.rollout_batch_size} (it counts responses)")
    require(algo.rollout_batch_size % n == 0, "algo.rollout_batch_size", f"{algo.rollout_batch_size} does not split{over}")
    local, parts = algo.rollout_batch_size // n, algo.num_minibatches * algo.grad_accum_steps
    a_rank = " a rank" if n > 1 else ""
    require(local % algo.num_minibatches == 0, "algo.rollout_batch_size", f"{local} responses{a_rank} do not split into num_minibatches={algo.num_minibatches}")
    minibatch = local // algo.num_minibatches
    require(minibatch % algo.grad_accum_steps == 0, "algo.grad_accum_steps", f"minibatches of {minibatch} responses{a_rank} do not split into {algo.grad_accum_steps} micro-batches")
    if group > 1:  # each rank samples whole groups and every minibatch holds whole groups
        require((algo.rollout_batch_size // group) % n == 0, "generation.samples_per_prompt", f"{algo.rollout_batch_size // group} prompts of {group} responses do not split{over}")
        require(minibatch % group == 0, "algo.num_minibatches", f"minibatches of {minibatch} responses do not hold whole groups of samples_per_prompt={group}")
        if replay.enabled:
            require(
                (replay.sample_size // n) % algo.num_minibatches == 0,
                "replay.sample_size",
                f"with groups each minibatch takes an equal share of the replayed rows: {replay.sample_size // n} a rank do not split into num_minibatches={algo.num_minibatches}",
            )
    if replay.enabled:
        for field in ("buffer_size", "min_size", "sample_size"):
            require(getattr(replay, field) % n == 0, f"replay.{field}", f"{getattr(replay, field)} does not split{over}")
        rows = local + replay.sample_size // n
        require(rows % parts == 0, "replay.sample_size", f"{rows} fresh + replayed rows{a_rank} do not split into {algo.num_minibatches} minibatches x {algo.grad_accum_steps} micro-batches")
    if cfg.eval.every:
        require(cfg.eval.num_prompts % n == 0, "eval.num_prompts", f"{cfg.eval.num_prompts} does not split{over}")
