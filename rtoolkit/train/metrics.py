"""GLUE metrics in plain numpy: accuracy, F1, Matthews correlation, Pearson and Spearman correlation.

Conventions for degenerate inputs (so a metric is always a finite number that can be compared and written to
JSON): F1 is 0 when there is no true positive; Matthews, Pearson and Spearman are 0 when a side is constant
(scikit-learn does the same for Matthews; scipy returns NaN for the correlations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray


def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be 1-D and of the same length")
    if p.size == 0:
        raise ValueError("cannot compute a metric over zero examples")
    return p, y


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Share of predictions equal to the label. (N,) ints -> float in [0, 1]."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: ArrayLike, labels: ArrayLike, *, positive: int = 1) -> float:
    """Binary F1 of the `positive` class: 2 TP / (2 TP + FP + FN). (N,) ints -> float in [0, 1]."""
    p, y = _pair(predictions, labels)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004) from the confusion matrix. -> float in [-1, 1]."""
    p, y = _pair(predictions, labels)
    classes, index = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = len(classes), len(y)
    confusion = np.zeros((k, k), dtype=np.float64)  # (true, predicted)
    np.add.at(confusion, (index[:n], index[n:]), 1.0)
    t = confusion.sum(axis=1)  # times each class truly occurs
    q = confusion.sum(axis=0)  # times each class was predicted
    c, s = np.trace(confusion), float(n)
    numerator = c * s - t @ q
    denominator = np.sqrt(s * s - q @ q) * np.sqrt(s * s - t @ t)
    return 0.0 if denominator == 0 else float(numerator / denominator)


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation of two (N,) float arrays -> float in [-1, 1]."""
    x, y = _pair(predictions, labels)
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return 0.0 if denominator == 0 else float(np.clip((x @ y) / denominator, -1.0, 1.0))


def rankdata(values: ArrayLike) -> np.ndarray:
    """Ranks starting at 1, ties given the mean of the ranks they span. (N,) -> (N,) float."""
    v = np.asarray(values)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.concatenate([[True], sorted_v[1:] != sorted_v[:-1]]))
    ends = np.concatenate([starts[1:], [len(v)]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: Pearson of the tie-averaged ranks. -> float in [-1, 1]."""
    x, y = _pair(predictions, labels)
    return pearson(rankdata(x), rankdata(y))


METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
REGRESSION_METRICS = ("pearson", "spearman")


def compute_metrics(names: Sequence[str], predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """{name: value} for each metric in `names` (keys of METRICS)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    return {name: METRICS[name](predictions, labels) for name in names}


__all__ = [
    "accuracy",
    "f1",
    "matthews_corrcoef",
    "pearson",
    "spearman",
    "rankdata",
    "METRICS",
    "REGRESSION_METRICS",
    "compute_metrics",
]
