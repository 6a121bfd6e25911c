"""The supervised stages on a chat model with the layouts users bring (tests/chat_model.py): SFT on
multi-turn messages, TRL's prompt-completion lists, ShareGPT and Alpaca; a reward model on TRL's
conversational preference layouts that plain transformers scores like rlhand on a padded batch;
micro-batches that give the same step; and the three stages chained on message-list data."""

import json

import pytest
import torch

from rlhand.config.load import ConfigError
from rlhand.config.stages import StageKind, check_overrides
from rlhand.data.files import DataError
from rlhand.stages import build_run
from tests.chat_model import write_jsonl
from tests.conftest import compose_cfg
from tests.test_data_layouts import VERL_ROWS, write_parquet

CHATS = [
    [{"role": "user", "content": f"Name a letter after {c}."}, {"role": "assistant", "content": chr(ord(c) + 1)}, {"role": "user", "content": "And the one after?"}, {"role": "assistant", "content": chr(ord(c) + 2)}]
    for c in "abcdefghijklmnop"
]


def sft_cfg(chat_model, path, *extra):
    return compose_cfg(["stage=sft", "model=hf", f"model.policy={chat_model}", f"sft.path={path}", "sft.batch_size=4", "trainer.max_steps=2", "logging=plain", "trainer.save_final=false", *extra])


def test_sft_on_multi_turn_messages_trains_every_assistant_turn_with_its_end_of_turn(chat_model, tmp_path):
    from rlhand.config.stages import LossOn
    from rlhand.data.demonstrations import rendered_example

    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat} for chat in CHATS])
    run = build_run(sft_cfg(chat_model, path, "sft.loss_on=assistant"), tmp_path / "run")
    stage, tokenizer = run.stage, run.stage.inputs.tokenizer
    example = stage.inputs.train[0]
    chat = next(c for c in CHATS if rendered_example("x", tokenizer, c, 0, LossOn.assistant, stage_stops(tokenizer)).completion_ids == example.completion_ids)
    trained = [t for t, m in zip(example.completion_ids, example.trained) if m]
    end = "<|im_end|>"
    assert tokenizer.decode(trained) == f"{chat[1]['content']}{end}{chat[3]['content']}{end}"  # both replies, each with its end of turn
    assert tokenizer.decode(example.prompt_ids).endswith("<|im_start|>assistant\n")
    # The loss is the NLL of exactly those tokens
    with torch.no_grad():
        loss, sums = stage.losses([example], stage.count([example]))
        ids = torch.tensor([example.prompt_ids + example.completion_ids])
        logprobs = torch.log_softmax(stage.model(input_ids=ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        mask = torch.tensor([0] * (len(example.prompt_ids) - 1) + example.trained, dtype=torch.bool)
    assert sums["tokens"].item() == len(trained) and loss.item() == pytest.approx(-logprobs[mask].mean().item(), rel=1e-4)
    history = run.fit()
    assert len(history) == 2


def stage_stops(tokenizer):
    return tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))


def test_sft_reads_trl_prompt_completion_lists_sharegpt_and_alpaca(chat_model, tmp_path):
    trl = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": c[:1], "completion": c[1:2]} for c in CHATS[:4]])
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": c[0]["content"]}, {"from": "gpt", "value": c[1]["content"]}]} for c in CHATS[:4]])
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": c[0]["content"], "input": "", "output": c[1]["content"]} for c in CHATS[:4]]))
    examples = {name: build_run(sft_cfg(chat_model, path, "trainer.max_steps=1"), tmp_path / name).stage.inputs.train for name, path in (("trl", trl), ("sharegpt", sharegpt))}
    assert examples["trl"] == [e._replace(where=t.where) for e, t in zip(examples["sharegpt"], examples["trl"])]  # the same conversation, the same ids
    text = build_run(sft_cfg(chat_model, alpaca, "trainer.max_steps=1"), tmp_path / "alpaca").stage
    chat = build_run(sft_cfg(chat_model, alpaca, "trainer.max_steps=1", "task.chat_template=on"), tmp_path / "alpaca_chat").stage
    tokenizer = text.inputs.tokenizer
    assert tokenizer.decode(text.inputs.train[0].prompt_ids) == CHATS[0][0]["content"]  # auto: text is text
    assert chat.inputs.train[0] == examples["trl"][0]._replace(where=chat.inputs.train[0].where)  # on: rendered as the conversation


