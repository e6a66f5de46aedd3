"""prunecxr.reader_study.stratified: Cochran–Mantel–Haenszel and the reader-adjusted ordinal model,
against direct statsmodels computations and a hand-built case."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.miscmodels.ordinal_model import OrderedModel
from statsmodels.stats.contingency_tables import StratifiedTable

from prunecxr.reader_study import stratified


def answers(rng, n_readers=4, per_reader=30, effect=1.0):
    rows = []
    for r in range(n_readers):
        bias = rng.normal(0, 1)
        for k in range(per_reader):
            pie = k % 2 == 0
            latent = bias + effect * pie + rng.logistic()
            rows.append(
                {
                    "reader": f"reader-{r + 1}",
                    "image_id": f"im{r}-{k}",
                    "is_pie": pie,
                    "agree": float(latent > 0.5),
                    "quality": float(np.clip(np.round(3 + latent), 1, 5)),
                    "difficulty": float(np.clip(np.round(3 - latent), 1, 5)),
                }
            )
    return pd.DataFrame(rows)


def test_cmh_equals_statsmodels_stratified_table():
    rng = np.random.default_rng(0)
    a = answers(rng)
    row = stratified.cmh_agree(a)
    tables = []
    for _, g in a.groupby("reader"):
        pie, yes = g["is_pie"].to_numpy(), g["agree"].to_numpy() == 1
        tables.append(
            np.array(
                [[np.sum(pie & yes), np.sum(pie & ~yes)], [np.sum(~pie & yes), np.sum(~pie & ~yes)]]
            )
        )
    st = StratifiedTable(tables)
    assert row["p_value"] == pytest.approx(st.test_null_odds(correction=False).pvalue)
    assert row["estimate"] == pytest.approx(st.oddsratio_pooled)
    assert row["n_readers"] == 4 and row["note"] == ""


def test_cmh_hand_built_identical_tables():
    # two readers, each: PIE 8 yes / 2 no, non-PIE 2 yes / 8 no → pooled OR = 16
    rows = []
    for r in ("reader-1", "reader-2"):
        for pie, yes in ((True, 8), (False, 2)):
            for k in range(10):
                rows.append(
                    {
                        "reader": r,
                        "image_id": f"{r}-{pie}-{k}",
                        "is_pie": pie,
                        "agree": float(k < yes),
                        "quality": 3.0,
                        "difficulty": 3.0,
                    }
                )
    row = stratified.cmh_agree(pd.DataFrame(rows))
    assert row["estimate"] == pytest.approx(16.0)
    assert row["p_value"] < 0.001


def test_ordinal_model_equals_direct_orderedmodel():
    rng = np.random.default_rng(1)
    a = answers(rng, effect=1.5)
    row = stratified.ordinal_by_reader(a, "quality")
    exog = pd.get_dummies(a["reader"], prefix="reader", drop_first=True, dtype=float)
    exog.insert(0, "is_pie", a["is_pie"].astype(float))
    endog = pd.Series(
        pd.Categorical(a["quality"], categories=np.sort(a["quality"].unique()), ordered=True)
    )
    fit = OrderedModel(endog, exog, distr="logit").fit(method="bfgs", disp=False, maxiter=500)
    assert row["estimate"] == pytest.approx(np.exp(fit.params["is_pie"]), rel=1e-4)
    assert row["p_value"] == pytest.approx(fit.pvalues["is_pie"], rel=1e-3)
    assert row["estimate"] > 1  # PIEs rated higher in this simulation


def test_stratified_tests_one_row_per_question_and_overlap_noted():
    rng = np.random.default_rng(2)
    a = answers(rng)
    a.loc[1, "image_id"] = a.loc[40, "image_id"]  # one image seen by two readers
    table = stratified.stratified_tests(a)
    assert table["question"].tolist() == ["agree", "quality", "difficulty"]
    assert table["note"].str.contains("several readers").all()
    with pytest.raises(ValueError, match="lack"):
        stratified.stratified_tests(a.drop(columns="reader"))
