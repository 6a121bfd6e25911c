"""What every stage reads the same way before any model loads: the tokenizer."""

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import ModelSource, TrainConfig
from rlhand.data.tokenizer import build_char_tokenizer, load_tokenizer
from rlhand.models.sources import loading


def stage_tokenizer(cfg: TrainConfig) -> PreTrainedTokenizerBase:
    """model=tiny: the built-in character tokenizer; model=hf: model.tokenizer, else model.policy's."""
    if cfg.model.source is ModelSource.tiny:
        return build_char_tokenizer()
    field, source = ("model.tokenizer", cfg.model.tokenizer) if cfg.model.tokenizer else ("model.policy", cfg.model.policy)
    with loading(field, source):
        return load_tokenizer(source, cfg.model.trust_remote_code)
