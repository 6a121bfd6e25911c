"""Log-prob consistency, offsets, padding, truncation and scoring on a tiny model."""

import numpy as np
import pytest
import torch

from rlhand.config.schema import AlgoConfig, GenerationConfig
from rlhand.core.sampling import filter_logits
from rlhand.errors import RewardError
from rlhand.models.forward import response_logits, sequence_inputs, sequence_scores, token_logprobs, token_values
from rlhand.reporting.timer import PhaseTimer
from rlhand.rewards import FunctionScorer, ModelScorer
from rlhand.rollout.collect import collect_rollout
from rlhand.rollout.sampler import response_mask_from_eos, sample_responses
from rlhand.stages.ppo.advantages import assign_advantages
from rlhand.stages.ppo.update import ppo_losses
from tests.helpers import prompt_batch, tiny_models

GEN = dict(max_new_tokens=8, top_k=0, top_p=1.0)


def sample(models, tok, ids, mask, temperature=0.7):
    return sample_responses(models.policy, ids, mask, temperature=temperature, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id, **GEN)


def test_sampled_logprobs_match_training_forward():
    models, tok = tiny_models()
    ids, mask = prompt_batch(tok)
    torch.manual_seed(1)
    s = sample(models, tok, ids, mask)
    inputs = sequence_inputs(ids, mask, s.response_ids, s.response_mask)
    recomputed = token_logprobs(response_logits(models.policy, inputs, 0.7), s.response_ids)
    diff = (recomputed - s.logprobs).abs()[s.response_mask.bool()]
    assert diff.max().item() < 1e-5


def test_logprob_offsets_match_a_manual_loop():
    models, tok = tiny_models()
    ids, mask = prompt_batch(tok, ("abcd=",))
    torch.manual_seed(2)
    s = sample(models, tok, ids, mask, temperature=0.7)
    inputs = sequence_inputs(ids, mask, s.response_ids, s.response_mask)
    got = token_logprobs(response_logits(models.policy, inputs, 0.7), s.response_ids)
    full = torch.cat([ids, s.response_ids], dim=1)
    for t in range(int(s.response_mask.sum())):
        prefix = full[:, : ids.shape[1] + t]
        logits = models.policy(input_ids=prefix).logits[0, -1] / 0.7
        expected = torch.log_softmax(logits, -1)[s.response_ids[0, t]]
        assert got[0, t].item() == pytest.approx(expected.item(), abs=1e-5)


def test_temperature_is_applied_to_logprobs():
    logits = torch.tensor([[[2.0, 1.0, 0.0]]])
    assert token_logprobs(logits / 0.7, torch.tensor([[0]])).item() == pytest.approx(-0.260118, abs=1e-6)


def test_left_padding_does_not_change_logprobs_values_or_scores():
    models, tok = tiny_models(need_reward_model=True)
    prompt = tok("hello=")["input_ids"]
    response = torch.tensor([[40, 41, 42, tok.eos_token_id]])
    rmask = torch.ones_like(response)
    outs = []
    for pads in (0, 2):
        ids = torch.tensor([[tok.pad_token_id] * pads + prompt])
        mask = torch.tensor([[0] * pads + [1] * len(prompt)])
        inputs = sequence_inputs(ids, mask, response, rmask)
        outs.append(
            (
                token_logprobs(response_logits(models.policy, inputs, 1.0), response),
                token_values(models.critic.module, inputs),
                sequence_scores(models.reward_model, inputs, torch.tensor([3])),
            )
        )
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)


def test_reward_model_score_ignores_trailing_pads():
    models, tok = tiny_models(need_reward_model=True)
    ids, mask = prompt_batch(tok, ("abc=",))
    scorer = ModelScorer(models.reward_model)
    short = torch.tensor([[40, 41, tok.eos_token_id]])
    padded = torch.tensor([[40, 41, tok.eos_token_id, tok.pad_token_id, tok.pad_token_id]])
    a = scorer(ids, mask, short, torch.ones_like(short), torch.tensor([True]))
    b = scorer(ids, mask, padded, response_mask_from_eos(padded, tok.eos_token_id), torch.tensor([True]))
    assert torch.allclose(a, b, atol=1e-6)


def test_truncation_after_first_eos():
    eos = 1
    ids = torch.tensor([[40, eos, 41, eos, 42], [40, 41, 42, 43, 44]])
    assert response_mask_from_eos(ids, eos).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_sampler_pads_after_eos_and_reports_ended():
    models, tok = tiny_models()
    ids, mask = prompt_batch(tok, ("a=",) * 16)
    torch.manual_seed(0)
    s = sample(models, tok, ids, mask, temperature=3.0)  # hot: EOS shows up in some rows
    for row, m, ended in zip(s.response_ids, s.response_mask, s.ended):
        n = int(m.sum())
        assert bool(ended) == (row[n - 1].item() == tok.eos_token_id)
        assert (row[n:] == tok.pad_token_id).all()
        assert (row[: n - 1] != tok.eos_token_id).all()
    assert (s.logprobs[s.response_mask == 0] == 0).all()


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert torch.isfinite(filter_logits(logits, top_k=0, top_p=0.1)).sum() == 1