def test_a_completion_ending_in_the_eos_text_is_not_given_a_second_eos_and_csv_numbers_are_text(chat_model, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2=", "completion": "4<|im_end|>"}])
    (example,) = build_run(sft_cfg(chat_model, path, "sft.batch_size=1", "eval.every=0"), tmp_path / "a").stage.inputs.train
    tokenizer_end = example.completion_ids[-1]
    assert example.completion_ids.count(tokenizer_end) == 1 and len(example.completion_ids) == 2  # "4" and one EOS token
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,completion\n2+2=,4\n3+3=,6\n")
    examples = build_run(sft_cfg(chat_model, csv, "sft.batch_size=1"), tmp_path / "b").stage.inputs.train
    assert len(examples) == 2


def test_over_long_examples_are_cut_or_dropped_as_asked(chat_model, tmp_path, capsys):
    rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "a much longer prompt " * 10, "completion": "ok"}, {"prompt": "short", "completion": "ok"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=rf"^{path}: line 2: prompt has \d+ tokens > sft.max_prompt_tokens=20 \(sft.truncation=error\)$"):
        build_run(sft_cfg(chat_model, path, "sft.max_prompt_tokens=20", "sft.batch_size=1"), tmp_path / "a")
    dropped = build_run(sft_cfg(chat_model, path, "sft.max_prompt_tokens=20", "sft.truncation=drop", "sft.batch_size=1"), tmp_path / "b").stage
    assert len(dropped.inputs.train) == 2 and dropped.inputs.dropped == 1
    assert "1 examples over sft.max_prompt_tokens / max_completion_tokens left out (sft.truncation=drop)" in capsys.readouterr().err
    cut = build_run(sft_cfg(chat_model, path, "sft.max_prompt_tokens=20", "sft.truncation=truncate", "sft.batch_size=1"), tmp_path / "c").stage
    assert len(cut.inputs.train[1].prompt_ids) == 20


def test_a_supervised_val_path_is_read_whole(chat_model, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"messages": c} for c in CHATS])
    val = write_jsonl(tmp_path / "val.jsonl", [{"messages": c} for c in CHATS * 5])  # 80 > eval.num_prompts=64
    stage = build_run(sft_cfg(chat_model, path, f"sft.val_path={val}", "eval.every=1"), tmp_path / "run").stage
    assert len(stage.inputs.val) == 80


PAIRS = [
    {"prompt": c[:1], "chosen": [{"role": "assistant", "content": c[1]["content"]}], "rejected": [{"role": "assistant", "content": "no idea, " + c[1]["content"] * 3}]} for c in CHATS
]


def rm_cfg(chat_model, path, *extra):
    return compose_cfg(["stage=reward_model", "model=hf", f"model.policy={chat_model}", f"rm.path={path}", "rm.batch_size=4", "trainer.max_steps=3", "logging=plain", *extra])


