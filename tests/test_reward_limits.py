"""Rewards that cannot stall a run: reward.timeout_s bounds an in-process call, reward.workers=N
bounds each sample in a process of its own, a raising function is one line, and samples that are
not scored are scored reward.failure_score and counted (reward/timeouts, reward/errors)."""

import os
import subprocess
import sys
import time

import pytest
import torch

from rlhand.errors import RewardError
from rlhand.rewards.function import FunctionLimits, FunctionScorer, failure_stats, resolve_reward_function
from rlhand.rewards.time_limit import CallTimedOut, time_limit
from rlhand.rewards.unscored import Unscored
from tests.test_cli_faults import EXE, QUICK, _env, one_line


def troublesome(prompts, responses, labels=None, **_):
    """Scores 1 per sample, except as its label says: hang, raise, die, unscored."""
    out = []
    for label in labels or ["ok"] * len(responses):
        if label == "hang":
            time.sleep(3600)
        if label == "raise":
            raise ZeroDivisionError("division by zero")
        if label == "die":
            os._exit(9)
        out.append(Unscored("a label it cannot read") if label == "unscored" else 1.0)
    return out


class Row:
    def __init__(self, where, label):
        self.where, self.label, self.rendered, self.is_conversation, self.columns, self.messages = where, label, False, False, {}, None


class Chars:
    def decode(self, ids, **_):
        return "".join(chr(97 + i) for i in ids)

    def batch_decode(self, rows, **_):
        return [self.decode(r) for r in rows]


def score(scorer, labels):
    n = len(labels)
    ids, mask = torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long)
    rows = [Row(f"p.jsonl line {i + 1}", label) for i, label in enumerate(labels)]
    return scorer(ids, mask, ids, mask, torch.zeros(n, dtype=torch.bool), rows=rows).tolist()


def pooled(workers=2, timeout_s=3.0, **limits):
    spec = {"_target_": "tests.test_reward_limits.troublesome"}
    return FunctionScorer(resolve_reward_function(spec), Chars(), "reward function troublesome", FunctionLimits(timeout_s, workers, spec=spec, **limits))


def test_in_workers_a_hanging_raising_or_dying_sample_costs_only_its_score(capsys):
    scorer = pooled(failure_score=-1.0)
    try:
        started = time.monotonic()
        scores = score(scorer, ["ok", "hang", "raise", "ok", "die", "unscored", "ok"])
        assert scores == [1.0, -1.0, -1.0, 1.0, -1.0, -1.0, 1.0]
        assert time.monotonic() - started < 60  # the hang cost its time limit, not an hour
        assert failure_stats(scorer, reducer=_Sum()) == {"reward/timeouts": 1.0, "reward/errors": 3.0}
        assert failure_stats(scorer, reducer=_Sum()) == {"reward/timeouts": 0.0, "reward/errors": 0.0}  # counted once
        err = capsys.readouterr().err
        assert "p.jsonl line 2: ran past reward.timeout_s=3" in err and "p.jsonl line 3: ZeroDivisionError: division by zero" in err
        assert err.count("rlhand: reward function troublesome") == 3  # the first few named, the rest counted
        assert score(scorer, ["ok", "ok"]) == [1.0, 1.0]  # the replaced workers score on
    finally:
        scorer.close()
    assert all(not w.process.is_alive() for w in scorer.pool.workers)


def test_in_workers_without_a_time_limit_a_killed_idle_worker_is_replaced_and_a_function_failing_everywhere_stops():
    import signal

    scorer = pooled(timeout_s=None)  # reward.timeout_s=0: no limit
    try:
        assert score(scorer, ["ok", "ok", "ok"]) == [1.0, 1.0, 1.0]
        for worker in scorer.pool.workers:  # between batches, as the OOM killer would: one scoring, one maybe still loading
            os.kill(worker.process.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert score(scorer, ["ok", "ok", "ok"]) == [1.0, 1.0, 1.0]
        assert failure_stats(scorer, reducer=_Sum())["reward/errors"] == 0.0
        with pytest.raises(RewardError, match="failed on every sample of the batch, e.g. ZeroDivisionError"):
            score(scorer, ["raise", "raise"])
    finally:
        scorer.close()


def configured(prompts, responses, answer="auto", **_):
    return [float(answer == "boxed")] * len(responses)


def test_a_column_does_not_replace_an_argument_the_config_sets(capsys):
    scorer = FunctionScorer(resolve_reward_function({"_target_": "tests.test_reward_limits.configured", "answer": "boxed"}), Chars(), "reward function configured")
    n = 2
    ids, mask = torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long)
    rows = [Row("p.jsonl line 1", "7"), Row("p.jsonl line 2", "8")]
    for row in rows:
        row.columns = {"answer": "a column"}
    assert scorer(ids, mask, ids, mask, torch.zeros(n, dtype=torch.bool), rows=rows).tolist() == [1.0, 1.0]
    assert "column answer not passed: the config sets that argument" in capsys.readouterr().err


