"""Scoring finetuned models, for any task family (rtoolkit.tasks): one split (`score_split`), test-set predictions
(`write_test_predictions`), and `evaluate_model` (what `rtoolkit evaluate` runs). The finetuning loop
(rtoolkit.train.finetune) scores with the same functions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import CheckpointError, load_state_dict, resolve_model_dir
from rtoolkit.data.glue import LabelSpace, TextDataset
from rtoolkit.runtime.artifacts import HEAD_PREFIXES, folder_task
from rtoolkit.tasks import classification, family, task_family
from rtoolkit.tasks.common import TaskData, run_model
from rtoolkit.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on a CUDA device that supports it, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def load_tokenizer(model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> Tokenizer:
    folder = Path(tokenizer_dir) if tokenizer_dir is not None else resolve_model_dir(model_dir)
    try:
        return Tokenizer.from_pretrained(folder)
    except ValueError as exc:
        if tokenizer_dir is None:
            raise CheckpointError(f"{exc}; pass the tokenizer folder explicitly (--tokenizer)") from None
        raise


# ----------------------------------------------------------------------------------------------- scoring
def score_examples(
    model: torch.nn.Module,
    fam: ModuleType,
    tokenizer: Tokenizer,
    examples: Any,
    data: TaskData,
    *,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Loss and the family's metrics of `model` on one labelled split: {"loss": ..., "accuracy": ..., ...}."""
    loss, predictions = _decode(
        model, fam, tokenizer, examples, data, max_length=max_length, stride=stride, batch_size=batch_size,
        precision=precision, device=device,
    )  # fmt: skip
    return {"loss": loss if loss is not None else float("nan"), **fam.score(predictions, examples, data)}


def predict_examples(
    model: torch.nn.Module,
    fam: ModuleType,
    tokenizer: Tokenizer,
    examples: Any,
    data: TaskData,
    *,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> list:
    """The family's predictions for every example, in order."""
    return _decode(
        model, fam, tokenizer, examples, data, max_length=max_length, stride=stride, batch_size=batch_size,
        precision=precision, device=device,
    )[1]  # fmt: skip


def _decode(
    model: torch.nn.Module,
    fam: ModuleType,
    tokenizer: Tokenizer,
    examples: Any,
    data: TaskData,
    *,
    max_length: int,
    stride: int | None,
    batch_size: int,
    precision: str,
    device: torch.device | str,
) -> tuple[float | None, list]:
    """Encode `examples` the family's way, run `model` over them and decode: (the mean loss, None without labels;
    one prediction per example)."""
    features = fam.encode(tokenizer, examples, max_length=max_length, stride=stride)
    loss, outputs = run_model(
        model, fam, tokenizer, features, batch_size=batch_size, precision=precision, device=device
    )
    return loss, fam.postprocess(outputs, features, examples, data)


def write_test_predictions(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TaskData,
    out_dir: Path,
    *,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    fam: ModuleType = classification,
) -> list[str]:
    """Predict every test split into OUT_DIR (GLUE submission files, test_predictions.tsv, ...)."""
    written = []
    for split, examples in data.tests.items():
        predictions = predict_examples(
            model, fam, tokenizer, examples, data, max_length=max_length, stride=stride, batch_size=batch_size,
            precision=precision, device=device,
        )  # fmt: skip
        path = fam.write_predictions(predictions, examples, data, split, out_dir)
        logger.info("wrote %d predictions to %s", len(predictions), path)
        written.append(str(path))
    return written


# ------------------------------------------------------------------- the classification names, kept for callers
load_classifier = classification.build_model
predictions_from_logits = classification.predictions_from_logits


def score_split(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TextDataset,
    *,
    space: LabelSpace,
    metrics: tuple[str, ...] | list[str],
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Loss and metrics of a classifier on a labelled split (see `score_examples`)."""
    task_data = TaskData(None, {"dev": data}, {}, tuple(metrics), metrics[0], labels=space)
    return score_examples(
        model, classification, tokenizer, data, task_data, max_length=max_length, batch_size=batch_size,
        precision=precision, device=device,
    )  # fmt: skip


def predict(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TextDataset,
    *,
    space: LabelSpace,
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """A classifier's predictions for every row of `data`, in its order: (N,) label ids, or floats (regression)."""
    task_data = TaskData(None, {}, {}, (), "", labels=space)
    return np.asarray(
        predict_examples(
            model,
            classification,
            tokenizer,
            data,
            task_data,
            max_length=max_length,
            batch_size=batch_size,
            precision=precision,
            device=device,
        )  # fmt: skip
    )


# ------------------------------------------------------------------------------------------ evaluate_model
@dataclass
class EvaluationRequest:
    """What `evaluate_model` was asked to score (the families read the fields they need)."""

    model: Path
    task: str | None
    data_dir: Path | None
    split: str
    validation_file: Path | None
    text_column: str
    text_pair_column: str | None
    label_column: str
    data_format: str | None
    max_samples: int | None


def evaluate_model(
    model: str | os.PathLike,
    *,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "dev",
    validation_file: str | os.PathLike | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    data_format: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    stride: int | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    precision: str = "auto",
    device: str | None = None,
) -> dict[str, float]:
    """Metrics of a finetuned model: {"dev/accuracy": ..., "dev/loss": ..., "dev/examples": N} (MNLI:
    dev_matched/..., dev_mismatched/...). The family is the named task's, else the one the folder's head belongs to."""
    if (task is None) == (validation_file is None):
        raise ValueError("give either a GLUE task (with data_dir) or a validation file")
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("max_length", max_length, 4),
        ("max_samples", max_samples, 1),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(precision, dev)
    folder = resolve_model_dir(model)
    fam = task_family(task) if task is not None else family(_head_task(folder))
    prefix = HEAD_PREFIXES[fam.NAME]
    if not any(k.startswith(prefix) for k in load_state_dict(folder)):
        raise CheckpointError(
            f"{folder} has no trained {fam.NAME} head (no {prefix}* weights), so a random one would be scored; "
            f"finetune it first (`rtoolkit finetune --model {folder} ...`) and evaluate that run's best/"
        )
    net = fam.HEAD.from_pretrained(folder).to(dev)
    tok = load_tokenizer(model, tokenizer)
    if tok.vocab_size > net.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tok.vocab_size} ids but {folder} only {net.config.vocab_size} embedding rows; "
            f"they do not belong together"
        )
    request = EvaluationRequest(
        Path(model), task, None if data_dir is None else Path(data_dir), split,
        None if validation_file is None else Path(validation_file), text_column, text_pair_column, label_column,
        data_format, max_samples,
    )  # fmt: skip
    data = fam.evaluation_data(net, request)
    results: dict[str, float] = {}
    for name, examples in data.evals.items():
        scores = score_examples(
            net, fam, tok, examples, data, max_length=min(max_length, net.config.max_tokens), stride=stride,
            batch_size=batch_size, precision=precision, device=dev,
        )  # fmt: skip
        results.update({f"{name}/{k}": v for k, v in scores.items()})
        results[f"{name}/examples"] = len(examples)
    return results


def _head_task(folder: Path) -> str:
    """The family of a folder's head (custom data: no task name says it)."""
    head = folder_task(folder)
    if head in ("fill-mask", "embedding"):
        return "classification"  # the head check above then says what is missing
    return head


__all__ = [
    "EvaluationRequest",
    "evaluate_model",
    "load_classifier",
    "load_tokenizer",
    "predict",
    "predict_examples",
    "predictions_from_logits",
    "resolve_precision",
    "score_examples",
    "score_split",
    "write_test_predictions",
]