def test_a_reward_model_on_trl_conversational_pairs_is_read_by_plain_transformers_as_rlhand_reads_it(chat_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    run = build_run(rm_cfg(chat_model, path, "rm.lr=1e-3"), tmp_path / "run")
    run.fit()
    stage = run.stage
    pairs = stage.inputs.train[:6]
    with torch.no_grad():
        chosen, rejected = stage.scores(pairs)
    ours = torch.cat([chosen, rejected])
    folder = tmp_path / "run" / "final" / "reward_model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id != end and model.config.pad_token_id == tokenizer.pad_token_id  # the pad is no longer the EOS it reads at
    sequences = [p + c for p, c in [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]]
    assert all(seq[-1] == end for seq in sequences)  # each side is read at its end of turn
    batch = tokenizer.pad({"input_ids": sequences}, return_tensors="pt")  # a padded batch, as anyone would build it
    with torch.no_grad():
        theirs = model(**batch).logits[:, 0]
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs, ours)
    # Had the pad stayed the EOS, transformers would read the token before it: another score
    with torch.no_grad():
        model.config.pad_token_id = end
        shifted = model(input_ids=torch.where(batch["attention_mask"].bool(), batch["input_ids"], end)).logits[:, 0]
    assert (shifted - ours).abs().max() > 1e-3


def test_the_implicit_prompt_layout_reads_the_prompt_inside_each_side_and_refuses_different_prompts(chat_model, tmp_path):
    implicit = write_jsonl(tmp_path / "implicit.jsonl", [{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]} for p in PAIRS[:4]])
    explicit = write_jsonl(tmp_path / "explicit.jsonl", PAIRS[:4])
    got = [build_run(rm_cfg(chat_model, path, "trainer.max_steps=1"), tmp_path / name).stage.inputs.train for name, path in (("i", implicit), ("e", explicit))]
    assert [(p.chosen, p.rejected) for p in got[0]] == [(p.chosen, p.rejected) for p in got[1]]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"chosen": PAIRS[0]["prompt"] + PAIRS[0]["chosen"], "rejected": PAIRS[1]["prompt"] + PAIRS[0]["rejected"]}])
    with pytest.raises(DataError, match=rf"^{bad}: line 1: chosen and rejected have different prompts"):
        build_run(rm_cfg(chat_model, bad), tmp_path / "bad")


def test_whole_texts_are_trained_with_the_special_tokens_they_are_scored_with(tmp_path):
    from rlhand.data.tokenizer import build_char_tokenizer

    path = write_jsonl(tmp_path / "whole.jsonl", [{"chosen": "ab=ba", "rejected": "ab=zz"}] * 8)
    stage = build_run(compose_cfg(["stage=reward_model", f"rm.path={path}", "rm.prompt_column=null", "rm.batch_size=4", "logging=plain"]), tmp_path / "run").stage
    tok = build_char_tokenizer()
    prompt, completion = stage.inputs.train[0].chosen
    assert prompt == [tok.bos_token_id] and prompt + completion == tok("ab=ba")["input_ids"] + [tok.eos_token_id]


@pytest.mark.parametrize("stage", ["sft", "reward_model"])
def test_micro_batches_give_the_same_step(tmp_path, stage):
    base = ["stage=sft", "sft.batch_size=8", "sft.num_examples=64"] if stage == "sft" else ["stage=reward_model", "rm.batch_size=8", "rm.num_pairs=64"]
    section = "sft" if stage == "sft" else "rm"
    weights = {}
    for name, extra in (("whole", []), ("count", [f"{section}.micro_batch_size=3"]), ("tokens", [f"{section}.micro_batch_tokens=60"])):
        run = build_run(compose_cfg(base + ["trainer.max_steps=2", "logging=plain", "trainer.save_final=false", *extra]), tmp_path / name)
        if name == "tokens":
            parts = run.stage.micro_batches(run.stage.inputs.train[:8])
            assert len(parts) > 2 and all(run.stage.padded_tokens(p) <= 60 or len(p) == 1 for p in parts)
        history = run.fit()
        weights[name] = (torch.cat([p.detach().flatten() for p in run.stage.model.parameters()]), history[-1]["train/loss"])
    for name in ("count", "tokens"):
        assert torch.allclose(weights[name][0], weights["whole"][0], rtol=1e-4, atol=1e-6), name
        assert weights[name][1] == pytest.approx(weights["whole"][1], rel=1e-5)


