"""The results of the reader study (notebook 07): PIEs against non-PIEs, the paper, Fig. 6.

Statistics
----------
Each answer is one observation (as in the paper, where each image had one reader). For each
question the PIE and non-PIE answers are compared by the Kruskal–Wallis H test (the paper's),
the two-sided Mann–Whitney U test and Welch's unequal-variance t test (scipy). Means and
sample SDs (ddof = 1) per group are what Fig. 6 plots. With overlapping packets an image can
contribute several answers; the tests then treat them as independent, which they are not.

The paper's results (group means and Kruskal–Wallis P per question) are data in
``reader_study/published.toml``, with their source; every table and figure made from
simulated answers says SIMULATED in its title.
"""

from __future__ import annotations

import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import scipy.stats
from plotly.subplots import make_subplots

from .. import artifacts, fmt, paths
from .design import NON_PIE, PIE
from .questions import QUESTION_NAMES, QUESTIONS

#: the word every figure and table made from simulated answers carries in its title
SIMULATED = "SIMULATED"
PUBLISHED_FILE = Path(__file__).with_name("published.toml")


# -- statistics ----------------------------------------------------------------------------
def _test(fn, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) < 2 or len(b) < 2 or np.ptp(np.concatenate([a, b])) == 0:
        return math.nan, math.nan  # undefined: too few answers, or every answer identical
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fn(a, b)
    return float(res.statistic), float(res.pvalue)


