"""The one AP/AUROC implementation (prunecxr.metrics), against scikit-learn and by hand."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from prunecxr.compress import evaluate
from prunecxr.train import core as train
from prunecxr.metrics import ranking_metrics


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


def test_training_and_the_sweep_share_one_implementation():
    assert evaluate.ranking_metrics is ranking_metrics
    rng = np.random.default_rng(2)
    y = (rng.random((80, 4)) < 0.3).astype(np.uint8)
    y[:, 2] = 0
    s = rng.random((80, 4)).astype(np.float32)
    ap = train.per_class_average_precision(y, s)
    np.testing.assert_array_equal(ap, ranking_metrics(y, s)[0])
    assert np.isnan(ap[2])
