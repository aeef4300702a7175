"""Sequence classification (and regression): GLUE tasks and custom CSV/TSV/JSONL rows, one label per text or pair.

Examples are `rtoolkit.data.glue.TextDataset`s (texts, optional pairs, labels). A feature is one row,
`<s> A </s>` or `<s> A </s></s> B </s>` truncated to `max_length`; the head reads the `<s>` state. Predictions are
label ids (or floats for regression), scored with the task's metrics (accuracy, F1, Matthews, Pearson, Spearman).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import collate_classification
from rtoolkit.data.glue import (
    GLUE_TASKS,
    GlueTask,
    LabelSpace,
    TextDataset,
    custom_metrics,
    encode_rows,
    first_rows,
    get_task,
    load_task_data,
    read_glue,
    read_rows,
    write_glue_submission,
)
from rtoolkit.data.glue import write_predictions as write_rows
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.runtime.artifacts import TASK_OUTPUTS
from rtoolkit.tasks.common import Features, Preset, TaskData
from rtoolkit.train.metrics import compute_metrics

logger = logging.getLogger(__name__)

NAME = "classification"
HEAD = RobertaForSequenceClassification
OUTPUTS = tuple(TASK_OUTPUTS[NAME])  # the graph outputs the export writes, in order
TOKEN_OUTPUTS: frozenset[str] = frozenset()
INPUT_RANK = 2
# fairseq's GLUE recipes (rtoolkit.data.glue.GLUE_TASKS); custom data takes the small-task settings (RTE, STS-B).
PRESETS = {
    name: Preset(t.lr, t.batch_size, t.epochs, t.warmup_ratio, 0.1, t.classifier_dropout)
    for name, t in GLUE_TASKS.items()
}
CUSTOM = Preset(lr=2e-5, batch_size=16, epochs=10)


# --------------------------------------------------------------------------------------------------- data
def load_data(cfg: Any, *, train: bool = True) -> TaskData:
    """A GLUE task's (or custom files') training, evaluation and, with `cfg.predict`, test rows."""
    data = load_task_data(
        task=cfg.task, data_dir=cfg.data_dir, train_file=cfg.train_file, validation_file=cfg.validation_file,
        test_file=cfg.test_file, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
        label_column=cfg.label_column, regression=cfg.regression, data_format=cfg.data_format, predict=cfg.predict,
        main_metric=cfg.main_metric, max_train_samples=cfg.max_train_samples,
        max_eval_samples=cfg.max_eval_samples, train=train,
    )  # fmt: skip
    return TaskData(
        data.train, data.evals, data.tests, data.metrics, data.main_metric, labels=data.space, task=data.task
    )


def build_model(
    folder: str | os.PathLike,
    space: LabelSpace,
    *,
    classifier_dropout: float | None = None,
    dropout: float | None = None,
) -> RobertaForSequenceClassification:
    """A sequence classifier for the label space `space` (TaskData.labels) on the encoder in `folder`; `dropout`
    replaces the encoder's dropout, `classifier_dropout` the head's (None: the folder's setting, else the
    encoder's dropout).

    The classifier head is kept when the folder has one of the same shape (continued finetuning) and freshly
    initialised otherwise (a pretrained encoder, or a head trained for another label set).
    """
    folder = resolve_model_dir(folder)
    values = RobertaConfig.from_pretrained(folder).to_dict()
    for key in ("id2label", "label2id", "architectures"):
        values.pop(key, None)
    values.update(
        num_labels=space.num_labels,
        problem_type="regression" if space.is_regression else "single_label_classification",
    )
    if space.id2label is not None:
        values["id2label"] = space.id2label
    if dropout is not None:
        values.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if classifier_dropout is not None:
        values["classifier_dropout"] = classifier_dropout
    model = RobertaForSequenceClassification(RobertaConfig.from_dict(values))
    state = load_state_dict(folder)
    own = model.state_dict()
    stale = [
        k for k, v in state.items() if k.startswith("classifier.") and k in own and own[k].shape != v.shape
    ]
    if stale:
        logger.info("%s: classifier head has another label count; starting a new head", folder)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if load_weights(model, state, source=str(folder)):
        logger.info("new classification head with %d outputs", space.num_labels)
    return model


# --------------------------------------------------------------------------------------------- features
def encode(tokenizer: Any, examples: TextDataset, *, max_length: int, stride: int | None = None) -> Features:
    """One feature per row: its token ids (and label)."""
    ids = tokenizer.encode_batch(examples.texts, examples.pairs, max_length=max_length)
    inputs: dict[str, list[np.ndarray]] = {"input_ids": [np.asarray(row, dtype=np.int64) for row in ids]}
    if examples.labels is not None:
        dtype = np.float32 if examples.labels and isinstance(examples.labels[0], float) else np.int64
        inputs["labels"] = [np.asarray(y, dtype=dtype) for y in examples.labels]
    return Features(inputs, np.arange(len(ids)), np.asarray([len(r) for r in ids], dtype=np.int64))


def collate(tokenizer: Any, features: Features, rows: Any) -> dict[str, torch.Tensor]:
    """Pad to the longest row: input_ids, attention_mask (absent when nothing is padded) and labels."""
    ids = [features.inputs["input_ids"][r].tolist() for r in rows]
    labels = [features.inputs["labels"][r].item() for r in rows] if "labels" in features.inputs else None
    return collate_classification(tokenizer, ids, labels)


# ------------------------------------------------------------------------------------------ predictions
def predictions_from_logits(logits: torch.Tensor | np.ndarray, space: LabelSpace) -> np.ndarray:
    """(N, C) logits -> (N,) label ids, or (N, 1) -> (N,) floats for regression."""
    logits = np.asarray(logits)
    return logits[:, 0] if space.is_regression else logits.argmax(axis=-1)


def postprocess(
    outputs: list[dict[str, np.ndarray]], features: Features, examples: Any, data: TaskData
) -> list:
    """One label id (or float) per row."""
    return predictions_from_logits(np.stack([o["logits"] for o in outputs]), data.labels).tolist()


def score(predictions: list, examples: TextDataset, data: TaskData) -> dict[str, float]:
    if examples.labels is None:
        raise ValueError(f"{examples.source}: has no labels to evaluate against")
    return compute_metrics(data.metrics, np.asarray(predictions), np.asarray(examples.labels))


def write_predictions(
    predictions: list, examples: TextDataset, data: TaskData, split: str, folder: Path
) -> Path:
    """GLUE submission files (SST-2.tsv, MNLI-m.tsv, ...) for GLUE tasks, test_predictions.tsv for custom data."""
    if data.task is not None:
        return write_glue_submission(data.task, split, examples.ids, predictions, folder)
    return write_rows(folder / "test_predictions.tsv", examples, predictions, data.labels)


# ------------------------------------------------------------------------------------------- evaluation
def model_labels(model: RobertaForSequenceClassification) -> LabelSpace:
    """The label space a trained classifier predicts (from its config)."""
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


def evaluation_data(model: RobertaForSequenceClassification, options: Any) -> TaskData:
    """The splits `rtoolkit evaluate` scores `model` on: a GLUE task's (labels in the model's own ids) or a custom
    labelled file (labels read in the model's label space)."""
    space = model_labels(model)
    folder = Path(options.model)
    if options.task is not None:
        if options.data_dir is None:
            raise ValueError(f"task {options.task} needs data_dir (the folder with its GLUE .tsv files)")
        spec = get_task(options.task)
        if spec.num_labels != space.num_labels or spec.is_regression != space.is_regression:
            raise ValueError(
                f"{options.model} predicts {space.num_labels} label(s)"
                f"{' (regression)' if space.is_regression else ''}; {spec.name} needs {spec.num_labels}"
            )
        splits = spec.eval_splits if options.split == "dev" else (options.split,)
        sets = {s: read_glue(spec, options.data_dir, s) for s in splits}
        _check_label_names(folder, space, spec)
        permutation = _task_permutation(space, spec)
        if permutation is not None:  # score the model in its own label ids
            inverse = {t: m for m, t in enumerate(permutation)}
            for s in sets.values():
                s.labels = [inverse[y] for y in s.labels]
        metrics, task = spec.metrics, spec
    else:
        rows = read_rows(
            options.validation_file, text_column=options.text_column, text_pair_column=options.text_pair_column,
            label_column=options.label_column, fmt=options.data_format,
        )  # fmt: skip
        sets = {"dev": encode_rows(rows, space, known_from=f"the labels of {options.model}")}
        metrics, task = custom_metrics(space), None
    sets = {name: first_rows(s, options.max_samples) for name, s in sets.items()}
    return TaskData(None, sets, {}, tuple(metrics), metrics[0], labels=space, task=task)


__all__ = [
    "CUSTOM",
    "HEAD",
    "NAME",
    "OUTPUTS",
    "PRESETS",
    "build_model",
    "collate",
    "encode",
    "evaluation_data",
    "load_data",
    "model_labels",
    "postprocess",
    "predictions_from_logits",
    "score",
    "write_predictions",
]
