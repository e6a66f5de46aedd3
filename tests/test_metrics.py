"""The one AP/AUROC implementation (prunecxr.metrics), against scikit-learn and by hand."""

import importlib
import math
import pkgutil

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import prunecxr
from prunecxr import metrics
from prunecxr.metrics import mean_average_precision, ranking_metrics


def test_ranking_metrics_hand_computed():
    y = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.1]])
    ap, auc = ranking_metrics(y, s)
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert auc[0] == pytest.approx(3 / 4)
    ap, auc = ranking_metrics(np.array([[1], [0]]), np.array([[0.5], [0.5]]))  # one tie
    assert ap[0] == pytest.approx(0.5) and auc[0] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, c = 300, 6
    y = (rng.random((n, c)) < np.linspace(0.01, 0.5, c)).astype(np.uint8)
    scores = np.round(rng.random((n, c)) + 0.3 * y, 1 + seed % 3).astype(np.float32)  # many ties
    ap, auc = ranking_metrics(y, scores)
    for j in range(c):
        assert ap[j] == pytest.approx(average_precision_score(y[:, j], scores[:, j]), abs=1e-12)
        assert auc[j] == pytest.approx(roc_auc_score(y[:, j], scores[:, j]), abs=1e-12)


def test_ranking_metrics_are_invariant_to_monotone_rescaling_and_class_order():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.2).astype(np.uint8)
    s = rng.random((200, 5))
    ap, auc = ranking_metrics(y, s)
    ap2, auc2 = ranking_metrics(y, 3 * s**2 + 1)
    np.testing.assert_allclose(ap, ap2, rtol=1e-12)
    np.testing.assert_allclose(auc, auc2, rtol=1e-12)
    perm = [4, 2, 0, 1, 3]
    ap3, _ = ranking_metrics(y[:, perm], s[:, perm])
    np.testing.assert_allclose(ap3, ap[perm], rtol=1e-12)


def test_all_positive_class_has_ap_but_no_auroc():
    y = np.ones((4, 1), dtype=np.uint8)
    ap, auc = ranking_metrics(y, np.array([[0.1], [0.2], [0.3], [0.4]]))
    assert ap[0] == 1.0 and np.isnan(auc[0])


def test_mean_average_precision_by_hand():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.5], [0.7, 0.2, 0.5], [0.1, 0.3, 0.5]])
    # class 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: rank 1; class 2: no positive
    assert mean_average_precision(labels, scores) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert math.isnan(mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        mean_average_precision(labels, scores[:, :2])


def test_every_module_uses_the_one_implementation():
    """Training's validation and test AP, the sweep's metrics and prunecxr.analyze all use prunecxr.metrics."""
    users = []
    for info in pkgutil.walk_packages(prunecxr.__path__, "prunecxr."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name in ("ranking_metrics", "mean_average_precision", "compute_metrics"):
            if module is not metrics and hasattr(module, name):
                assert getattr(module, name) is getattr(metrics, name), f"{info.name}.{name}"
                users.append(info.name)
    assert {"prunecxr.train.loop", "prunecxr.train.summaries", "prunecxr.compress.evaluate"} <= set(
        users
    )
