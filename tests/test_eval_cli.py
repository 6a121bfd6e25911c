"""rlhand-eval: a trained policy beats its starting point on the letters task with an interval that
excludes 0.5; against itself the interval holds 0.5; bad arguments are one line."""

import json

import pytest

from rlhand.evaluation.cli import main
from rlhand.stages import build_run
from tests.conftest import compose_cfg

GOLD = "letters=rlhand.tasks.letters.letters_reward"


@pytest.fixture(scope="module")
def trained_and_start(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    run = build_run(compose_cfg(["trainer.max_steps=40", "logging=plain"]), root / "run")
    run.stage.save(root / "start")  # the policy before its first step
    run.fit()
    return root / "run", root / "start" / "policy"


def test_a_trained_policy_beats_its_start_and_ties_with_itself(trained_and_start, tmp_path, capsys):
    run, start = trained_and_start
    main(["--policy", f"start={start}", "--policy", f"trained={run}", "--policy", f"again={start}", "--scorer", GOLD, "--num-prompts", "64", "--out", str(tmp_path / "ab")])
    summary = json.loads((tmp_path / "ab" / "summary.json").read_text())
    better = summary["ab"]["trained vs start"]["letters"]
    assert better["interval_95"][0] > 0.5, better
    itself = summary["ab"]["again vs start"]["letters"]
    assert itself["interval_95"][0] <= 0.5 <= itself["interval_95"][1] and itself["ties"] == 1.0  # same weights, same seeds
    rows = [json.loads(line) for line in (tmp_path / "ab" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 64 and {r["policy"] for r in rows} == {"start", "trained", "again"}
    assert "trained vs start by letters: win rate" in capsys.readouterr().out


def test_bad_arguments_are_one_line(trained_and_start, tmp_path, capsys):
    run, start = trained_and_start
    for argv, message in (
        (["--policy", f"a={start}", "--policy", f"a={start}", "--scorer", GOLD], "--policy a: named twice"),
        (["--policy", f"a={tmp_path}", "--scorer", GOLD], "neither a transformers model folder nor a run folder"),
        (["--policy", f"a={start}"], "give at least one --scorer or --reward-model"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--policy", f"a={start}", "--scorer", GOLD, "--out", str(run)])
    assert "a training run's folder" in capsys.readouterr().err
