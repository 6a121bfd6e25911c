"""RL on a chat model with the data layouts users bring (tests/chat_model.py: Qwen2.5's ChatML, pad
= EOS, two EOS ids): a verl parquet trains; the reward function receives the template-rendered prompt
ids ending in the generation prompt, the conversation, every column and `labels`; a reward server
receives `labels`; groups repeat a prompt's columns; replay keeps each sample's prompt row; a
response ends at either EOS id."""

import json
from types import SimpleNamespace

import pytest
import torch

from rlhand.rewards.serve import make_server
from rlhand.rollout.sampler import CACHE_KEY, response_mask_from_eos, sample_responses
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg
from tests.test_data_layouts import VERL_ROWS, write_parquet
from tests.test_remote_reward import serving

CALLS: list[dict] = []


def spy_reward(prompts, responses, **kwargs):
    """Records what it was called with; scores the response's length (something to learn)."""
    CALLS.append({"prompts": prompts, "responses": responses, **kwargs})
    return [len(r) / 10 for r in responses]


def chat_run(chat_model, tmp_path, *extra, rows=VERL_ROWS, reward=("reward.function._target_=tests.test_chat_rl.spy_reward",)):
    data = write_parquet(tmp_path / "train.parquet", rows * 2)
    overrides = FAST + [
        "model=hf",
        f"model.policy={chat_model}",
        "task=file",
        f"task.path={data}",
        "task.max_prompt_tokens=128",
        "task.label_column=reward_model.ground_truth",
        *reward,
        "trainer.save_final=false",
        *extra,
    ]
    return build_run(compose_cfg(overrides), tmp_path / "run")


def test_a_verl_parquet_trains_and_the_reward_function_gets_the_rendered_prompt_every_column_and_labels(chat_model, tmp_path):
    CALLS.clear()
    run = chat_run(chat_model, tmp_path)
    tokenizer = run.stage.inputs.tokenizer
    history = run.fit()
    assert len(history) == 2 and all(row["reward/mean"] == row["reward/mean"] for row in history)
    call = CALLS[0]
    generation_prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for ids, messages, text in zip(call["prompt_ids"], call["messages"], call["prompts"]):
        assert ids == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids[-len(generation_prompt) :] == generation_prompt
        assert text == tokenizer.decode(ids) and text.startswith("<|im_start|>system\n")  # the rendering, control tokens kept
    by_question = {row["prompt"][0]["content"]: row for row in VERL_ROWS}
    for i, messages in enumerate(call["messages"]):
        row = by_question[messages[0]["content"]]
        assert call["labels"][i] == row["reward_model"]["ground_truth"]
        assert (call["data_source"][i], call["ability"][i], call["reward_model"][i], call["extra_info"][i]) == (row["data_source"], row["ability"], row["reward_model"], row["extra_info"])
    assert "prompt" not in call  # the prompt column is the prompts themselves
    stops = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert set(run.stage.inputs.stop_ids) == stops  # generation_config's two EOS ids


def test_group_sampling_repeats_a_prompt_s_columns_and_label_for_each_response(chat_model, tmp_path):
    CALLS.clear()
    run = chat_run(chat_model, tmp_path, "estimator=grpo", "trainer.max_steps=1")
    run.fit()
    call = CALLS[0]
    group = run.cfg.generation.samples_per_prompt
    assert group > 1 and len(call["labels"]) == run.cfg.algo.rollout_batch_size
    for start in range(0, len(call["labels"]), group):
        assert len({json.dumps(call["extra_info"][i]) for i in range(start, start + group)}) == 1
        assert len({call["labels"][i] for i in range(start, start + group)}) == 1
        assert len({tuple(call["prompt_ids"][i]) for i in range(start, start + group)}) == 1


def test_a_reward_server_receives_the_labels(chat_model, tmp_path):
    bodies = []

    def score(queries, prompts, labels=None):
        bodies.append({"query": queries, "prompts": prompts, "labels": labels})
        return [0.0] * len(queries)

    server = make_server(score)
    try:
        url = serving(server)
        run = chat_run(chat_model, tmp_path, "trainer.max_steps=1", reward=("reward=remote", f"reward.url={url}"))
        run.fit()
    finally:
        server.shutdown()
    ground_truths = {row["reward_model"]["ground_truth"] for row in VERL_ROWS}
    labels = [label for body in bodies for label in body["labels"]]
    assert labels and set(labels) <= ground_truths
    assert all(q.startswith(p) and p.endswith("<|im_start|>assistant\n") for body in bodies for q, p in zip(body["query"], body["prompts"]))


