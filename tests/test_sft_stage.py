"""stage=sft: the loss is on completion tokens only, it learns, resumes exactly, and saves a
policy folder the RL stage loads."""

import json

import pytest
import torch

from rlhand.config.load import ConfigError
from rlhand.data.prompts import PromptError
from rlhand.stages import build_run
from tests.conftest import compose_cfg

SFT = ["stage=sft", "trainer.max_steps=4", "sft.batch_size=8", "sft.num_examples=64", "logging=plain", "trainer.save_final=false"]


def manual_nll(model, prompt_ids, completion_ids):
    """-sum log p(completion token | everything before it) with a plain, padded-free HF forward."""
    ids = torch.tensor([prompt_ids + completion_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    per_token = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -per_token[len(prompt_ids) - 1 :].sum(), -per_token.sum(), len(completion_ids), len(targets)


@pytest.mark.parametrize("loss_on", ["completion", "last", "all"])
def test_the_loss_is_on_the_completion_tokens_only_unless_asked_for_all(tmp_path, loss_on):
    run = build_run(compose_cfg(SFT + [f"sft.loss_on={loss_on}"]), tmp_path)
    stage = run.stage
    batch = stage.inputs.train[:4]
    completion, whole, tokens = 0.0, 0.0, [0, 0]
    with torch.no_grad():
        for example in batch:
            c, w, n_c, n_all = manual_nll(stage.model, example.prompt_ids, example.completion_ids)
            completion, whole = completion + c.item(), whole + w.item()
            tokens = [tokens[0] + n_c, tokens[1] + n_all]
    loss, stats = stage.losses(batch, stage.count(batch))
    if loss_on == "all":  # the whole sequence after its first token is the completion
        assert all(len(e.prompt_ids) == 1 for e in batch) and tokens[0] == tokens[1]
    else:
        assert all(len(e.prompt_ids) > 1 for e in batch) and abs(completion / tokens[0] - whole / tokens[1]) > 1e-3  # the two differ
    assert loss.item() == pytest.approx(completion / tokens[0], rel=1e-5)
    assert stats["tokens"].item() == tokens[0] == stage.count(batch)


def test_sft_learns_and_saves_a_policy_folder_with_its_tokenizer(tmp_path):
    cfg = compose_cfg(["stage=sft", "trainer.max_steps=40", "sft.num_examples=256", "eval.every=20", "eval.num_prompts=32", "logging=plain"])
    history = build_run(cfg, tmp_path).fit()
    assert history[-1]["val/loss"] < history[0]["train/loss"] - 0.3
    assert (tmp_path / "final" / "policy" / "model.safetensors").exists() and (tmp_path / "final" / "policy" / "tokenizer.json").exists()
    meta = json.loads((tmp_path / "best" / "meta.json").read_text())
    assert meta["val/loss"] == pytest.approx(min(r["val/loss"] for r in history if "val/loss" in r))


def test_sft_reads_prompt_completion_files_and_names_a_bad_line(tmp_path):
    good = tmp_path / "demos.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"abc{i}=", "completion": "cab"}) for i in range(16)) + "\n")
    run = build_run(compose_cfg(SFT + [f"sft.path={good}"]), tmp_path / "run")
    assert len(run.stage.inputs.train) == 16
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ab=", "completion": "x"}) + "\n" + json.dumps({"prompt": "ab=", "completion": ""}) + "\n")
    with pytest.raises(PromptError, match=rf"^{bad}: line 2: the completion is missing or empty$"):
        build_run(compose_cfg(SFT + [f"sft.path={bad}"]), tmp_path / "run2")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"question": "ab=", "answer": "x"}) + "\n")
    with pytest.raises(PromptError, match=r"line 1: no column 'prompt'"):
        build_run(compose_cfg(SFT + [f"sft.path={missing}"]), tmp_path / "run3")


def test_a_setting_of_another_stage_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"sft.lr: a setting of stage=sft, given to stage=ppo"):
        compose_cfg(["sft.lr=0.1"])
    with pytest.raises(ConfigError, match=r"rm.center_coef: a setting of stage=reward_model, given to stage=sft"):
        compose_cfg(["stage=sft", "rm.center_coef=0.1"])
    with pytest.raises(ConfigError, match=r"replay: experience replay belongs to stage=ppo"):
        compose_cfg(["stage=sft", "replay=standard"])