def compare_groups(answers: pd.DataFrame) -> pd.DataFrame:
    """Compare PIEs with non-PIEs on each question (Fig. 6 and its P values).

    Parameters
    ----------
    answers : from :func:`read_responses` (``is_pie`` from the key, joined by code).

    Returns
    -------
    One row per question of :data:`QUESTIONS`: ``question``, ``title``, ``n_pie``,
    ``n_non_pie`` (answered), ``mean_pie``, ``sd_pie``, ``mean_non_pie``, ``sd_non_pie``
    (sample SD, ddof = 1), ``kw_h``, ``kw_p`` (Kruskal–Wallis H test, as in the paper),
    ``mwu_u``, ``mwu_p`` (Mann–Whitney U of the PIE answers, two-sided), ``welch_t``,
    ``welch_p`` (Welch's t, PIE minus non-PIE), ``n_readers``, ``n_answers``, ``source``.
    A test is NaN when a group has fewer than 2 answers or all answers are identical.
    """
    missing = [c for c in ("is_pie", "reader", *QUESTION_NAMES) if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack column(s) {missing}; use read_responses()")
    is_pie = answers["is_pie"].astype(bool).to_numpy()
    source = ",".join(sorted(answers["source"].unique())) if "source" in answers else "readers"
    rows = []
    for q in QUESTIONS:
        values = answers[q.name].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        a, b = values[ok & is_pie], values[ok & ~is_pie]
        kw = _test(scipy.stats.kruskal, a, b)
        mwu = _test(lambda x, y: scipy.stats.mannwhitneyu(x, y, alternative="two-sided"), a, b)
        welch = _test(lambda x, y: scipy.stats.ttest_ind(x, y, equal_var=False), a, b)
        rows.append(
            {
                "question": q.name,
                "title": q.title,
                "n_pie": int(len(a)),
                "n_non_pie": int(len(b)),
                "mean_pie": float(a.mean()) if len(a) else math.nan,
                "sd_pie": float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                "mean_non_pie": float(b.mean()) if len(b) else math.nan,
                "sd_non_pie": float(b.std(ddof=1)) if len(b) > 1 else math.nan,
                "kw_h": kw[0],
                "kw_p": kw[1],
                "mwu_u": mwu[0],
                "mwu_p": mwu[1],
                "welch_t": welch[0],
                "welch_p": welch[1],
                "n_readers": int(answers["reader"].nunique()),
                "n_answers": int(ok.sum()),
                "source": source,
            }
        )
    return pd.DataFrame(rows)


def write_results(run: str, answers: pd.DataFrame, tests: pd.DataFrame) -> dict[str, Path]:
    """Write ``answers.parquet`` and ``tests.parquet`` of ``run``."""
    rp = paths.run_paths(run)
    return {
        "answers": artifacts.write_parquet(rp.reader_answers, answers),
        "tests": artifacts.write_parquet(rp.reader_tests, tests),
    }


# -- presentation --------------------------------------------------------------------------
def headline(text: str, *, simulated: bool) -> str:
    """``text``, prefixed with SIMULATED when the answers are simulated."""
    return f"{SIMULATED} answers, not radiologists': {text}" if simulated else text


def published() -> pd.DataFrame:
    """The paper's reader-study results (``reader_study/published.toml``), one row per question.

    Columns ``question``, ``pie``, ``non_pie``, ``p_kruskal``, ``source``.
    """
    with open(PUBLISHED_FILE, "rb") as fh:
        table = tomllib.load(fh)
    source = table.get("source", "")
    rows = []
    for q in QUESTIONS:
        if q.name not in table:
            raise ValueError(f"{PUBLISHED_FILE}: no table [{q.name}]")
        entry = table[q.name]
        missing = [c for c in ("pie", "non_pie", "p_kruskal") if c not in entry]
        if missing:
            raise ValueError(f"{PUBLISHED_FILE}: [{q.name}] lacks {missing}")
        rows.append(
            {
                "question": q.name,
                **{c: float(entry[c]) for c in ("pie", "non_pie", "p_kruskal")},
                "source": source,
            }
        )
    return pd.DataFrame(rows)


def _value(question: str, x) -> str:
    return fmt.pct(x, 1) if question == "agree" else fmt.num(x, 2)


def paper_comparison(tests: pd.DataFrame, *, simulated: bool) -> pd.DataFrame:
    """This study's group means and Kruskal–Wallis P beside the paper's, formatted.

    Parameters
    ----------
    tests : from :func:`compare_groups`.
    simulated : whether the answers are simulated; the column names then say so.

    Returns
    -------
    One row per question, strings formatted by :mod:`prunecxr.fmt` (agreement as a
    percentage, ratings with 2 decimals).
    """
    ours = SIMULATED if simulated else "This study"
    paper = published().set_index("question")
    rows = []
    for _, t in tests.iterrows():
        q = t["question"]
        p = paper.loc[q]
        rows.append(
            {
                "Question": t["title"],
                "Paper: PIE": _value(q, p["pie"]),
                "Paper: non-PIE": _value(q, p["non_pie"]),
                "Paper: Kruskal–Wallis": fmt.pvalue(p["p_kruskal"]),
                f"{ours}: PIE": _value(q, t["mean_pie"]),
                f"{ours}: non-PIE": _value(q, t["mean_non_pie"]),
                f"{ours}: Kruskal–Wallis": fmt.pvalue(t["kw_p"]),
                f"{ours}: n (PIE / non-PIE)": f"{t['n_pie']} / {t['n_non_pie']}",
            }
        )
    return pd.DataFrame(rows)


def tests_table(tests: pd.DataFrame) -> pd.DataFrame:
    """The three tests per question, formatted (statistic and P)."""
    rows = []
    for _, t in tests.iterrows():
        rows.append(
            {
                "Question": t["title"],
                "PIE mean ± SD": f"{_value(t['question'], t['mean_pie'])} ± {_value(t['question'], t['sd_pie'])}",
                "non-PIE mean ± SD": (
                    f"{_value(t['question'], t['mean_non_pie'])} ± {_value(t['question'], t['sd_non_pie'])}"
                ),
                "Kruskal–Wallis": f"H = {fmt.num(t['kw_h'])}, {fmt.pvalue(t['kw_p'])}",
                "Mann–Whitney": f"U = {fmt.num(t['mwu_u'], 1)}, {fmt.pvalue(t['mwu_p'])}",
                "Welch's t": f"t = {fmt.num(t['welch_t'])}, {fmt.pvalue(t['welch_p'])}",
            }
        )
    return pd.DataFrame(rows)


def figure_data(tests: pd.DataFrame) -> pd.DataFrame:
    """What Fig. 6 plots, long format: ``question``, ``group``, ``n``, ``mean``, ``sd``,
    ``paper_mean``, ``kw_p``, ``source``."""
    paper = published().set_index("question")
    rows = []
    for _, t in tests.iterrows():
        for group, suffix, pcol in ((PIE, "pie", "pie"), (NON_PIE, "non_pie", "non_pie")):
            rows.append(
                {
                    "question": t["question"],
                    "group": group,
                    "n": int(t[f"n_{suffix}"]),
                    "mean": t[f"mean_{suffix}"],
                    "sd": t[f"sd_{suffix}"],
                    "paper_mean": paper.at[t["question"], pcol],
                    "kw_p": t["kw_p"],
                    "source": t["source"],
                }
            )
    return pd.DataFrame(rows)


def figure_6(tests: pd.DataFrame, *, simulated: bool) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 6: mean ± SD of each question for PIEs and non-PIEs, the paper's means beside.

    Parameters
    ----------
    tests : from :func:`compare_groups`.
    simulated : whether the answers are simulated; the title then begins with SIMULATED.

    Returns
    -------
    (figure, plotted data): the data are :func:`figure_data` of ``tests``.
    """
    data = figure_data(tests)
    by_q = {q: g.set_index("group") for q, g in data.groupby("question", sort=False)}
    subtitles = [
        f"{q.title}<br><sup>Kruskal–Wallis {fmt.pvalue(by_q[q.name]['kw_p'].iloc[0])}</sup>"
        for q in QUESTIONS
    ]
    fig = make_subplots(
        rows=1, cols=len(QUESTIONS), subplot_titles=subtitles, horizontal_spacing=0.08
    )
    groups = [PIE, NON_PIE]
    ours = "simulated" if simulated else "this study"
    for col, q in enumerate(QUESTIONS, start=1):
        g = by_q[q.name].loc[groups]
        fig.add_trace(
            go.Scatter(
                x=g["mean"],
                y=groups,
                mode="markers",
                name=f"{ours} (mean ± SD)",
                marker=dict(size=12, color="#1f4e79"),
                error_x=dict(type="data", array=g["sd"].fillna(0), thickness=2, width=6),
                customdata=np.stack([g["n"], g["sd"]], axis=-1),
                hovertemplate="%{y}: mean %{x:.2f}, SD %{customdata[1]:.2f}, n = %{customdata[0]}<extra></extra>",
                showlegend=col == 1,
                legendgroup="ours",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=g["paper_mean"],
                y=groups,
                mode="markers",
                name="Holste et al. 2023 (mean)",
                marker=dict(size=12, symbol="diamond-open", color="#c0392b", line=dict(width=2)),
                hovertemplate="%{y}: paper mean %{x}<extra></extra>",
                showlegend=col == 1,
                legendgroup="paper",
            ),
            row=1,
            col=col,
        )
        # the whole answer scale, widened where mean ± SD reaches beyond it
        low, high = (-0.05, 1.05) if q.name == "agree" else (0.8, 5.2)
        reach = pd.concat(
            [g["mean"] - g["sd"].fillna(0), g["mean"] + g["sd"].fillna(0), g["paper_mean"]]
        )
        pad = 0.05 * (high - low)
        rng = [min(low, float(reach.min()) - pad), max(high, float(reach.max()) + pad)]
        fig.update_xaxes(title_text=q.axis, range=rng, row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=headline("Fig. 6 — ratings of PIEs and non-PIEs (mean ± SD)", simulated=simulated),
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=150),
    )
    return fig, data