def test_replay_keeps_each_sample_s_prompt_row(chat_model, tmp_path):
    from rlhand.replay.buffer import ReplayBuffer

    run = chat_run(chat_model, tmp_path, "replay=standard", "replay.min_size=8", "replay.sample_size=8", "replay.buffer_size=64")
    stage = run.stage
    rollout = stage.collector.collect()
    for row, ids, mask in zip(rollout.source_row.tolist(), rollout.prompt_ids, rollout.prompt_mask):
        assert ids[mask.bool()].tolist() == stage.inputs.prompt_ids[row]  # the row is the prompt this sample answered
    buffer: ReplayBuffer = stage.replay.buffer
    buffer.add(rollout.replace(advantages=torch.zeros_like(rollout.values)), step=1, priorities=torch.ones(len(rollout)))
    back = buffer.rollout(buffer.draw(4, step=1).indices, torch.device("cpu"), stage.inputs.tokenizer.pad_token_id)
    for row, ids, mask in zip(back.source_row.tolist(), back.prompt_ids, back.prompt_mask):
        assert ids[mask.bool()].tolist() == stage.inputs.prompt_ids[row]


def test_validation_prompts_bring_their_labels_to_the_scorers(chat_model, tmp_path):
    CALLS.clear()
    val = write_parquet(tmp_path / "val.parquet", VERL_ROWS[:4])
    run = chat_run(chat_model, tmp_path, "trainer.max_steps=1", "eval.every=1", "eval.num_prompts=4", f"task.val_path={val}", "+eval.scorers.spy._target_=tests.test_chat_rl.spy_reward")
    run.fit()
    validation = [c for c in CALLS if len(c["labels"]) == 4]
    assert validation and all(c["labels"] == [r["reward_model"]["ground_truth"] for r in VERL_ROWS[:4]] for c in validation)


class Scripted(torch.nn.Module):
    """A stand-in policy that writes each row's script of token ids, one per step (then pads with 9)."""

    def __init__(self, scripts, vocab=16):
        super().__init__()
        self.scripts, self.vocab, self.step = scripts, vocab, 0

    def forward(self, input_ids, **_):
        rows = input_ids.shape[0]
        logits = torch.full((rows, 1, self.vocab), -1e4)
        for row, script in enumerate(self.scripts):
            logits[row, 0, script[self.step] if self.step < len(script) else 9] = 0.0
        self.step += 1
        return SimpleNamespace(logits=logits, **{CACHE_KEY: None})


def test_a_response_ends_at_any_of_the_eos_ids():
    policy = Scripted([[3, 4, 7, 3], [5, 3, 3, 3], [3, 3, 3, 3]])
    ids, mask = torch.ones(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.long)
    out = sample_responses(policy, ids, mask, max_new_tokens=4, temperature=1.0, top_k=0, top_p=1.0, eos_ids=(5, 7), pad_id=0)
    assert out.ended.tolist() == [True, True, False]
    assert out.response_mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert response_mask_from_eos(torch.tensor([[3, 7, 5, 3]]), (5, 7)).tolist() == [[1, 1, 0, 0]]


@pytest.mark.parametrize("where", ["rlhand-eval"])
def test_rlhand_eval_renders_conversations_and_gives_scorers_the_labels(chat_model, tmp_path, where):
    from rlhand.evaluation.cli import main

    CALLS.clear()
    data = write_parquet(tmp_path / "eval.parquet", VERL_ROWS[:4])
    main(["--policy", f"a={chat_model}", "--prompts", str(data), "--label-column", "reward_model.ground_truth", "--scorer", "spy=tests.test_chat_rl.spy_reward",
          "--num-prompts", "4", "--max-new-tokens", "4", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert CALLS[0]["labels"] == [r["reward_model"]["ground_truth"] for r in VERL_ROWS[:4]]
    assert all(text.endswith("<|im_start|>assistant\n") for text in CALLS[0]["prompts"])
    first = json.loads((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == VERL_ROWS[0]["prompt"]


def old_style_reward(prompts, responses, prompt_ids, response_ids):
    """A reward function written before columns reached rewards: no **kwargs."""
    return [0.0] * len(prompts)


def test_a_reward_function_without_kwargs_gets_what_it_names(chat_model, tmp_path):
    run = chat_run(chat_model, tmp_path, "trainer.max_steps=1", reward=("reward.function._target_=tests.test_chat_rl.old_style_reward",))
    assert len(run.fit()) == 1


def test_text_under_chat_template_on_reaches_text_scorers_as_its_rendering(chat_model, tmp_path):
    CALLS.clear()
    rows = [{"prompt": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(8)]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = FAST + ["model=hf", f"model.policy={chat_model}", "task=file", f"task.path={data}", "task.max_prompt_tokens=128", "task.label_column=answer",
                        "task.chat_template=on", "reward.function._target_=tests.test_chat_rl.spy_reward", "trainer.max_steps=1", "trainer.save_final=false"]  # fmt: skip
    build_run(compose_cfg(overrides), tmp_path / "run").fit()
    assert all(text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n") for text in CALLS[0]["prompts"])
    assert "messages" not in CALLS[0]  # text prompts: no message lists to pass
