"""Metric functions against hand-computed values, and against scikit-learn / scipy where installed."""

import math

import numpy as np
import pytest

from rtoolkit.train.metrics import (
    accuracy,
    compute_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    rankdata,
    spearman,
)

# TP = 2 (rows 0, 3), FP = 1 (row 2), FN = 1 (row 4), TN = 1 (row 1).
PRED = [1, 0, 1, 1, 0]
GOLD = [1, 0, 0, 1, 1]


def test_classification_metrics_by_hand():
    assert accuracy(PRED, GOLD) == pytest.approx(3 / 5)
    assert f1(PRED, GOLD) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(PRED, GOLD) == pytest.approx(1 / 6)
    assert f1(PRED, GOLD, positive=0) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))


def test_correlations_by_hand():
    # dx = [-1, 0, 1], dy = [-4/3, -1/3, 5/3]: cov 3, var 2 and 42/9.
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    # Ties share the mean rank: [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5).
    assert rankdata([1, 2, 2, 3]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 5, 30], [0.1, 0.2, 0.9]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_degenerate_inputs_give_finite_values():
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positive anywhere
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictions
    assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([1.0, 2.0], [5.0, 5.0]) == 0.0
    assert matthews_corrcoef([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero examples"):
        pearson([], [])
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], [1], [1])


def test_compute_metrics_names():
    out = compute_metrics(["accuracy", "f1", "mcc"], PRED, GOLD)
    assert list(out) == ["accuracy", "f1", "mcc"]
    assert out["mcc"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_agrees_with_scikit_learn(num_classes):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(num_classes)
    for _ in range(20):
        gold = rng.integers(0, num_classes, size=200)
        pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, num_classes, size=200))
        assert accuracy(pred, gold) == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
        assert matthews_corrcoef(pred, gold) == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, pred))
        if num_classes == 2:
            assert f1(pred, gold) == pytest.approx(sklearn_metrics.f1_score(gold, pred))


def test_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        gold = rng.integers(0, 26, size=300) / 5.0  # STS-B-like scores with many ties
        pred = gold + rng.normal(0, 1.0, size=300)
        pred[:30] = np.round(pred[:30])  # ties on the prediction side too
        assert pearson(pred, gold) == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-12)
        assert spearman(pred, gold) == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)
        assert np.allclose(rankdata(pred), stats.rankdata(pred))
