"""What every task family shares: its data, its encoded features, and running a model over features.

A family's examples are whatever its reader returns (rows of text, SQuAD questions, RACE questions, sentences of
words); the shared code never looks inside them. It sees only:
- `Features`: the model inputs of every feature (one row, one window of a long context, one question with all its
  options), which example each came from, and its length in tokens (for length-grouped batches);
- per-feature outputs: a dict of numpy arrays named like the model's (and the exported graph's) outputs, with any
  token axis cut to the feature's own length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rtoolkit.train.loop import autocast


@dataclass(frozen=True)
class Preset:
    """A named task's recipe (`--task NAME` fills every finetuning setting left unset from it)."""

    lr: float
    batch_size: int
    epochs: int
    warmup_ratio: float = 0.06
    weight_decay: float = 0.1
    classifier_dropout: float = 0.0


@dataclass
class Features:
    """Encoded model inputs. `inputs[name]` holds one array per feature (input_ids (T,) or (C, T), and the label
    arrays when the examples have labels); `example[i]` is the index of feature i's example, `lengths[i]` its
    tokens; `info[i]` is what decoding needs to map it back (e.g. token character offsets)."""

    inputs: dict[str, list[np.ndarray]]
    example: np.ndarray
    lengths: np.ndarray
    info: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.example)


@dataclass
class TaskData:
    """A task's examples: training, the labelled evaluation splits, the test splits, and how they are scored.
    `labels` is the family's label information (label names, a label space) or None."""

    train: Any | None
    evals: dict[str, Any]
    tests: dict[str, Any]
    metrics: tuple[str, ...]
    main_metric: str
    labels: Any = None
    task: Any = None  # the named task's spec, when there is one

    @property
    def main_key(self) -> str:
        """metrics.jsonl key of the metric that picks best/, e.g. `dev/accuracy`."""
        return f"{next(iter(self.evals))}/{self.main_metric}"


def pad_stack(arrays: Sequence[np.ndarray], value: int | float) -> np.ndarray:
    """Arrays equal in all but their last axis -> one array padded on the last axis to the longest."""
    width = max(a.shape[-1] for a in arrays)
    out = np.full((len(arrays), *arrays[0].shape[:-1], width), value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, ..., : a.shape[-1]] = a
    return out


def split_rows(
    arrays: dict[str, np.ndarray], lengths: Sequence[int], token_outputs: frozenset[str]
) -> list[dict[str, np.ndarray]]:
    """Batch outputs -> one dict per row, the token axis (axis 1) of `token_outputs` cut to each row's length."""
    rows = []
    for i, n in enumerate(lengths):
        rows.append({k: (v[i, :n] if k in token_outputs else v[i]) for k, v in arrays.items()})
    return rows


def length_order(features: Features) -> np.ndarray:
    """Feature indices, longest first (little padding per batch, and memory errors come early)."""
    return np.argsort(-features.lengths, kind="stable")


def length_batches(features: Features, batch_size: int) -> list[np.ndarray]:
    """The feature indices cut into batches of `batch_size`, longest features first."""
    order = length_order(features)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def run_batches(
    forward: Callable[[dict[str, torch.Tensor]], dict[str, np.ndarray]],
    family: Any,
    tokenizer: Any,
    features: Features,
    batches: Iterable[np.ndarray],
) -> list[dict[str, np.ndarray]]:
    """Per-feature outputs, in feature order: each batch of feature indices collated the family's way, run by
    `forward` (collated tensors -> arrays named like family.OUTPUTS), and split into rows cut to each feature's
    length. `forward` is a PyTorch model (run_model) or any backend (the Predictor)."""
    outputs: list[dict[str, np.ndarray] | None] = [None] * len(features)
    for rows in batches:
        arrays = forward(family.collate(tokenizer, features, rows))
        for row, result in zip(
            rows, split_rows(arrays, features.lengths[rows], family.TOKEN_OUTPUTS), strict=True
        ):
            outputs[row] = result
    return outputs  # type: ignore[return-value]


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    family: Any,
    tokenizer: Any,
    features: Features,
    *,
    batch_size: int,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float | None, list[dict[str, np.ndarray]]]:
    """Run `model` over every feature (in length-sorted batches): the mean loss (None without labels) and the
    per-feature outputs, in feature order."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loss_sum, loss_count = 0.0, 0

    def forward(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        nonlocal loss_sum, loss_count
        rows = len(batch["input_ids"])
        with autocast(precision, device):
            out = model(**{k: v.to(device) for k, v in batch.items()})
        if getattr(out, "loss", None) is not None:
            loss_sum += float(out.loss) * rows
            loss_count += rows
        if on_batch is not None:
            on_batch(rows)
        return {name: getattr(out, name).float().cpu().numpy() for name in family.OUTPUTS}

    try:
        outputs = run_batches(forward, family, tokenizer, features, length_batches(features, batch_size))
    finally:
        model.train(was_training)
    return (loss_sum / loss_count if loss_count else None), outputs


__all__ = [
    "Features",
    "Preset",
    "TaskData",
    "length_batches",
    "length_order",
    "pad_stack",
    "run_batches",
    "run_model",
    "split_rows",
]
