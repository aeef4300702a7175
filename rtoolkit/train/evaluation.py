"""Finetuned classifiers: loading one (with a new or kept head), scoring it on a labelled split, predicting with it,
and `evaluate_model` (what `rtoolkit evaluate` runs). The finetuning loop (rtoolkit.train.finetune) scores with the
same functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rtoolkit.checkpoint import CheckpointError, load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import sorted_batches
from rtoolkit.data.glue import (
    DataError,
    GlueTask,
    LabelSpace,
    TaskData,
    TextDataset,
    custom_metrics,
    encode_rows,
    first_rows,
    get_task,
    read_glue,
    read_rows,
    write_glue_submission,
    write_predictions,
)
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train.loop import autocast, evaluate
from rtoolkit.train.metrics import compute_metrics

logger = logging.getLogger(__name__)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on a CUDA device that supports it, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def load_classifier(
    model_dir: str | os.PathLike,
    space: LabelSpace,
    *,
    dropout: float | None = None,
    classifier_dropout: float | None = None,
) -> RobertaForSequenceClassification:
    """A sequence classifier for `space` on the encoder in `model_dir`; `dropout` replaces the encoder's dropout,
    `classifier_dropout` the head's (None: the folder's setting, else the encoder's dropout).

    The classifier head is kept when the folder has one of the same shape (continued finetuning) and freshly
    initialised otherwise (a pretrained encoder, or a head trained for another label set).
    """
    folder = resolve_model_dir(model_dir)
    base = RobertaConfig.from_pretrained(folder)
    data = base.to_dict()
    for key in ("id2label", "label2id", "architectures"):
        data.pop(key, None)
    data.update(
        num_labels=space.num_labels,
        problem_type="regression" if space.is_regression else "single_label_classification",
    )
    if space.id2label is not None:
        data["id2label"] = space.id2label
    if dropout is not None:
        data.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if classifier_dropout is not None:
        data["classifier_dropout"] = classifier_dropout
    config = RobertaConfig.from_dict(data)
    model = RobertaForSequenceClassification(config)
    state = load_state_dict(folder)
    own = model.state_dict()
    stale = [
        k for k, v in state.items() if k.startswith("classifier.") and k in own and own[k].shape != v.shape
    ]
    if stale:
        logger.info("%s: classifier head has another label count; starting a new head", folder)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    fresh = load_weights(model, state, source=str(folder))
    if fresh:
        logger.info("new classification head with %d outputs", space.num_labels)
    return model


def load_tokenizer(model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> Tokenizer:
    folder = Path(tokenizer_dir) if tokenizer_dir is not None else resolve_model_dir(model_dir)
    try:
        return Tokenizer.from_pretrained(folder)
    except ValueError as exc:
        if tokenizer_dir is None:
            raise CheckpointError(f"{exc}; pass the tokenizer folder explicitly (--tokenizer)") from None
        raise


def predictions_from_logits(logits: torch.Tensor, space: LabelSpace) -> np.ndarray:
    """(N, C) logits -> (N,) label ids, or (N, 1) -> (N,) floats for regression."""
    return logits[:, 0].numpy() if space.is_regression else logits.argmax(dim=-1).numpy()


# ----------------------------------------------------------------------------------------------- scoring
def score_split(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TextDataset,
    *,
    space: LabelSpace,
    metrics: Sequence[str],
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Loss and metrics of `model` on a labelled split: {"loss": ..., "accuracy": ..., ...}."""
    if data.labels is None:
        raise DataError(f"{data.source}: has no labels to evaluate against")
    ids = tokenizer.encode_batch(data.texts, data.pairs, max_length=max_length)
    _, batches = sorted_batches(tokenizer, ids, data.labels, batch_size)
    result = evaluate(model, batches, precision=precision, device=device, return_logits=True)
    preds = predictions_from_logits(result.logits, space)
    gold = result.labels.numpy()
    return {"loss": result.loss, **compute_metrics(metrics, preds, gold)}


@torch.no_grad()
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
    """Predictions for every row of `data`, in its order: (N,) label ids, or floats for regression."""
    ids = tokenizer.encode_batch(data.texts, data.pairs, max_length=max_length)
    order, batches = sorted_batches(tokenizer, ids, None, batch_size)
    model.eval()
    chunks = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            chunks.append(model(**batch).logits.float().cpu())
    preds = predictions_from_logits(torch.cat(chunks), space)
    out = np.empty_like(preds)
    out[np.asarray(order)] = preds
    return out


