"""rlhand-compare on fixture runs: grouping, threshold crossing, table and non-empty PNGs."""

import json

import pytest

from rlhand.compare.cli import main
from rlhand.compare.runs import distinguishing_keys, find_runs, group_runs
from rlhand.compare.summary import moving_average, summarize


def write_run(folder, algo, replay, seed, rewards, batch=64, efficiency=1.0):
    (folder / "logs").mkdir(parents=True)
    config = {"algo": {"name": algo}, "replay": {"name": replay}, "seed": seed}
    (folder / "training_config.json").write_text(json.dumps(config))
    rows = []
    for step, reward in enumerate(rewards, start=1):
        rows.append(
            {
                "step": step,
                "reward/mean": reward,
                "samples/generated": step * batch,
                "samples/trained": int(step * batch * efficiency),
                "replay/sample_efficiency": efficiency,
                "time/iteration_s": 0.5,
                "kl/ref": 0.1 * step,
                "policy/entropy": 4.0 - 0.01 * step,
                "memory/rss_peak_mb": 500.0 + step,
            }
        )
    (folder / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def fixture_runs(tmp_path):
    for seed in range(3):  # a multirun folder: numbered job folders
        write_run(tmp_path / "sweep" / str(seed), "ppo", "off", seed, [0.1 * i + 0.01 * seed for i in range(10)])
        write_run(tmp_path / "sweep" / str(3 + seed), "ppo", "standard", seed, [0.2 * i for i in range(10)], efficiency=1.5)
    write_run(tmp_path / "single", "ppo_v1", "off", 0, [0.0] * 10)  # a single run folder
    return tmp_path


def test_moving_average():
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]


def test_threshold_crossing_uses_full_windows(fixture_runs):
    (run,) = [r for r in find_runs([fixture_runs / "sweep" / "3"])]
    s = summarize(run, threshold=0.5, window=3)
    # rewards 0, .2, .4, ...: the 3-iteration average is 0.4 at index 3 and 0.6 at index 4 (step 5).
    assert s.samples_to_threshold == 5 * 64 and s.seconds_to_threshold == pytest.approx(2.5)
    assert s.final_reward == pytest.approx((1.4 + 1.6 + 1.8) / 3) and s.sample_efficiency == 1.5
    assert summarize(run, threshold=99, window=3).samples_to_threshold is None


def test_grouping(fixture_runs):
    groups = group_runs(find_runs([fixture_runs]), ["algo.name", "replay.name"])
    assert {label: len(runs) for label, runs in groups.items()} == {
        "algo=ppo / replay=off": 3,
        "algo=ppo / replay=standard": 3,
        "algo=ppo_v1 / replay=off": 1,
    }
    by_sub_key = group_runs(find_runs([fixture_runs]), ["replay.buffer_size", "seed"])
    assert all(label.startswith("buffer_size=") and " / seed=" in label for label in by_sub_key)


def test_cli_writes_plots_and_table(fixture_runs, capsys):
    out = fixture_runs / "cmp"
    assert main([str(fixture_runs / "sweep"), str(fixture_runs / "single"), "--out", str(out), "--threshold", "0.5"]) == 0
    for name in ("reward.png", "diagnostics.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 30_000
    table = (out / "summary.md").read_text()
    assert "| algo=ppo / replay=standard | 3 |" in table and "not reached" in table  # ppo_v1 stays at 0
    assert "7 runs in 3 groups" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("rlhand-compare: error:") for line in err)


