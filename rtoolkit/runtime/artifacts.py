"""What an export folder is: its tasks, file names and tensor names, and `export_manifest.json`, which records every
artifact and how it was validated. One owner for the format: `rtoolkit export` writes it (rtoolkit.export), and the
runtime (the Predictor's backends) reads it.

An export folder is self-contained (the Predictor needs nothing else):

    OUT/
      config.json + tokenizer files   copied from the model folder
      model.onnx                      fp32, inputs input_ids / attention_mask int64 (batch, sequence)
      model.optimized.onnx            ONNX Runtime transformer fusions (CPU and CUDA execution providers)
      model.int8.onnx                 dynamic int8 (from the optimized graph when there is one)
      model.fp16.onnx                 fp16 weights and activations, LayerNorm and Softmax kept in fp32
      engines/<key>.engine            TensorRT engines, keyed by TensorRT version, GPU, profile, precision, ONNX
      export_manifest.json            task, source hash, opset, shapes, and one record per artifact

Every artifact record carries its validation numbers and `passed`; a consumer uses only artifacts that passed.
The tasks are named once, here: "fill-mask", "classification" and "embedding".
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtoolkit.checkpoint import atomic_write_bytes

TASKS = (
    "fill-mask",
    "classification",
    "embedding",
    "question-answering",
    "multiple-choice",
    "token-classification",
)
INPUT_NAMES = ("input_ids", "attention_mask")
DYNAMIC_AXES = ("batch", "sequence")
# Each task's graph outputs, in order, and their axes (`features`: the vocabulary, labels or hidden size). Inputs
# are (batch, sequence), or (batch, choices, sequence) for multiple choice.
TASK_OUTPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "fill-mask": {"logits": ("batch", "sequence", "features")},
    "classification": {"logits": ("batch", "features")},
    "embedding": {"last_hidden_state": ("batch", "sequence", "features")},
    "question-answering": {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")},
    "multiple-choice": {"logits": ("batch", "choices")},
    "token-classification": {"logits": ("batch", "sequence", "features")},
}
INPUT_AXES = {"multiple-choice": ("batch", "choices", "sequence")}  # other tasks: DYNAMIC_AXES

MANIFEST_NAME = "export_manifest.json"
ONNX_FP32 = "model.onnx"
ONNX_OPTIMIZED = "model.optimized.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_FP16 = "model.fp16.onnx"
ENGINES_DIR = "engines"
TIMING_CACHE = "timing.cache"
MANIFEST_VERSION = 1

# What `rtoolkit export` can add: the quantization modes, and the node groups int8 may leave in fp32.
QUANTIZE_MODES = ("int8",)
EXCLUDE_GROUPS = ("embeddings", "head")
# The numbers an artifact's validation record may hold, in the order they are reported.
VALIDATION_KEYS = (
    "max_abs_diff",
    "top1_agreement",
    "top5_agreement",
    "pearson",
    "cosine_min",
    "accuracy_drop",
)

# Which architecture in config.json means which task, and the state-dict prefix that proves the head is there.
ARCHITECTURE_TASKS = {
    "RobertaForMaskedLM": "fill-mask",
    "RobertaForSequenceClassification": "classification",
    "RobertaModel": "embedding",
    "RobertaForQuestionAnswering": "question-answering",
    "RobertaForMultipleChoice": "multiple-choice",
    "RobertaForTokenClassification": "token-classification",
}
HEAD_PREFIXES = {
    "fill-mask": "lm_head.",
    "classification": "classifier.",
    "embedding": None,
    "question-answering": "qa_outputs.",
    "multiple-choice": "classifier.",
    "token-classification": "classifier.",
}
# Architecture name endings of other encoders' heads (XLM-R, ...) that load as these tasks.
_ARCHITECTURE_SUFFIXES = {arch.removeprefix("Roberta"): task for arch, task in ARCHITECTURE_TASKS.items()}


def folder_task(folder: str | os.PathLike, *, state_keys: list[str] | None = None) -> str:
    """The task a model folder was saved for: config.json's `architectures` (RobertaForMaskedLM -> fill-mask, any
    ...ForSequenceClassification -> classification, RobertaModel -> embedding), else the heads in its weights."""
    from rtoolkit.checkpoint import weight_names
    from rtoolkit.config import RobertaConfig

    folder = Path(folder)
    for arch in RobertaConfig.from_pretrained(folder).architectures or []:
        if arch in ARCHITECTURE_TASKS:
            return ARCHITECTURE_TASKS[arch]
        for suffix, task in _ARCHITECTURE_SUFFIXES.items():
            if suffix.startswith("For") and arch.endswith(suffix):
                return task
    keys = state_keys if state_keys is not None else weight_names(folder)
    for task, prefix in HEAD_PREFIXES.items():
        if prefix is not None and any(k.removeprefix("roberta.").startswith(prefix) for k in keys):
            return task
    return "embedding"


class ExportError(ValueError):
    """An export that cannot go on as asked; the message names the file, value or missing piece."""


class ValidationError(ExportError):
    """An exported artifact whose outputs disagree with its reference beyond the tolerance; carries the numbers."""

    def __init__(self, message: str, record: dict[str, Any] | None = None):
        super().__init__(message)
        self.record = record or {}


def graph_path(folder: Path, name: str) -> Path:
    """`folder / name`, or ExportError when that graph has not been exported yet."""
    path = folder / name
    if not path.is_file():
        raise ExportError(f"{path}: file not found; export the model first")
    return path


def output_name(task: str) -> str:
    """The task's first graph output: `logits` (fill-mask (B, T, V), classification (B, num_labels), ...),
    `last_hidden_state` (embedding), `start_logits` (question answering)."""
    return next(iter(TASK_OUTPUTS[task]))


def output_names(task: str) -> tuple[str, ...]:
    return tuple(TASK_OUTPUTS[task])


def input_axes(task: str) -> tuple[str, ...]:
    return INPUT_AXES.get(task, DYNAMIC_AXES)


def output_axes(task: str) -> list[str]:
    """The axes of the task's first output (`features` for the vocabulary, labels or hidden size)."""
    axes = list(TASK_OUTPUTS[task][output_name(task)])
    return ["batch", "num_labels"] if task == "classification" else axes


@dataclass
class Artifact:
    """One exported model file and what was measured on it."""

    file: str  # relative to the export folder
    format: str  # "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    optimized: bool = False
    validation: dict[str, Any] = field(default_factory=dict)
    passed: bool = False
    fused_operators: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # how it was made (source graph, options, profile)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Manifest:
    """`export_manifest.json`: everything a consumer of the folder needs to know, and how it was checked."""

    task: str
    source: dict[str, str]  # {"path": model folder as given, "sha256": of config.json + weight files}
    opset: int
    max_batch: int
    max_seq_len: int
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    tool_versions: dict[str, str] = field(default_factory=dict)
    manifest_version: int = MANIFEST_VERSION

    def artifact(self, file: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.file == file), None)

    def put(self, artifact: Artifact) -> None:
        """Add `artifact`, replacing any earlier record of the same file."""
        self.artifacts = [a for a in self.artifacts if a.file != artifact.file] + [artifact]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["artifacts"] = [a.to_dict() for a in self.artifacts]
        return data

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_NAME
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise ExportError(
                f"{folder} is not an export folder: {MANIFEST_NAME} is missing (run `rtoolkit export` first)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        try:
            artifacts = [Artifact.from_dict(a) for a in data.pop("artifacts", [])]
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known}, artifacts=artifacts)
        except TypeError as exc:
            raise ExportError(f"{path}: not an export manifest ({exc})") from None