def make_rollout(penalty=None, reward_fn=None):
    models, tok = tiny_models()
    ids, mask = prompt_batch(tok, ("abc=", "hello world=", "xy=", "q=") * 2)
    fn = reward_fn or (lambda prompts, responses, **_: [float(len(r)) for r in responses])
    gen = GenerationConfig(max_new_tokens=8, temperature=0.7, missing_eos_penalty=penalty)
    torch.manual_seed(3)
    rollout = collect_rollout(
        models, FunctionScorer(fn, tok), ids, mask, gen, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id, timer=PhaseTimer(torch.device("cpu"))
    )
    return models, tok, rollout


def test_first_minibatch_ratio_is_one_and_kl_starts_at_zero():
    models, _, rollout = make_rollout()
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2)
    rollout, stats = assign_advantages(rollout, algo, kl_coef=0.05)
    assert abs(stats["kl/ref"]) < 1e-5
    _, mb_stats = ppo_losses(models.policy, models.critic, rollout.select(torch.arange(4)), algo, kl_coef=0.05, temperature=0.7)
    assert mb_stats["policy/ratio"].item() == pytest.approx(1.0, abs=1e-5)
    assert mb_stats["policy/clipfrac"].item() == 0
    assert abs(mb_stats["policy/approx_kl"].item()) < 1e-8


def test_ratio_check_has_teeth_when_dropout_is_on():
    models, _, rollout = make_rollout()
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2)
    rollout, _ = assign_advantages(rollout, algo, kl_coef=0.05)
    for module in models.policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    models.policy.train()
    _, mb_stats = ppo_losses(models.policy, models.critic, rollout, algo, kl_coef=0.05, temperature=0.7)
    assert abs(mb_stats["policy/ratio"].item() - 1.0) > 1e-3


def test_function_reward_sees_text_without_eos_and_penalty_applies():
    seen = {}

    def fn(prompts, responses, prompt_ids, response_ids):
        seen.update(prompts=prompts, responses=responses, response_ids=response_ids)
        return [1.0] * len(prompts)

    _, tok, rollout = make_rollout(penalty=0.5, reward_fn=fn)
    assert seen["prompts"][0] == "abc="
    assert all(tok.eos_token_id not in ids for ids in seen["response_ids"])
    expected = torch.where(rollout.ended, 1.0, 0.5)
    assert torch.equal(rollout.scores, expected) and torch.equal(rollout.raw_scores, torch.ones(8))


def test_function_reward_with_wrong_count_fails():
    with pytest.raises(RewardError, match="returned 1 scores for 8"):
        make_rollout(reward_fn=lambda prompts, responses, **_: [0.0])


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda n: [0.0] * (n - 1) + [float("nan")], r"returned nan for sample 7 \(response .*\); scores must be finite"),
        (lambda n: [float("inf")] + [0.0] * (n - 1), r"returned inf for sample 0"),
        (lambda n: ["good"] * n, r"returned 'good' \(str\) for sample 0; scores must be numbers"),
        (lambda n: [1.0] + [None] * (n - 1), r"returned None \(NoneType\) for sample 1"),
        (lambda n: None, r"returned NoneType; it must return a sequence of 8 numbers"),
        (lambda n: "abc", r"returned str; it must return a sequence of 8 numbers"),
        (lambda n: np.zeros((n, 2)), r"returned an array of shape \(8, 2\)"),
    ],
)
def test_function_reward_returning_garbage_is_one_clear_error(bad, message):
    with pytest.raises(RewardError, match=message) as err:
        make_rollout(reward_fn=lambda prompts, responses, **_: bad(len(prompts)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: np.linspace(-1, 1, n, dtype=np.float32),
        lambda n: torch.linspace(-1, 1, n),
        lambda n: [np.float32(0.5)] * n,
        lambda n: tuple(range(n)),
        lambda n: [True, False] * (n // 2),
    ],
)
def test_function_reward_accepts_any_sequence_of_finite_numbers(make):
    _, _, rollout = make_rollout(reward_fn=lambda prompts, responses, **_: make(len(prompts)))
    assert torch.equal(rollout.raw_scores, torch.as_tensor(np.asarray(make(8), dtype=np.float32)))


def test_score_lands_on_last_response_token():
    _, _, rollout = make_rollout()
    rollout, _ = assign_advantages(rollout, AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2), kl_coef=0.0)
    last = rollout.response_mask.sum(dim=1) - 1
    rows = torch.arange(len(rollout))
    assert torch.allclose(rollout.rewards[rows, last], rollout.scores)
    rewards = rollout.rewards.clone()
    rewards[rows, last] = 0
    assert (rewards == 0).all()