def test_default_groups_split_every_swept_key_but_the_seed(tmp_path):
    # rlhand-train -m replay=standard,priority replay.buffer_size=500,1000 seed=0,1: four groups of
    # two seeds, labelled by the swept keys (replay.prioritized follows from replay.name).
    job = 0
    for replay, prioritized in (("standard", False), ("priority", True)):
        for size in (500, 1000):
            for seed in (0, 1):
                folder = tmp_path / str(job)
                write_run(folder, "ppo", replay, seed, [0.1 * i for i in range(10)])
                config = {"algo": {"name": "ppo"}, "replay": {"name": replay, "prioritized": prioritized, "buffer_size": size}, "seed": seed}
                (folder / "training_config.json").write_text(json.dumps(config))
                job += 1
    runs = find_runs([tmp_path])
    assert distinguishing_keys(runs) == ["replay.name", "replay.buffer_size"]
    groups = group_runs(runs, distinguishing_keys(runs))
    assert {label: len(members) for label, members in groups.items()} == {
        "replay=priority / buffer_size=1000": 2,
        "replay=priority / buffer_size=500": 2,
        "replay=standard / buffer_size=1000": 2,
        "replay=standard / buffer_size=500": 2,
    }
    assert main([str(tmp_path), "--out", str(tmp_path / "cmp")]) == 0
    assert "| replay=standard / buffer_size=500 | 2 |" in (tmp_path / "cmp" / "summary.md").read_text()


def test_runs_that_differ_in_nothing_but_the_seed_form_one_group(fixture_runs):
    runs = find_runs([fixture_runs / "sweep"])
    same = [run for run in runs if run.config["replay.name"] == "off"]
    assert distinguishing_keys(same) == [] and list(group_runs(same, [])) == ["all runs"]


def test_a_metrics_file_holding_two_runs_is_read_as_its_last(tmp_path, capsys):
    write_run(tmp_path / "run", "ppo", "off", 0, [0.5, 0.6])
    metrics = tmp_path / "run" / "logs" / "metrics.jsonl"
    stale = metrics.read_text()
    write_run(tmp_path / "again", "ppo", "off", 0, [0.1, 0.2, 0.3])
    metrics.write_text(stale + (tmp_path / "again" / "logs" / "metrics.jsonl").read_text())
    (run,) = find_runs([tmp_path / "run"])
    assert [row["reward/mean"] for row in run.rows] == [0.1, 0.2, 0.3]
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "cmp")]) == 0
    assert "restarts at step 1 after row 2: using the last 3 rows" in capsys.readouterr().err


def test_supervised_runs_are_skipped_with_a_note(fixture_runs, tmp_path, capsys):
    sft = tmp_path / "sft"
    (sft / "logs").mkdir(parents=True)
    (sft / "training_config.json").write_text(json.dumps({"stage": "sft", "algo": {"name": "ppo"}, "replay": {"name": "off"}, "seed": 0}))
    (sft / "logs" / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 2.0}) + "\n")
    assert main([str(fixture_runs), "--out", str(tmp_path / "out")]) == 0
    assert "skipping 1 run(s) of stage=sft or stage=reward_model" in capsys.readouterr().err
    assert main([str(sft), "--out", str(tmp_path / "out2")]) == 2
    assert "no RL runs to compare" in capsys.readouterr().err


def write_evaluation(folder):
    """An rlhand-eval --out folder: its summary as evaluation/cli.py builds it, from ab_summary."""
    import numpy as np

    from rlhand.evaluation.ab import ab_summary

    rng = np.random.default_rng(0)
    better, base = rng.normal(0.5, 1, 64), rng.normal(0, 1, 64)
    lengths = rng.integers(1, 16, 64).tolist()
    ab = {"rl vs sft": {"gold": ab_summary(better, base, lengths, lengths, seed=0)}}
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"prompts": 64, "seed": 0, "ab": ab}))
    (folder / "samples.jsonl").write_text("")
    return ab["rl vs sft"]["gold"]


def test_ab_results_found_beside_the_runs_are_tabled(fixture_runs, capsys):
    result = write_evaluation(fixture_runs / "eval" / "rl_vs_sft")
    out = fixture_runs / "cmp"
    assert main([str(fixture_runs), "--out", str(out)]) == 0
    table = (out / "summary.md").read_text()
    low, high = result["interval_95"]
    assert f"| rl vs sft | gold | {result['win_rate']:.3f} | [{low:.3f}, {high:.3f}] |" in table
    assert table.index("| algo=ppo / replay=standard |") < table.index("### A/B:")  # under the runs' table
    # Evaluations alone are tabled too.
    assert main([str(fixture_runs / "eval"), "--out", str(tmp_out := fixture_runs / "cmp2")]) == 0
    assert "| rl vs sft | gold |" in (tmp_out / "summary.md").read_text()
