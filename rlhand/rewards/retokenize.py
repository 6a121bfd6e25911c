"""A reward model with a tokenizer of its own: its scores are of the *text*, so the policy's ids are
decoded, rendered with the reward model's chat template when it has one (reward.chat_template: a
conversation prompt as its turns then the response as the assistant's, a text prompt as one user turn),
tokenized again with its tokenizer (EOS appended without a template, as stage=reward_model trains),
and scored at the last token, in batches. When the two tokenizers are the same (same vocabulary,
same pipeline, same special tokens) the ids go straight through (rlhand/rewards/model.py)."""

import json
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhand.config.load import ConfigError
from rlhand.config.schema import ChatTemplate, ModelSource, RewardKind, TrainConfig
from rlhand.core.kl import last_valid_index
from rlhand.data.sampler import left_pad, right_pad
from rlhand.data.tokenizer import PAD_FALLBACK, load_tokenizer
from rlhand.errors import RewardError
from rlhand.models.forward import sequence_inputs, sequence_scores
from rlhand.models.scoring import rows_per_part
from rlhand.models.sources import has_tokenizer, loading
from rlhand.rewards.function import decode_texts


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether the same text gives the same ids under both: the vocabularies, the special tokens and
    (fast tokenizers) the whole pipeline — normaliser, pre-tokeniser, model, post-processor. Which
    token pads does not count (a padded position is masked), nor the pad token stage=reward_model adds
    to a tokenizer whose pad was its EOS (data/tokenizer.distinct_pad): a policy's ids never hold it."""
    roles = {t for tok in (a, b) for t in (tok.eos_token, tok.bos_token, tok.unk_token)}
    pads = {a.pad_token, b.pad_token, PAD_FALLBACK} - roles
    (vocab_a, specials_a), (vocab_b, specials_b) = _meaning(a, pads), _meaning(b, pads)
    if vocab_a != vocab_b or specials_a != specials_b:
        return False
    if a.is_fast and b.is_fast:
        return _pipeline(a) == _pipeline(b)
    return type(a) is type(b)


def _meaning(tokenizer, pads: set) -> tuple[dict, set]:
    vocab = {token: i for token, i in tokenizer.get_vocab().items() if token != PAD_FALLBACK}
    return vocab, set(tokenizer.all_special_tokens) - pads


def _pipeline(tokenizer) -> dict:
    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    pipeline["added_tokens"] = [t for t in pipeline.get("added_tokens") or [] if t.get("content") != PAD_FALLBACK]
    pipeline.pop("padding", None)
    pipeline.pop("truncation", None)
    return pipeline


class RetokenizingScorer:
    def __init__(
        self,
        reward_model: PreTrainedModel,
        policy_tokenizer: PreTrainedTokenizerBase,
        reward_tokenizer: PreTrainedTokenizerBase,
        chat_template: bool,
        max_tokens: int | None = None,
    ):
        self.reward_model, self.policy_tokenizer, self.reward_tokenizer = reward_model, policy_tokenizer, reward_tokenizer
        self.chat_template, self.max_tokens = chat_template, max_tokens

    def texts(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> list[str]:
        prompts, responses, _, _ = decode_texts(self.policy_tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, ended, rows)
        if not self.chat_template:
            return [p + r for p, r in zip(prompts, responses)]
        turns = [_turns(row) for row in rows] if rows is not None else [None] * len(prompts)
        return [render(self.reward_tokenizer, p, r, t) for p, r, t in zip(prompts, responses, turns)]

    def ids(self, texts: list[str]) -> list[list[int]]:
        tok = self.reward_tokenizer
        if self.chat_template:
            return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        return [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]

    @torch.no_grad()
    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        sequences = self.ids(self.texts(prompt_ids, prompt_mask, response_ids, response_mask, ended, rows))
        device, pad = response_ids.device, self.reward_tokenizer.pad_token_id
        # The first token stands as the "prompt", the rest is scored at its last token.
        heads, _ = left_pad([s[:1] for s in sequences], pad)
        tails, tail_mask = right_pad([s[1:] or [pad] for s in sequences], pad)
        tail_mask[:, 0] = 1  # a one-token text: its score is read at that token
        inputs = sequence_inputs(heads.to(device), torch.ones_like(heads).to(device), tails.to(device), tail_mask.to(device))
        last = last_valid_index(tail_mask.to(device))
        step = rows_per_part(len(last), inputs.input_ids.shape[1], self.max_tokens)
        return torch.cat([sequence_scores(self.reward_model, inputs.rows(slice(i, i + step)), last[i : i + step]) for i in range(0, len(last), step)])


def reward_model_tokenizer(cfg: TrainConfig, policy_tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase | None:
    """The reward model's own tokenizer when its folder has one that is not the policy's (then texts
    are tokenized again for it); None: the policy's ids go straight through."""
    folder = cfg.model.reward_model
    if cfg.reward.kind is not RewardKind.model or cfg.model.source is not ModelSource.hf or not folder:
        return None
    if Path(folder).is_dir() and not has_tokenizer(Path(folder)):
        return None  # a folder without tokenizer files: it was saved for the policy's (rlhand writes one)
    with loading("model.reward_model", folder):
        own = load_tokenizer(folder, cfg.model.trust_remote_code)
    if same_tokenizer(own, policy_tokenizer):
        return None
    uses_chat_template(cfg, own)  # ChatTemplate.on without a template: an error now
    return own


def _turns(row) -> list[dict] | None:
    """A prompt's own turns for the reward model's template: a conversation's, or a text rendered as
    one user turn (task.chat_template=on) as that turn; None: the decoded text as one user turn."""
    if row is None:
        return None
    if row.is_conversation:
        return row.messages
    return [{"role": "user", "content": row.text}] if row.rendered and row.text is not None else None


def uses_chat_template(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if cfg.reward.chat_template is ChatTemplate.on and not has:
        raise ConfigError(f"reward.chat_template: on, but {cfg.model.reward_model}'s tokenizer has no chat template")
    return has and cfg.reward.chat_template is not ChatTemplate.off


def render(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, turns: list[dict] | None = None) -> str:
    """The exchange as the reward model's template writes it: the prompt's own turns (a conversation)
    or the prompt as one user turn, then the response as the assistant's."""
    head = turns if turns is not None else [{"role": "user", "content": prompt}]
    try:
        return tokenizer.apply_chat_template(head + [{"role": "assistant", "content": response}], tokenize=False)
    except Exception as err:  # jinja raises many types; each means the template cannot render this
        raise RewardError(f"reward.chat_template: the reward model's chat template fails to render: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