def test_rl_settings_under_a_supervised_stage_are_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"^algo.lr: stage=sft does not read it \(its learning rate is sft.lr\)$"):
        check_overrides(StageKind.sft, ["stage=sft", "algo.lr=1e-9"])
    with pytest.raises(ValueError, match=r"^algo.grad_accum_steps: stage=reward_model does not read it \(rm.micro_batch_size"):
        check_overrides(StageKind.reward_model, ["+algo.grad_accum_steps=4"])
    with pytest.raises(ValueError, match=r"^generation.max_new_tokens: stage=sft does not read it"):
        check_overrides(StageKind.sft, ["generation.max_new_tokens=4"])
    with pytest.raises(ValueError, match=r"^estimator: stage=sft does not read it"):
        check_overrides(StageKind.sft, ["estimator=grpo"])
    check_overrides(StageKind.sft, ["algo.max_grad_norm=0.5", "task.chat_template=on", "algo=ppo_v1", "sft.lr=1e-4"])  # what it reads
    check_overrides(StageKind.ppo, ["algo.lr=1e-4"])
    with pytest.raises(ConfigError, match=r"sft.lr: a setting of stage=sft, given to stage=ppo"):  # the other direction
        compose_cfg(["sft.lr=0.1"])


def test_learning_rates_default_by_the_model_s_source(chat_model, tmp_path):
    def lr(*overrides):
        return build_run(compose_cfg(list(overrides) + ["logging=plain"]), tmp_path / str(len(list(tmp_path.iterdir())))).stage.learners.all()[0].optimizer.param_groups[0]["lr"]

    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": c} for c in CHATS])
    pairs = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    assert lr("stage=sft") == 1e-3 and lr("stage=reward_model") == 1e-3
    assert lr("stage=sft", "model=hf", f"model.policy={chat_model}", f"sft.path={path}") == 2e-5
    assert lr("stage=reward_model", "model=hf", f"model.policy={chat_model}", f"rm.path={pairs}") == 1e-4
    assert lr("stage=sft", "sft.lr=3e-4") == 3e-4


def test_the_three_stages_chain_on_a_chat_model_with_message_list_data(chat_model, tmp_path):
    """The README's recipe: SFT on messages -> a reward model on TRL's conversational pairs -> PPO on a
    verl parquet against it, every stage reading the same rendering of a conversation."""
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"messages": c[:2]} for c in CHATS])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    prompts = write_parquet(tmp_path / "prompts.parquet", VERL_ROWS * 2)
    common = ["logging=plain", "trainer.max_steps=2", "model=hf"]
    sft = build_run(compose_cfg(common + ["stage=sft", f"model.policy={chat_model}", f"sft.path={demos}", "sft.batch_size=4"]), tmp_path / "sft")
    sft.fit()
    policy = tmp_path / "sft" / "final" / "policy"
    assert (policy / "generation_config.json").exists()  # its two EOS ids travel with it
    build_run(compose_cfg(common + ["stage=reward_model", f"model.policy={policy}", f"rm.path={pairs}", "rm.batch_size=4"]), tmp_path / "rm").fit()
    rm = tmp_path / "rm" / "final" / "reward_model"
    ppo = build_run(
        compose_cfg(common + [f"model.policy={policy}", "reward=model", f"model.reward_model={rm}", "task=file", f"task.path={prompts}", "task.max_prompt_tokens=128",
                              "algo.rollout_batch_size=8", "algo.num_minibatches=2", "generation.max_new_tokens=6"]),  # fmt: skip
        tmp_path / "ppo",
    )
    from rlhand.rewards.model import ModelScorer

    assert isinstance(ppo.stage.normalizer.inner, ModelScorer)  # the reward model's tokenizer is the policy's but for its own pad: ids go straight through
    history = ppo.fit()
    assert len(history) == 2
