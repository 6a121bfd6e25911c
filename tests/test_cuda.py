"""On a CUDA GPU (skipped without one; scripts/gpu_check.sh runs them): the sampler, a training run in
bf16, LoRA and the memory figures on the device."""

import pytest
import torch

from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs
from rlhand.rollout.sampler import sample_responses
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg
from tests.helpers import prompt_batch, tiny_models

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_sampled_logprobs_match_the_training_forward_on_the_gpu():
    models, tok = tiny_models()
    models.policy.to(CUDA)
    ids, mask = (t.to(CUDA) for t in prompt_batch(tok))
    torch.manual_seed(1)
    samples = sample_responses(models.policy, ids, mask, max_new_tokens=24, temperature=0.7, top_k=0, top_p=1.0,
                               eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id)
    inputs = sequence_inputs(ids, mask, samples.response_ids, samples.response_mask)
    with torch.no_grad():
        again = token_logprobs(response_logits(models.policy, inputs, 0.7), samples.response_ids)
    real = samples.response_mask.bool()
    assert (again - samples.logprobs)[real].abs().max().item() < 1e-4
    assert samples.response_ids.device.type == "cuda"


@pytest.mark.parametrize("extra", [[], ["model.lora.enabled=true"], ["model.critic_backbone=shared", "model.gradient_checkpointing=true"]])
def test_a_bf16_run_on_the_gpu(tmp_path, extra):
    history = build_run(compose_cfg(FAST + ["trainer.device=cuda", "trainer.autocast=bfloat16", "model.frozen_dtype=bfloat16", *extra]), tmp_path).fit()
    first = history[0]
    assert first["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-2)  # bf16 log-probs
    assert first["memory/cuda_peak_mb"] > 0 and all(torch.isfinite(torch.tensor(r["loss/total"])) for r in history)
