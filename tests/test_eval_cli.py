"""rlhand-eval: a trained policy beats its starting point on the letters task with an interval that
excludes 0.5; against itself the interval holds 0.5; bad arguments are one line."""

import json

import pytest

from rlhand.evaluation.cli import main
from rlhand.stages import build_run
from tests.conftest import compose_cfg
from tests.test_reward_tokenizer import reward_model, score_of_text, shuffled_char_tokenizer

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


def test_a_reward_server_and_a_reward_model_of_its_own_tokenizer_score_beside_a_function(trained_and_start, tmp_path, letters_server, rm_folder):
    run, _ = trained_and_start
    argv = ["--policy", f"trained={run}", "--scorer", GOLD, "--remote", f"served={letters_server}", "--reward-model", f"rm={rm_folder}"]
    main([*argv, "--num-prompts", "16", "--out", str(tmp_path / "eval")])
    means = json.loads((tmp_path / "eval" / "summary.json").read_text())["mean_scores"]["trained"]
    assert means["served"] == pytest.approx(means["letters"], abs=1e-6)  # the same function, over HTTP
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    tokenizer = shuffled_char_tokenizer()
    model = reward_model(tokenizer)
    row = rows[0]  # the reward model read the text with its own tokenizer: the score of the text
    assert row["scores"]["rm"] == pytest.approx(score_of_text(model, tokenizer, row["prompt"] + row["response"]), abs=1e-5)


def test_bad_arguments_are_one_line(trained_and_start, tmp_path, capsys):
    run, start = trained_and_start
    for argv, message in (
        (["--policy", f"a={start}", "--policy", f"a={start}", "--scorer", GOLD], "--policy a: named twice"),
        (["--policy", f"a={tmp_path}", "--scorer", GOLD], "neither a transformers model folder nor a run folder"),
        (["--policy", f"a={start}", "--scorer", GOLD, "--remote", "letters=http://127.0.0.1:9/r"], "--remote letters: the name of another scorer"),
        (["--policy", f"a={start}", "--remote", "r=ftp://host/r"], "--remote r.url: needs an http:// or https:// URL, not 'ftp://host/r'"),
        (["--policy", f"a={start}"], "give at least one --scorer, --reward-model or --remote"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--policy", f"a={start}", "--scorer", GOLD, "--out", str(run)])
    assert "a training run's folder" in capsys.readouterr().err


def eval_on_this_rank(argv):
    from rlhand.evaluation.cli import evaluate, parser

    return evaluate(parser().parse_args(argv))


def test_two_ranks_give_the_one_process_result(trained_and_start, tmp_path):
    """Under torchrun (a gloo group here) each rank answers its batches; rank 0's summary and samples
    are the one process's, to the bit: each batch draws from a generator seeded by its index."""
    from tests.distributed import run_ranks

    run, start = trained_and_start
    argv = ["--policy", f"start={start}", "--policy", f"trained={run}", "--scorer", GOLD, "--num-prompts", "40", "--batch-size", "8"]
    one = eval_on_this_rank([*argv, "--out", str(tmp_path / "one")])
    ranks = run_ranks(eval_on_this_rank, [*argv, "--out", str(tmp_path / "two")])
    assert ranks[1] is None and ranks[0] == one  # 5 batches: 3 on rank 0, 2 on rank 1
    assert (tmp_path / "two" / "samples.jsonl").read_text() == (tmp_path / "one" / "samples.jsonl").read_text()
