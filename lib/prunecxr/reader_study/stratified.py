"""Reader-adjusted tests of the reader study (notebook 07), beside the paper's Kruskal–Wallis.

Every reader answers about both PIEs and non-PIEs, and readers differ (one says "yes" more
often, another rates every image a little harder). The paper's Kruskal–Wallis test pools all
answers as independent and, for the yes/no question, ranks a binary variable. Here each
comparison is made *within* readers:

* ``agree`` (yes/no): the Cochran–Mantel–Haenszel test over one 2×2 table (PIE/non-PIE ×
  yes/no) per reader, with the Mantel–Haenszel pooled odds ratio and its confidence interval
  (:class:`statsmodels.stats.contingency_tables.StratifiedTable`; Agresti 2013, §6.4);
* ``quality`` and ``difficulty`` (1–5): a proportional-odds (ordinal logistic) model with a
  PIE term and one term per reader (:class:`statsmodels.miscmodels.ordinal_model.OrderedModel`);
  the PIE coefficient is a log odds ratio of a higher answer, adjusted for the reader.

An image seen by several readers (``allow_overlap``) still counts once per answer: with one
reader per image, as in the paper's design, that is exact; otherwise the P values are
optimistic, which the ``note`` column says.

The three questions are a family: ``p_holm`` is Holm-adjusted over them.

Output: ``reader_study/stratified_tests.parquet`` (:data:`STRATIFIED_COLUMNS`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .. import fmt
from .questions import QUESTIONS

STRATIFIED_COLUMNS = [
    "question",
    "test",
    "effect",
    "estimate",
    "ci_low",
    "ci_high",
    "statistic",
    "p_value",
    "p_holm",
    "n_readers",
    "n_answers",
    "note",
]


def _note(answers: pd.DataFrame) -> str:
    shared = answers.groupby("image_id")["reader"].nunique().max() if len(answers) else 1
    return "" if shared <= 1 else "images seen by several readers: answers are not independent"


def cmh_agree(answers: pd.DataFrame, *, confidence: float = 0.95) -> dict:
    """Cochran–Mantel–Haenszel test of ``agree`` between PIEs and non-PIEs, stratified by reader.

    Readers whose table has an empty row or column (all PIE answers missing, or every answer
    the same) carry no information on the association and are left out (``n_readers``
    counts those used). Returns a row of :data:`STRATIFIED_COLUMNS` (estimate: the pooled
    Mantel–Haenszel odds ratio of "yes" for PIEs against non-PIEs).
    """
    from statsmodels.stats.contingency_tables import StratifiedTable

    tables = []
    ok = answers.dropna(subset=["agree"])
    for _, g in ok.groupby("reader", sort=True):
        pie = g["is_pie"].astype(bool).to_numpy()
        yes = g["agree"].to_numpy() == 1
        t = np.array(
            [[np.sum(pie & yes), np.sum(pie & ~yes)], [np.sum(~pie & yes), np.sum(~pie & ~yes)]],
            float,
        )
        if (t.sum(axis=0) > 0).all() and (t.sum(axis=1) > 0).all():
            tables.append(t)
    row = {
        "question": "agree",
        "test": "Cochran–Mantel–Haenszel (by reader)",
        "effect": "odds ratio of yes, PIE vs non-PIE",
        "n_readers": len(tables),
        "n_answers": int(len(ok)),
        "note": _note(answers),
    }
    if not tables:
        return row | dict(
            estimate=math.nan,
            ci_low=math.nan,
            ci_high=math.nan,
            statistic=math.nan,
            p_value=math.nan,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        st = StratifiedTable(tables)
        test = st.test_null_odds(correction=False)
        lo, hi = st.oddsratio_pooled_confint(alpha=1 - confidence)
    return row | dict(
        estimate=float(st.oddsratio_pooled),
        ci_low=float(lo),
        ci_high=float(hi),
        statistic=float(test.statistic),
        p_value=float(test.pvalue),
    )


def ordinal_by_reader(answers: pd.DataFrame, question: str, *, confidence: float = 0.95) -> dict:
    """Proportional-odds model of a 1–5 question: ``answer ~ is_pie + reader`` (logit link).

    Returns a row of :data:`STRATIFIED_COLUMNS`: ``estimate`` is the odds ratio of a higher
    answer for PIEs against non-PIEs with its Wald interval, ``statistic`` its z and
    ``p_value`` its Wald P. NaN when the model cannot be fitted (too few answers or levels).
    """
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    ok = answers.dropna(subset=[question])
    row = {
        "question": question,
        "test": "proportional odds with reader terms",
        "effect": "odds ratio of a higher answer, PIE vs non-PIE",
        "n_readers": int(ok["reader"].nunique()),
        "n_answers": int(len(ok)),
        "note": _note(answers),
    }
    nan = dict(
        estimate=math.nan, ci_low=math.nan, ci_high=math.nan, statistic=math.nan, p_value=math.nan
    )
    levels = np.sort(ok[question].unique())
    if len(levels) < 2 or ok["is_pie"].nunique() < 2 or len(ok) < 10:
        return row | nan
    endog = pd.Series(pd.Categorical(ok[question], categories=levels, ordered=True))
    exog = pd.get_dummies(ok["reader"].astype(str), prefix="reader", drop_first=True, dtype=float)
    exog.insert(0, "is_pie", ok["is_pie"].astype(float).to_numpy())
    exog = exog.reset_index(drop=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = OrderedModel(endog, exog, distr="logit").fit(
                method="bfgs", disp=False, maxiter=500
            )
        ci = fit.conf_int(alpha=1 - confidence).loc["is_pie"]
        beta, z, p = (
            float(fit.params["is_pie"]),
            float(fit.tvalues["is_pie"]),
            float(fit.pvalues["is_pie"]),
        )
    except (ValueError, np.linalg.LinAlgError) as err:
        return row | nan | {"note": f"not fitted: {err}"}
    if not np.isfinite(z):
        return row | nan | {"note": "not fitted: singular information matrix"}
    return row | dict(
        estimate=math.exp(beta),
        ci_low=math.exp(float(ci.iloc[0])),
        ci_high=math.exp(float(ci.iloc[1])),
        statistic=z,
        p_value=p,
    )


def stratified_tests(answers: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """One reader-adjusted test per question (:func:`cmh_agree`, :func:`ordinal_by_reader`)."""
    missing = [
        c
        for c in ("reader", "image_id", "is_pie", *(q.name for q in QUESTIONS))
        if c not in answers.columns
    ]
    if missing:
        raise ValueError(f"answers lack column(s) {missing}; use read_responses()")
    from ..analysis.paired import adjust

    rows = [
        cmh_agree(answers, confidence=confidence)
        if q.name == "agree"
        else ordinal_by_reader(answers, q.name, confidence=confidence)
        for q in QUESTIONS
    ]
    table = pd.DataFrame(rows, columns=[c for c in STRATIFIED_COLUMNS if c != "p_holm"])
    table.insert(
        table.columns.get_loc("p_value") + 1, "p_holm", adjust(table["p_value"].to_numpy(), "holm")
    )
    return table


def stratified_display(stratified: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """The reader-adjusted tests beside the paper's Kruskal–Wallis P (from ``tests``), as text."""
    kw = tests.set_index("question")["kw_p"]
    return pd.DataFrame(
        {
            "question": stratified["question"],
            "Kruskal–Wallis (answers pooled)": [
                fmt.pvalue(kw.get(q, math.nan)) for q in stratified["question"]
            ],
            "reader-adjusted test": stratified["test"],
            "effect [CI]": [
                f"{fmt.num(e)} [{fmt.num(lo)}, {fmt.num(hi)}]"
                for e, lo, hi in zip(
                    stratified["estimate"], stratified["ci_low"], stratified["ci_high"]
                )
            ],
            "reader-adjusted P": [fmt.pvalue(p) for p in stratified["p_value"]],
            "Holm over the questions": [fmt.pvalue(p) for p in stratified["p_holm"]],
            "readers": stratified["n_readers"],
            "note": stratified["note"],
        }
    )


def write_stratified(run: str, table: pd.DataFrame):
    """Write ``reader_study/stratified_tests.parquet`` of ``run``."""
    from .. import artifacts, paths

    return artifacts.write_parquet(paths.run_paths(run).reader_stratified, table)