def test_in_workers_on_failure_stop_ends_the_run_naming_the_sample():
    scorer = pooled(stop_on_failure=True)
    try:
        with pytest.raises(RewardError, match=r"p.jsonl line 2: ZeroDivisionError: division by zero \(reward.on_failure=stop\)"):
            score(scorer, ["ok", "raise"])
    finally:
        scorer.close()


def test_in_process_unscored_samples_score_the_failure_score_and_are_counted(capsys):
    scorer = FunctionScorer(troublesome, Chars(), "reward function troublesome", FunctionLimits(failure_score=0.25))
    assert score(scorer, ["ok", "unscored"]) == [1.0, 0.25]
    assert failure_stats(scorer, reducer=_Sum())["reward/errors"] == 1.0
    assert "p.jsonl line 2: a label it cannot read; scored reward.failure_score=0.25" in capsys.readouterr().err


def test_in_process_a_raise_or_a_timeout_is_one_reward_error():
    scorer = FunctionScorer(troublesome, Chars(), "reward function troublesome", FunctionLimits(timeout_s=1.0))
    with pytest.raises(RewardError, match="troublesome raised ZeroDivisionError: division by zero"):
        score(scorer, ["raise"])
    started = time.monotonic()
    with pytest.raises(RewardError, match=r"did not return within reward.timeout_s=1 \(scoring 2 samples"):
        score(scorer, ["ok", "hang"])
    assert time.monotonic() - started < 5


def test_time_limit_interrupts_a_python_loop_and_leaves_no_handler_behind():
    import signal

    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(CallTimedOut):
        with time_limit(0.5, "f"):
            while True:
                pass
    with time_limit(5, "f"):
        pass  # a block that ends in time is not interrupted later
    time.sleep(0.2)
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_hanging_reward_function_ends_the_run_within_seconds_naming_the_checkpoint(tmp_path):
    hang = "import time\nCALLS = []\ndef hang(prompts, responses, **_):\n    CALLS.append(1)\n    if len(CALLS) > 1:\n        time.sleep(3600)\n    return [0.0] * len(prompts)\n"
    (tmp_path / "hang_reward.py").write_text(hang)
    args = [EXE, *QUICK, "reward.function._target_=hang_reward.hang", "reward.timeout_s=5", "checkpoint.every=1", "hydra.run.dir=run"]
    started = time.monotonic()
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}  # hang_reward.py is found in the working directory
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr
    line = one_line(out)
    assert line.startswith("rlhand-train: error: reward function hang_reward.hang did not return within reward.timeout_s=5"), line
    assert line.endswith(f"last checkpoint: {tmp_path / 'run' / 'checkpoints' / 'step_1'} (rerun with resume=auto to continue from it)"), line
    assert time.monotonic() - started < 120


def test_a_raising_reward_function_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad_reward.py").write_text("def broken(prompts, responses, **_):\n    return {}['score']\n")
    out = subprocess.run([EXE, *QUICK, "reward.function._target_=bad_reward.broken"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert one_line(out) == "rlhand-train: error: reward function bad_reward.broken raised KeyError: 'score'; this run keeps no checkpoints (checkpoint.every=0)"


def test_a_run_with_reward_workers_logs_the_counts(tmp_path):
    from rlhand.stages import build_run
    from tests.conftest import FAST, compose_cfg

    cfg = compose_cfg(FAST + ["reward.workers=2", "trainer.save_final=false"])
    run = build_run(cfg, tmp_path / "run")
    history = run.fit()
    assert [row["reward/timeouts"] for row in history] == [0.0, 0.0]
    assert [row["reward/errors"] for row in history] == [0.0, 0.0]
    assert all(not w.process.is_alive() for s in _functions(run) for w in s.pool.workers)


def test_reward_workers_are_for_functions_only():
    from rlhand.config.load import ConfigError
    from tests.conftest import compose_cfg

    with pytest.raises((ConfigError, ValueError), match="reward.workers"):
        compose_cfg(["reward=remote", "reward.url=http://127.0.0.1:1/r", "reward.workers=2"])
    with pytest.raises((ConfigError, ValueError), match="reward.timeout_s"):
        compose_cfg(["reward.timeout_s=-1"])


def _functions(run):
    from rlhand.rewards.function import function_scorers

    return function_scorers(run.stage.scorer)


class _Sum:
    def sum(self, tensor):
        return tensor


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
