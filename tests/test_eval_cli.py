"""rlhand-eval: a trained policy beats its starting point on the letters task with an interval that
excludes 0.5; against itself the interval holds 0.5; a grader gives pass@1 and pass@k over several
samples per prompt; bad arguments are one line."""

import json

import pytest

from rlhand.evaluation.cli import main
from rlhand.evaluation.pass_at_k import pass_at_k
from rlhand.rewards.unscored import Unscored
from rlhand.stages import build_run
from tests.conftest import compose_cfg
from tests.test_reward_tokenizer import reward_model, score_of_text, shuffled_char_tokenizer

GOLD = "letters=rlhand.tasks.letters.letters_reward"
GRADER = "first=tests.test_eval_cli.first_letter_grader"


def first_letter_grader(prompts, responses, labels, **_):
    """1 when the response starts with one of its label's letters, else 0; a label "?" cannot be graded."""
    return [Unscored("no answer to grade against") if label == "?" else float(bool(r) and r[0] in label) for r, label in zip(responses, labels)]


def letter_prompts(path, count: int, unreadable: int = 0):
    """A jsonl file of letters prompts whose "answer" is their letters (the first `unreadable` "?")."""
    from rlhand.tasks.letters import make_letter_prompts

    rows = [{"prompt": text, "answer": "?" if i < unreadable else text[:-1]} for i, text in enumerate(make_letter_prompts(count, 8, 123))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


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
    printed = capsys.readouterr()
    assert "trained vs start by letters: win rate" in printed.out
    assert "Loading weights" not in printed.err  # transformers' progress bars stay out of the output


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
        (["--policy", f"a={start}"], "give at least one --scorer, --reward-model, --remote or --grader"),
        (["--policy", f"a={start}", "--grader", GRADER], "--grader first needs --prompts with a --label-column"),
        (["--policy", f"a={start}", "--grader", GRADER, "--prompts", str(tmp_path / "p.jsonl")], "--grader first needs --prompts with a --label-column"),
        (["--policy", f"a={start}", "--scorer", GOLD, "--greedy", "--samples", "2"], "--samples 2 with --greedy"),
        (["--policy", f"a={start}", "--scorer", GOLD, "--samples", "0"], "--samples must be at least 1"),
        (["--policy", f"a={start}", "--grader", "g=tests.test_eval_cli.no_such_grader", "--prompts", "p.jsonl", "--label-column", "answer"], "--grader g._target_: cannot import"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["--policy", f"a={start}", "--scorer", GOLD, "--out", str(run)])
    assert "a training run's folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor inside one
        main(["--policy", f"a={start}", "--scorer", GOLD, "--out", str(run / "eval")])
    assert f"(inside the training run {run.resolve()})" in capsys.readouterr().err
    assert not (run / "eval").exists()


def test_a_grader_gives_pass_at_1_and_pass_at_k_over_samples(trained_and_start, tmp_path, capsys):
    run, start = trained_and_start
    prompts = letter_prompts(tmp_path / "prompts.jsonl", 16, unreadable=1)
    argv = ["--policy", f"start={start}", "--policy", f"trained={run}", "--prompts", str(prompts), "--label-column", "answer", "--grader", GRADER, "--scorer", GOLD]
    main([*argv, "--samples", "4", "--batch-size", "8", "--max-new-tokens", "4", "--out", str(tmp_path / "k4")])
    summary = json.loads((tmp_path / "k4" / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "k4" / "samples.jsonl").read_text().splitlines()]
    assert summary["samples"] == 4 and len(rows) == 2 * 16 * 4
    for policy in ("start", "trained"):
        acc = summary["accuracy"][policy]["first"]
        assert set(acc) == {"pass@1", "pass@1_ci", "pass@2", "pass@2_ci", "pass@4", "pass@4_ci", "samples", "ungraded"}
        assert acc["samples"] == 4 and acc["ungraded"] == 4  # the "?" prompt's 4 samples, counted as incorrect
        for k in (1, 2, 4):
            low, high = acc[f"pass@{k}_ci"]
            assert low <= acc[f"pass@{k}"] <= high
        assert acc["pass@1"] <= acc["pass@2"] <= acc["pass@4"]
        mine = [r for r in rows if r["policy"] == policy]
        assert acc["pass@1"] == pytest.approx(sum(r["correct"]["first"] for r in mine) / len(mine))
        counts = [sum(r["correct"]["first"] for r in mine if r["prompt"] == p) for p in dict.fromkeys(r["prompt"] for r in mine)]
        assert acc["pass@4"] == pytest.approx(sum(pass_at_k(4, c, 4) for c in counts) / 16)
        assert [r["sample"] for r in mine[:8]] == [0, 1, 2, 3, 0, 1, 2, 3]
        unread = [r for r in mine if r["label"] == "?"]
        assert len(unread) == 4 and all(r["ungraded"] == ["first"] and not r["correct"]["first"] for r in unread)
    assert summary["accuracy"]["trained"]["first"]["pass@4"] > 0
    out = capsys.readouterr().out
    assert "16 prompts x 4 samples" in out and "trained accuracy by first: pass@1 " in out and ", pass@4 " in out and "ungraded 4" in out
    assert "trained vs start by letters: win rate" in out  # the A/B on per-prompt mean scores
    assert summary["ab"]["trained vs start"]["letters"]["prompts"] == 16

    # Sample 0 of each prompt is what one sample per prompt draws; sample j is the same for every policy.
    main([*argv, "--batch-size", "8", "--max-new-tokens", "4", "--out", str(tmp_path / "k1")])
    one = [json.loads(line) for line in (tmp_path / "k1" / "samples.jsonl").read_text().splitlines()]
    assert [r["response"] for r in one] == [r["response"] for r in rows if r["sample"] == 0]
    assert json.loads((tmp_path / "k1" / "summary.json").read_text())["accuracy"]["start"]["first"]["samples"] == 1


def eval_on_this_rank(argv):
    from rlhand.evaluation.cli import evaluate, parser

    return evaluate(parser().parse_args(argv))


def test_two_ranks_give_the_one_process_result(trained_and_start, tmp_path):
    """Under torchrun (a gloo group here) each rank answers its batches; rank 0's summary and samples
    are the one process's, to the bit: each batch draws from a generator seeded by its index."""
    from tests.distributed import run_ranks

    run, start = trained_and_start
    prompts = letter_prompts(tmp_path / "prompts.jsonl", 40, unreadable=3)
    argv = ["--policy", f"start={start}", "--policy", f"trained={run}", "--scorer", GOLD, "--num-prompts", "40", "--batch-size", "8"]
    argv += ["--prompts", str(prompts), "--label-column", "answer", "--grader", GRADER, "--samples", "2"]  # and a grader's samples
    one = eval_on_this_rank([*argv, "--out", str(tmp_path / "one")])
    ranks = run_ranks(eval_on_this_rank, [*argv, "--out", str(tmp_path / "two")])
    assert ranks[1] is None and ranks[0] == one  # 5 batches: 3 on rank 0, 2 on rank 1
    assert one["accuracy"]["trained"]["first"]["ungraded"] == 6
    assert (tmp_path / "two" / "samples.jsonl").read_text() == (tmp_path / "one" / "samples.jsonl").read_text()