def write_test_predictions(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TaskData,
    out_dir: Path,
    *,
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> list[str]:
    """Predict every test split: GLUE submission files (SST-2.tsv, MNLI-m.tsv, ...) or test_predictions.tsv."""
    written = []
    for split, split_data in data.tests.items():
        preds = predict(
            model, tokenizer, split_data, space=data.space, max_length=max_length, batch_size=batch_size,
            precision=precision, device=device,
        )  # fmt: skip
        if data.task is not None:
            path = write_glue_submission(data.task, split, split_data.ids, preds.tolist(), out_dir)
        else:
            path = write_predictions(out_dir / "test_predictions.tsv", split_data, preds.tolist(), data.space)
        logger.info("wrote %d predictions to %s", len(preds), path)
        written.append(str(path))
    return written


def _model_space(model: RobertaForSequenceClassification) -> LabelSpace:
    config = model.config
    if config.is_regression:
        return LabelSpace(None)
    names = config.id2label or {i: f"LABEL_{i}" for i in range(config.num_labels)}
    return LabelSpace(tuple(names[i] for i in range(config.num_labels)))


def _task_permutation(model_space: LabelSpace, task: GlueTask) -> list[int] | None:
    """Model label id -> task label id when the model names the task's labels in another order (else None)."""
    if model_space.names is None or task.label_names is None:
        return None
    lowered = [n.lower() for n in model_space.names]
    if sorted(lowered) != sorted(task.label_names) or lowered == list(task.label_names):
        return None
    return [task.label_names.index(n) for n in lowered]


def _check_label_names(folder: Path, space: LabelSpace, task: GlueTask) -> None:
    """A classifier that names its labels must name the task's (in any order); generic LABEL_i names are taken
    to be in the task's order."""
    if space.names is None or task.label_names is None:
        return
    lowered = sorted(n.lower() for n in space.names)
    generic = all(n.upper() == f"LABEL_{i}" for i, n in enumerate(space.names))
    if not generic and lowered != sorted(task.label_names):
        raise ValueError(
            f"{folder} predicts {list(space.names)}, but {task.name} labels are {list(task.label_names)}: it was "
            f"trained for another task; evaluate a model finetuned on {task.name}"
        )


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
    batch_size: int = 64,
    max_samples: int | None = None,
    precision: str = "auto",
    device: str | None = None,
) -> dict[str, float]:
    """Metrics of a finetuned model: {"dev/accuracy": ..., "dev/loss": ...} (MNLI: dev_matched/..., dev_mismatched/...)."""
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
    if not any(k.startswith("classifier.") for k in load_state_dict(folder)):
        raise CheckpointError(
            f"{folder} has no trained classification head (no classifier.* weights), so a random one would be "
            f"scored; finetune it first (`rtoolkit finetune --model {folder} ...`) and evaluate that run's best/"
        )
    net = RobertaForSequenceClassification.from_pretrained(folder).to(dev)
    tok = load_tokenizer(model, tokenizer)
    if tok.vocab_size > net.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tok.vocab_size} ids but {folder} only {net.config.vocab_size} embedding rows; "
            f"they do not belong together"
        )
    space = _model_space(net)
    if task is not None:
        if data_dir is None:
            raise ValueError(f"task {task} needs data_dir (the folder with its GLUE .tsv files)")
        spec = get_task(task)
        if spec.num_labels != space.num_labels or spec.is_regression != space.is_regression:
            raise ValueError(
                f"{model} predicts {space.num_labels} label(s)"
                f"{' (regression)' if space.is_regression else ''}; {spec.name} needs {spec.num_labels}"
            )
        splits = spec.eval_splits if split == "dev" else (split,)
        metrics, sets = spec.metrics, {s: read_glue(spec, data_dir, s) for s in splits}
        _check_label_names(folder, space, spec)
        permutation = _task_permutation(space, spec)
        if permutation is not None:  # score the model in its own label ids
            inverse = {t: m for m, t in enumerate(permutation)}
            for s in sets.values():
                s.labels = [inverse[y] for y in s.labels]
    else:
        rows = read_rows(
            validation_file, text_column=text_column, text_pair_column=text_pair_column,
            label_column=label_column, fmt=data_format,
        )  # fmt: skip
        sets = {"dev": encode_rows(rows, space, known_from=f"the labels of {model}")}
        metrics = custom_metrics(space)
    results: dict[str, float] = {}
    for name, split_data in sets.items():
        split_data = first_rows(split_data, max_samples)
        scores = score_split(
            net, tok, split_data, space=space, metrics=metrics, max_length=min(max_length, net.config.max_tokens),
            batch_size=batch_size, precision=precision, device=dev,
        )  # fmt: skip
        results.update({f"{name}/{k}": v for k, v in scores.items()})
        results[f"{name}/examples"] = len(split_data)
    return results


__all__ = [
    "evaluate_model",
    "load_classifier",
    "load_tokenizer",
    "predict",
    "predictions_from_logits",
    "resolve_precision",
    "score_split",
    "write_test_predictions",
]
