"""RobertaConfig: the encoder's hyper-parameters, with Hugging Face's field names.

`RobertaConfig(**hf_config_dict)` accepts what `transformers.RobertaConfig` accepts for these fields, and
`to_dict()` / `save_pretrained()` write a `config.json` that `transformers` reads back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
MODEL_PRESETS = ("tiny", "mini", "base", "large")  # RobertaConfig.preset names
# hidden_act name (Hugging Face's names) -> function; the model looks its activation up here.
ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# Keys Hugging Face writes that carry no meaning for this encoder; accepted and dropped silently.
_IGNORED_HF_KEYS = {
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "position_embedding_type",
    "_name_or_path",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "is_decoder",
    "add_cross_attention",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "gradient_checkpointing",
    "finetuning_task",
    "tokenizer_class",
    "sep_token_id",
    "decoder_start_token_id",
    "cls_token_id",
    "mask_token_id",
    "is_encoder_decoder",
}


class ConfigError(ValueError):
    """A configuration value a user has to fix (raised as ValueError). `fields` names the settings the message
    mentions by their field names (`batch_size`), so a front end can show them in its own words (`--batch-size`)."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "num_labels",
)
_FLOAT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "classifier_dropout",
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _int_like(value: object) -> bool:
    """An integer, or a string of one (JSON object keys are strings: {"0": "negative"})."""
    return _is_int(value) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())


@dataclass
class RobertaConfig:
    """Hyper-parameters of a RoBERTa encoder and its heads (Hugging Face field names)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    classifier_dropout: float | None = None
    # Classification heads.
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    # Which class a saved folder holds; written to config.json as "architectures".
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
            if self.id2label is None:
                self.id2label = {v: k for k, v in self.label2id.items()}
        self.validate()

    def _check_types(self) -> None:
        """Raise ConfigError naming the first field whose value has the wrong type (before anything uses it)."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not _is_int(value):
                raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if not _is_number(value):
                raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        for name in ("hidden_act", "problem_type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
        for name, key_ok, value_ok, shape in (
            ("id2label", _int_like, lambda v: isinstance(v, str), "{id: name} with integer ids"),
            ("label2id", lambda k: isinstance(k, str), _int_like, "{name: id} with integer ids"),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{name} must be a mapping {shape}, got {type(value).__name__}: {value!r:.80}"
                )
            bad = next(((k, v) for k, v in value.items() if not key_ok(k) or not value_ok(v)), None)
            if bad is not None:
                raise ConfigError(
                    f"{name} must be a mapping {shape}; the entry {bad[0]!r}: {bad[1]!r} is not"
                )
        if self.architectures is not None and (
            not isinstance(self.architectures, list)
            or not all(isinstance(a, str) for a in self.architectures)
        ):
            raise ConfigError(f"architectures must be a list of class names, got {self.architectures!r:.80}")

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "type_vocab_size",
            "num_labels",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ConfigError(
                f"classifier_dropout must be in [0, 1) or null, got {self.classifier_dropout!r}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; choose one of {tuple(ACTIVATIONS)}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name} ({value}) must be a token id below vocab_size ({self.vocab_size})")
        # RoBERTa's position ids start at pad_token_id + 1, so the table needs pad_token_id + 2 rows for even
        # one real token (514 rows hold 512 tokens with pad_token_id=1).
        if self.max_position_embeddings < self.pad_token_id + 2:
            raise ConfigError(
                f"max_position_embeddings ({self.max_position_embeddings}) must be at least pad_token_id + 2 "
                f"({self.pad_token_id + 2}): RoBERTa positions start at pad_token_id + 1"
            )
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if self.problem_type not in _PROBLEM_TYPES:
            raise ConfigError(f"problem_type must be one of {_PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.id2label is not None and sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError(
                f"id2label keys must be 0..{len(self.id2label) - 1}, got {sorted(self.id2label)}"
            )

    # ---------------------------------------------------------------------------------------------- presets
    @classmethod
    def tiny(cls, **overrides: Any) -> RobertaConfig:
        """A few-MB model for tests and CPU smoke runs (2 layers, width 64)."""
        base = dict(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=256,
            max_position_embeddings=130,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def mini(cls, **overrides: Any) -> RobertaConfig:
        """The quickstart's model (2 layers, width 128, 2 heads, FFN 512; up to 128 tokens), dropout off: the
        preset that learns the most from the bundled sample in a few CPU minutes (docs/pretraining.md)."""
        base = dict(
            vocab_size=2048,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=512,
            max_position_embeddings=130,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def base(cls, **overrides: Any) -> RobertaConfig:
        """roberta-base: 12 layers, width 768, 12 heads, FFN 3072 (125M parameters)."""
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides: Any) -> RobertaConfig:
        """roberta-large: 24 layers, width 1024, 16 heads, FFN 4096 (355M parameters)."""
        base = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RobertaConfig:
        """`tiny`, `mini`, `base` or `large` (MODEL_PRESETS)."""
        if name not in MODEL_PRESETS:
            raise ConfigError(
                f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)} or a config.json"
            )
        return getattr(cls, name)(**overrides)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def max_tokens(self) -> int:
        """The longest input the position table allows, `<s>` and `</s>` included (512 for 514 rows)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def is_regression(self) -> bool:
        return self.problem_type == "regression" or (self.problem_type is None and self.num_labels == 1)

    # -------------------------------------------------------------------------------------------- json i/o
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobertaConfig:
        """Build from a Hugging Face config dict; unknown keys are kept in `extra` and written back."""
        data = dict(data)
        model_type = data.get("model_type", "roberta")
        if model_type not in ("roberta", "xlm-roberta", "camembert"):
            raise ConfigError(f"config has model_type {model_type!r}; expected 'roberta'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in _IGNORED_HF_KEYS}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """A Hugging Face-style config dict (`model_type: roberta`)."""
        out: dict[str, Any] = {"model_type": "roberta"}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ("id2label", "label2id", "architectures", "problem_type") and value is None:
                continue
            if f.name == "id2label":
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        out["position_embedding_type"] = "absolute"
        out.update(self.extra)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> RobertaConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> RobertaConfig:
        directory = Path(directory)
        path = directory / CONFIG_NAME if directory.is_dir() else directory
        return cls.from_json_file(path)
