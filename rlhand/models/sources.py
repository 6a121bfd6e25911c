"""model=hf paths, checked before anything loads, and loading errors turned into one line.

A local folder must be a transformers model folder (config.json and weights), and every
*.safetensors file in it must be as long as its own header says: a truncated download or copy is
named here, by file, instead of failing deep inside the loader. A name that is not a local path
is a hub id, left to from_pretrained (offline, that fails in `loading`, still one line).
"""

import json
import struct
from contextlib import contextmanager
from pathlib import Path

from rlhand.config.schema import CriticBackbone, CriticInit, ModelConfig, ModelSource
from rlhand.errors import ModelLoadError, UserError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def model_sources(cfg: ModelConfig, need_reward_model: bool) -> dict[str, str]:
    """{config field: path or hub id} of everything model=hf will load."""
    if cfg.source is not ModelSource.hf:
        return {}
    sources = {"model.policy": cfg.policy}
    if cfg.tokenizer:
        sources["model.tokenizer"] = cfg.tokenizer
    if need_reward_model and cfg.reward_model:
        sources["model.reward_model"] = cfg.reward_model
    if cfg.critic_backbone is CriticBackbone.separate:
        if cfg.critic:
            sources["model.critic"] = cfg.critic
        elif cfg.critic_init is CriticInit.reward_model and cfg.reward_model:
            sources["model.reward_model"] = cfg.reward_model
    return sources


def check_model_sources(cfg: ModelConfig, need_reward_model: bool) -> None:
    for field, source in model_sources(cfg, need_reward_model).items():
        check_source(field, source, tokenizer_only=field == "model.tokenizer")
        if field == "model.reward_model":
            check_sequence_classifier(field, source)
    if cfg.source is ModelSource.hf and not cfg.tokenizer and _is_local(cfg.policy) and not has_tokenizer(Path(cfg.policy)):
        raise ModelLoadError(f"model.policy: {cfg.policy} has no tokenizer files; set model.tokenizer to the tokenizer's folder or hub id")


def check_source(field: str, source: str, tokenizer_only: bool = False) -> None:
    path = Path(source).expanduser()
    if not path.exists():
        if _looks_like_a_path(source):
            raise ModelLoadError(f"{field}: {source}: no such folder")
        return  # a hub id
    if not path.is_dir():
        raise ModelLoadError(f"{field}: {source} is a file; give the folder that save_pretrained wrote")
    if tokenizer_only:
        if not has_tokenizer(path):
            raise ModelLoadError(f"{field}: {source} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
        return
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{field}: {source} is not a transformers model folder (no config.json)")
    weights = [f for pattern in WEIGHT_PATTERNS for f in sorted(path.glob(pattern))]
    if not weights:
        raise ModelLoadError(f"{field}: {source} has no weights (model.safetensors or pytorch_model.bin)")
    for index in sorted(path.glob("*.index.json")):
        _check_index(field, index)
    for file in weights:
        if file.suffix == ".safetensors":
            _check_safetensors(field, file)


def check_sequence_classifier(field: str, source: str) -> None:
    """A reward model is a *ForSequenceClassification folder; a causal LM given in its place is
    named as such before it loads (from_pretrained would build a classifier with a new 2-label head)."""
    path = Path(source).expanduser()
    try:
        architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # a hub id, or a config the loader will report
    if architectures and not any("SequenceClassification" in name for name in architectures):
        raise ModelLoadError(
            f"{field}: {source} is a {architectures[0]}, not a sequence classifier: a reward model is a "
            "*ForSequenceClassification folder with num_labels=1"
        )


def _check_safetensors(field: str, file: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes; the
    header's largest end offset fixes the file's length."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{field}: {file} is truncated ({size} bytes: not even a header)")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise ModelLoadError(f"{field}: {file} is truncated ({size} bytes, its header alone needs {8 + header_len})")
        try:
            header = json.loads(handle.read(header_len))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise ModelLoadError(f"{field}: {file} is not a valid safetensors file (unreadable header)") from None
    expected = 8 + header_len + end
    if size != expected:
        raise ModelLoadError(f"{field}: {file} has {size} bytes, its header describes {expected} (truncated or damaged)")


def _check_index(field: str, index: Path) -> None:
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        raise ModelLoadError(f"{field}: {index} is not a valid weight index (no weight_map)") from None
    missing = sorted(shard for shard in shards if not (index.parent / shard).is_file())
    if missing:
        raise ModelLoadError(f"{field}: {index.parent} lacks {len(missing)} weight shard(s) its index lists, e.g. {missing[0]}")


def has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def _looks_like_a_path(source: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ~, deeper) is meant as a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or source.endswith("/") or "\\" in source


@contextmanager
def loading(field: str, source: str):
    """from_pretrained's failures (a hub id unreachable offline, a broken config) as one line."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelLoadError(f"{field}: cannot load {source!r}: {first}") from None
