"""The benchmark runs end to end on a tiny configuration (its figures are not asserted: timing
belongs to `make bench`, not to tests)."""

import json

from rlhand.bench import main

TINY = ["model.n_layer=1", "model.n_embd=32", "algo.rollout_batch_size=8", "algo.num_minibatches=2", "algo.ppo_epochs=1",
        "generation.max_new_tokens=4", "task.num_prompts=16", "trainer.threads=1"]


def test_bench_runs_one_tiny_iteration_and_writes_json(tmp_path, capsys):
    trl = tmp_path / "trl.json"
    trl.write_text(json.dumps({"summary": {"median_wall_s_per_iter": 10.0}}))
    assert main(["--iters", "1", "--warmup", "0", "--json", str(tmp_path / "b.json"), "--compare", str(trl), *TINY]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    summary = result["summary"]
    assert summary["gen_tokens_per_iter"] <= 8 * 4 and summary["optimizer_steps_per_iter"] == 2
    assert set(summary["median_phase_s"]) >= {"generate_s", "score_ref_s", "score_value_s", "score_reward_s", "update_backward_s"}
    assert summary["median_wall_s_per_iter"] > 0 and summary["peak_rss_mib"] > 0
    out = capsys.readouterr().out
    assert "wall s / PPO iteration (median)" in out and "x TRL's iterations per second" in out


def test_bench_bad_override_is_one_line(capsys):
    assert main(["--iters", "1", "algo.gamma=3"]) == 2
    assert capsys.readouterr().err.strip() == "rlhand-bench: error: algo.gamma: 3.0 is outside [0, 1]"


def test_rounds_table_compares_each_run_with_the_trl_run_of_its_round(tmp_path, capsys):
    def write(name, wall, rss=500.0):
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": {"median_wall_s_per_iter": wall, "peak_rss_mib": rss}}))

    write("r1_trl", 6.0, 860.0)
    write("r2_trl", 8.0, 850.0)
    write("r3_trl", 6.0, 855.0)
    write("r1_fp32", 4.0)  # 1.50x
    write("r2_fp32", 4.0)  # 2.00x: a slow TRL round does not make rlhand look slow
    write("r3_fp32", 5.0, 640.0)  # 1.20x
    assert main(["--table", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[2].startswith("| trl | 6.000, 8.000, 6.000 | 6.000 | 1.00x, 1.00x, 1.00x | **1.00x** | 860 MiB |")
    assert rows[3] == "| fp32 | 4.000, 4.000, 5.000 | 4.000 | 1.50x, 2.00x, 1.20x | **1.50x** | 640 MiB |"
    assert main(["--table", str(tmp_path / "missing")]) == 2
