"""What every stage reads the same way before any model loads: the tokenizer and the ids a response
ends at."""

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import ModelSource, TrainConfig
from rlhand.data.tokenizer import build_char_tokenizer, load_tokenizer, stop_token_ids
from rlhand.models.sources import loading


def stage_tokenizer(cfg: TrainConfig) -> PreTrainedTokenizerBase:
    """model=tiny: the built-in character tokenizer; model=hf: model.tokenizer, else model.policy's."""
    if cfg.model.source is ModelSource.tiny:
        return build_char_tokenizer()
    field, source = ("model.tokenizer", cfg.model.tokenizer) if cfg.model.tokenizer else ("model.policy", cfg.model.policy)
    with loading(field, source):
        return load_tokenizer(source, cfg.model.trust_remote_code)


def stage_stop_ids(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The tokenizer's EOS and every EOS id model.policy's generation_config.json lists."""
    return stop_token_ids(tokenizer, cfg.model.policy if cfg.model.source is ModelSource.hf else None)