def test_chat_messages_render_through_the_template_with_its_special_tokens(tmp_path, monkeypatch):
    from rlhand.data.tokenizer import build_char_tokenizer

    def with_template():
        tok = build_char_tokenizer()
        tok.chat_template = "{% for m in messages %}<bos>{{ m['role'][0] }}:{{ m['content'] }}{% if m['role'] == 'assistant' %}<eos>{% endif %}{% endfor %}{% if add_generation_prompt %}<bos>a:{% endif %}"
        return tok

    monkeypatch.setattr("rlhand.stages.inputs.build_char_tokenizer", with_template)
    demos = tmp_path / "chat.jsonl"
    demos.write_text(json.dumps({"messages": [{"role": "user", "content": "ab="}, {"role": "assistant", "content": "ba"}]}) + "\n")
    example = build_run(compose_cfg(SFT + [f"sft.path={demos}"]), tmp_path / "run").stage.inputs.train[0]
    tok = with_template()
    # <bos> is the template's special token (one id, as apply_chat_template(tokenize=True) gives), not five characters
    assert example.prompt_ids == tok.apply_chat_template([{"role": "user", "content": "ab="}], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert example.prompt_ids.count(tok.bos_token_id) == 2
    assert tok.decode(example.completion_ids, skip_special_tokens=True) == "ba" and example.completion_ids[-1] == tok.eos_token_id
    tok.chat_template = tok.chat_template.replace("<eos>", "")  # a template that never ends a reply with an EOS id
    monkeypatch.setattr("rlhand.stages.inputs.build_char_tokenizer", lambda: tok)
    with pytest.raises(PromptError, match=rf"^{demos}: line 1: an assistant turn does not end with one of the model's EOS ids \[1\]"):
        build_run(compose_cfg(SFT + [f"sft.path={demos}"]), tmp_path / "run2")


def test_a_prompt_longer_than_the_limit_or_the_model_is_one_line(tmp_path):
    demos = tmp_path / "long.jsonl"
    demos.write_text(json.dumps({"prompt": "a" * 40 + "=", "completion": "ab"}) + "\n")
    with pytest.raises(PromptError, match=rf"^{demos}: line 1: prompt has 42 tokens > sft.max_prompt_tokens=16 \(sft.truncation=error\)$"):
        build_run(compose_cfg(SFT + [f"sft.path={demos}", "sft.max_prompt_tokens=16"]), tmp_path / "a")
    with pytest.raises(ConfigError, match=rf"^{demos}: line 1: 45 tokens > model.n_positions=32$"):
        build_run(compose_cfg(SFT + [f"sft.path={demos}", "model.n_positions=32"]), tmp_path / "b")


@pytest.mark.parametrize("stage", ["stage=sft", "stage=reward_model"])
def test_the_supervised_stages_have_a_memory_estimate_that_refuses_what_does_not_fit(tmp_path, stage, capsys):
    settings = SFT[1:] + [stage] + (["rm.num_pairs=64", "rm.batch_size=8"] if stage == "stage=reward_model" else [])
    if stage == "stage=reward_model":
        settings = [o for o in settings if not o.startswith("sft.")]
    run = build_run(compose_cfg(settings), tmp_path / "a")
    assert run.fit_line.startswith("memory estimate: ") and "GiB per device" in run.fit_line
    with pytest.raises(ConfigError, match=r"^memory: the estimate is .* GiB per device, over the 0.1 GiB available"):
        build_run(compose_cfg(settings + ["trainer.device_memory_gb=0.1"]), tmp_path / "b")


def test_a_tokenizer_whose_unknown_token_is_its_eos_still_encodes_completions():
    from rlhand.data.demonstrations import encode_completion
    from rlhand.data.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.unk_token = tok.eos_token  # as some byte-level BPE tokenizers are saved
    assert encode_completion("here", "ab", tok) == tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
