"""Reader study (notebook 07): design, packets, response checks, join by code, statistics."""

import ast
import csv
import math
import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from prunecxr import artifacts, config, figures, fmt, paths
from prunecxr import reader_study as rs
from prunecxr.reader_study import answers as rs_answers
from prunecxr.reader_study import design as rs_design
from prunecxr.reader_study import packets as rs_packets
from prunecxr.reader_study import questions as rs_questions
from prunecxr.reader_study import results as rs_results

RUN = "rs"
CLASSES = ["Atelectasis", "Effusion", "No Finding"]


def make_run(n=120, *, pie_every=4, run=RUN, dataset="nih-phantom", size=16):
    """labels.parquet, run.json and pies.parquet of a small run; returns its test split."""
    rng = np.random.default_rng(0)
    ids = [f"{i:08d}_000.png" for i in range(n)]
    labels = pd.DataFrame(
        {"image_id": ids, "patient_id": [f"p{i}" for i in range(n)], "split": "test"}
    )
    for c in CLASSES:
        labels[c] = rng.integers(0, 2, n).astype("int8")
    rp = paths.run_paths(run)
    artifacts.write_parquet(rp.labels, labels)
    artifacts.write_json(
        rp.run_json,
        {
            "run": run,
            "parameters": {},
            "stages": {},
            "data": {"dataset": dataset, "synthetic": dataset == "nih-phantom"},
        },
    )
    pies = pd.DataFrame(
        {"image_id": ids, "spearman": rng.random(n), "is_pie": np.arange(n) % pie_every == 0}
    )
    artifacts.write_parquet(rp.pies("global_l1"), pies)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return SimpleNamespace(images=images, image_ids=ids)


def small_key(**kw):
    make_run()
    opts = dict(n_readers=3, images_per_reader=8, seed=1, study=RUN) | kw
    return rs.assign_images(rs.load_pies(RUN), **opts)


def write_csv(path, rows, columns=rs_answers.RESPONSE_COLUMNS):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def answer_rows(key, reader=None):
    """Full answers by code: PIEs 'yes'/1/5, non-PIEs 'no'/5/1 (so groups are recognisable)."""
    sub = key if reader is None else key[key["reader"] == reader]
    return [
        [r.reader, r.packet_id, r.code, *(("yes", 1, 5) if r.is_pie else ("no", 5, 1))]
        for r in sub.itertuples()
    ]


# -- design ------------------------------------------------------------------------------
def test_each_packet_is_half_pies_without_overlap():
    key = small_key()
    assert list(key.columns) == list(rs_design.KEY_COLUMNS)
    assert key.groupby("reader").size().tolist() == [8, 8, 8]
    assert key.groupby("reader")["is_pie"].sum().tolist() == [4, 4, 4]
    assert key["image_id"].is_unique  # no image shown to two readers
    assert key["code"].is_unique
    assert all(re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", c) for c in key["code"])
    for _, g in key.groupby("reader"):
        assert sorted(g["position"]) == list(range(1, 9))
        assert g["packet_id"].nunique() == 1
    truth = rs.load_pies(RUN).set_index("image_id")["is_pie"]
    assert (key["is_pie"].to_numpy() == truth.loc[key["image_id"]].to_numpy()).all()


def test_design_is_seeded_and_independent_of_row_order():
    make_run()
    pies = rs.load_pies(RUN)
    a = rs.assign_images(pies, n_readers=3, images_per_reader=8, seed=5)
    b = rs.assign_images(
        pies.sample(frac=1, random_state=3), n_readers=3, images_per_reader=8, seed=5
    )
    c = rs.assign_images(pies, n_readers=3, images_per_reader=8, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a["code"].equals(c["code"])
    assert not a["image_id"].equals(c["image_id"])


def test_order_is_shuffled_per_reader():
    key = small_key(n_readers=4, images_per_reader=10)
    patterns = {tuple(g.sort_values("position")["is_pie"]) for _, g in key.groupby("reader")}
    assert len(patterns) > 1  # neither PIEs first nor one fixed order for everyone


def test_codes_carry_no_information_about_the_image():
    make_run()
    pies = rs.load_pies(RUN)
    key = rs.assign_images(pies, n_readers=3, images_per_reader=8, seed=2)
    renamed = pies.assign(image_id="other-" + pies["image_id"])
    key2 = rs.assign_images(renamed, n_readers=3, images_per_reader=8, seed=2)
    # other image ids, same codes in the same places: codes are not derived from image ids
    assert key["code"].tolist() == key2["code"].tolist()
    assert (key["is_pie"] == key2["is_pie"]).all()
    for code, image in zip(key["code"], key["image_id"]):
        assert image.split("_")[0][-4:] not in code


def test_too_few_pies_names_the_parameters_and_allow_overlap():
    make_run(40, pie_every=4)  # 10 PIEs; 3 readers x 4 PIEs = 12 needed
    pies = rs.load_pies(RUN)
    with pytest.raises(
        ValueError, match=r"10 PIEs.*n_readers=3.*images_per_reader/2=4.*allow_overlap"
    ):
        rs.assign_images(pies, n_readers=3, images_per_reader=8, seed=0)
    key = rs.assign_images(pies, n_readers=3, images_per_reader=8, seed=0, allow_overlap=True)
    for _, g in key.groupby("reader"):
        assert g["image_id"].is_unique  # never twice to one reader
        assert g["is_pie"].sum() == 4
    shown = key[key["is_pie"]]["image_id"].value_counts()
    assert len(shown) == 10 and shown.max() - shown.min() <= 1  # spread as evenly as possible
    assert key[~key["is_pie"]]["image_id"].is_unique  # 30 non-PIEs: enough, so no overlap


def test_fewer_pies_than_one_packet_needs():
    make_run(12, pie_every=4)  # 3 PIEs
    with pytest.raises(ValueError, match=r"3 PIEs, fewer than images_per_reader/2 = 4"):
        rs.assign_images(rs.load_pies(RUN), n_readers=1, images_per_reader=8, allow_overlap=True)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"images_per_reader": 7}, "must be even"),
        ({"n_readers": 0}, "n_readers must be an integer >= 1"),
        ({"seed": -1}, "seed must be"),
        ({"images_per_reader": 4.0}, "images_per_reader must be an integer"),
    ],
)
def test_bad_design_parameters(kw, match):
    make_run()
    with pytest.raises(ValueError, match=match):
        rs.assign_images(rs.load_pies(RUN), **({"n_readers": 2, "images_per_reader": 4} | kw))


def test_missing_pies_lists_the_methods_that_have_them():
    make_run()
    with pytest.raises(FileNotFoundError, match=r"random.*notebook 06_pies.*'global_l1'"):
        rs.load_pies(RUN, method="random")


def test_duplicate_image_in_pies_is_refused():
    make_run()
    pies = rs.load_pies(RUN)
    with pytest.raises(ValueError, match="appears 2 times"):
        rs.assign_images(pd.concat([pies, pies.iloc[:1]]), n_readers=1, images_per_reader=2)


# -- packets ---------------------------------------------------------------------------
def _strip_images(text):
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)


def test_packets_are_self_contained_and_hide_pie_status():
    split = make_run()
    key = rs.assign_images(rs.load_pies(RUN), n_readers=3, images_per_reader=8, seed=1, study=RUN)
    written = rs.write_study(RUN, key, parameters={"seed": 1}, split=split)
    assert set(written) == {"reader-1", "reader-2", "reader-3"}
    labels = pd.read_parquet(paths.run_paths(RUN).labels).set_index("image_id")
    for reader, path in written.items():
        assert path == paths.run_paths(RUN).reader_packet(reader)
        text = path.read_text()
        mine = key[key["reader"] == reader]
        assert text.count("data:image/png;base64,") == 8
        bare = _strip_images(text)
        assert "pie" not in bare.lower()
        assert "global_l1" not in bare
        for image_id in key["image_id"]:
            assert image_id not in bare and image_id.split("_")[0] not in bare
        for code in key["code"]:
            assert (code in bare) == (code in set(mine["code"]))
        # nothing fetched from elsewhere: no URL, no external script or stylesheet
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", bare)
        assert "<link" not in bare and "@import" not in bare
        # codes appear in packet order, each with its labels
        order = [m for m in re.findall(r'data-code="([^"]+)"', bare)]
        assert order == mine.sort_values("position")["code"].tolist()
        first = mine.sort_values("position").iloc[0]
        shown = [c for c in CLASSES if labels.at[first["image_id"], c] == 1]
        section = bare.split(f'data-code="{first["code"]}"')[1].split("</section>")[0]
        assert ("(no label)" if not shown else ", ".join(shown)) in section
        assert "PHANTOM images" in bare  # the run is on synthetic pixels
    pd.testing.assert_frame_equal(rs.read_key(RUN), key)
    manifest = artifacts.read_json(paths.run_paths(RUN).reader_manifest)
    assert manifest["parameters"] == {"seed": 1}
    assert manifest["n_distinct_images"] == 24 and manifest["max_readers_per_image"] == 1
    assert (
        manifest["readers"]["reader-2"]["packet_id"]
        == key[key["reader"] == "reader-2"]["packet_id"].iloc[0]
    )


def test_packets_of_dropped_readers_are_removed():
    split = make_run()
    pies = rs.load_pies(RUN)
    rs.write_study(RUN, rs.assign_images(pies, n_readers=3, images_per_reader=4), split=split)
    rs.write_study(RUN, rs.assign_images(pies, n_readers=2, images_per_reader=4), split=split)
    folder = paths.run_paths(RUN).reader_packet("x").parent
    assert sorted(p.name for p in folder.iterdir()) == ["reader-1.html", "reader-2.html"]


def test_a_key_with_real_answers_is_not_overwritten():
    split = make_run()
    pies = rs.load_pies(RUN)
    key = rs.assign_images(pies, n_readers=2, images_per_reader=4, seed=0)
    rs.write_study(RUN, key, split=split)
    write_csv(paths.run_paths(RUN).reader_responses / "reader-1.csv", answer_rows(key, "reader-1"))
    rs.write_study(RUN, key, split=split)  # same design: fine
    with pytest.raises(FileExistsError, match="holds readers' answers"):
        rs.write_study(
            RUN, rs.assign_images(pies, n_readers=2, images_per_reader=4, seed=1), split=split
        )


def test_images_missing_from_the_split_are_named():
    split = make_run()
    key = small_key()
    short = SimpleNamespace(images=split.images[:5], image_ids=split.image_ids[:5])
    with pytest.raises(ValueError, match="not in the test split"):
        rs.write_study(RUN, key, split=short)


def test_packet_metadata_cannot_close_its_script():
    item = rs_packets.PacketItem(
        code="AAAA-BBBB",
        labels=("</script><b>x",),
        png=figures.png_base64(np.zeros((4, 4), np.uint8)),
    )
    text = rs_packets.render_packet([item], reader="r</script>", packet_id="p")
    assert text.count("</script>") == 2  # only the two real script elements close
    assert "&lt;/script&gt;&lt;b&gt;x" in text


# -- reading responses -------------------------------------------------------------------
@pytest.fixture
def study():
    split = make_run()
    key = rs.assign_images(rs.load_pies(RUN), n_readers=3, images_per_reader=8, seed=1, study=RUN)
    rs.write_study(RUN, key, split=split)
    return rs.read_key(RUN)


def test_join_is_by_code_not_by_row_position(study, tmp_path):
    rows = answer_rows(study)
    rng = np.random.default_rng(0)
    rng.shuffle(rows)  # rows of all readers mixed, in random order, over two files
    files = [write_csv(tmp_path / "a.csv", rows[:10]), write_csv(tmp_path / "b.csv", rows[10:])]
    answers = rs.read_responses(files, study)
    assert len(answers) == 24
    merged = answers.merge(study, on="code", suffixes=("", "_key"))
    assert (merged["image_id"] == merged["image_id_key"]).all()
    assert (merged["is_pie"] == merged["is_pie_key"]).all()
    pie = answers[answers["is_pie"]]
    non = answers[~answers["is_pie"]]
    assert (
        (pie["agree"] == 1).all() and (pie["quality"] == 1).all() and (pie["difficulty"] == 5).all()
    )
    assert (
        (non["agree"] == 0).all() and (non["quality"] == 5).all() and (non["difficulty"] == 1).all()
    )
    assert (answers["group"] == np.where(answers["is_pie"], "PIE", "non-PIE")).all()
    # the same answers in key order give the same table
    ordered = rs.read_responses([write_csv(tmp_path / "c.csv", answer_rows(study))], study)
    cols = ["reader", "code", "image_id", "is_pie", "agree", "quality", "difficulty"]
    pd.testing.assert_frame_equal(answers[cols], ordered[cols])


def test_partial_answers_are_kept_as_missing(study, tmp_path):
    rows = answer_rows(study, "reader-1")
    rows[0][3:] = ["", "", ""]
    rows[1][4] = ""
    answers = rs.read_responses([write_csv(tmp_path / "r1.csv", rows)], study)
    assert answers["agree"].isna().sum() == 1 and answers["quality"].isna().sum() == 2
    cov = rs.coverage(answers, study)
    assert cov.set_index("reader").loc["reader-1"].tolist() == [8, 8, 6]
    assert cov.set_index("reader").loc["reader-3"].tolist() == [8, 0, 0]


def test_csv_without_packet_id_and_with_excel_bom_is_read(study, tmp_path):
    rows = [[r[0], *r[2:]] for r in answer_rows(study, "reader-2")]
    path = tmp_path / "bom.csv"
    write_csv(path, rows, columns=["reader", "code", "agree", "quality", "difficulty"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"yes", b" YES "))
    answers = rs.read_responses([path], study)
    assert len(answers) == 8 and answers["agree"].notna().all()


def _edit(study, tmp_path, name, change):
    rows = answer_rows(study, "reader-1")
    change(rows)
    return write_csv(tmp_path / name, rows)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda rows: rows[2].__setitem__(2, "ZZZZ-ZZZZ"),
            r"bad\.csv, row 4: unknown code 'ZZZZ-ZZZZ'",
        ),
        (lambda rows: rows[0].__setitem__(2, ""), r"bad\.csv, row 2: empty code"),
        (
            lambda rows: rows[1].__setitem__(3, "maybe"),
            r"bad\.csv, row 3: agree = 'maybe' is not yes or no",
        ),
        (
            lambda rows: rows[3].__setitem__(4, "6"),
            r"bad\.csv, row 5: quality = '6' is not an integer from 1 to 5",
        ),
        (lambda rows: rows[3].__setitem__(4, "3.5"), r"row 5: quality = '3.5' is not an integer"),
        (
            lambda rows: rows[7].__setitem__(5, "0"),
            r"row 9: difficulty = '0' is not an integer from 1 to 5",
        ),
        (lambda rows: rows[7].__setitem__(5, "hard"), r"row 9: difficulty = 'hard'"),
        (
            lambda rows: rows.append(list(rows[4])),
            r"bad\.csv, row 10: code '[A-Z0-9-]+' answered again \(first in .*bad\.csv, row 6\)",
        ),
        (
            lambda rows: rows[0].__setitem__(0, "reader-2"),
            r"row 2: code .* belongs to the packet of 'reader-1', but the row says reader 'reader-2'",
        ),
        (
            lambda rows: rows[0].__setitem__(1, "rs:reader-1:0000000000"),
            r"row 2: packet_id .* is not the current packet",
        ),
    ],
    ids=[
        "unknown-code",
        "empty-code",
        "agree",
        "quality-high",
        "quality-fraction",
        "difficulty-low",
        "difficulty-text",
        "duplicate",
        "other-reader",
        "old-packet",
    ],
)
def test_malformed_responses_name_file_and_row(study, tmp_path, change, match):
    path = _edit(study, tmp_path, "bad.csv", change)
    with pytest.raises(rs.ResponseError, match=match):
        rs.read_responses([path], study)


def test_duplicate_across_files(study, tmp_path):
    a = write_csv(tmp_path / "first.csv", answer_rows(study, "reader-1"))
    b = write_csv(tmp_path / "second.csv", answer_rows(study, "reader-1")[3:4])
    with pytest.raises(
        rs.ResponseError,
        match=r"second\.csv, row 2: .* answered again \(first in .*first\.csv, row 5\)",
    ):
        rs.read_responses([a, b], study)


def test_reader_who_answered_nothing(study, tmp_path):
    rows = [[r[0], r[1], r[2], "", "", ""] for r in answer_rows(study, "reader-3")]
    ok = write_csv(tmp_path / "ok.csv", answer_rows(study, "reader-1"))
    empty = write_csv(tmp_path / "blank.csv", rows)
    with pytest.raises(rs.ResponseError, match=r"blank\.csv: reader 'reader-3' answered nothing"):
        rs.read_responses([ok, empty], study)


def test_header_only_file_and_missing_columns_and_no_files(study, tmp_path):
    header_only = write_csv(tmp_path / "header.csv", [])
    with pytest.raises(rs.ResponseError, match=r"header\.csv: no rows"):
        rs.read_responses([header_only], study)
    cols = write_csv(
        tmp_path / "cols.csv", [["reader-1", "x", "yes"]], columns=["reader", "code", "agree"]
    )
    with pytest.raises(
        rs.ResponseError, match=r"cols\.csv: missing column\(s\) \['quality', 'difficulty'\]"
    ):
        rs.read_responses([cols], study)
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(rs.ResponseError, match=r"zero\.csv: cannot be read as CSV"):
        rs.read_responses([tmp_path / "zero.csv"], study)
    with pytest.raises(rs.ResponseError, match="no response file"):
        rs.read_responses([], study)


def test_every_problem_is_reported_at_once(study, tmp_path):
    def change(rows):
        rows[0][3] = "x"
        rows[1][4] = "9"
        rows[2][2] = "NOPE-NOPE"

    path = _edit(study, tmp_path, "many.csv", change)
    with pytest.raises(rs.ResponseError) as err:
        rs.read_responses([path], study)
    assert len(err.value.problems) == 3
    assert [re.search(r"row (\d+)", p).group(1) for p in err.value.problems] == ["2", "3", "4"]


# -- statistics ----------------------------------------------------------------------------
def _kruskal_reference(a, b):
    """H with the tie correction, from the textbook formula."""
    x = np.concatenate([a, b])
    ranks = scipy.stats.rankdata(x)
    n = len(x)
    h = 12 / (n * (n + 1)) * (
        ranks[: len(a)].sum() ** 2 / len(a) + ranks[len(a) :].sum() ** 2 / len(b)
    ) - 3 * (n + 1)
    _, counts = np.unique(x, return_counts=True)
    return h / (1 - (counts**3 - counts).sum() / (n**3 - n))


def _toy_answers(pie, non):
    rows = []
    for flag, values in ((True, pie), (False, non)):
        for v in values:
            rows.append(
                {
                    "reader": "reader-1",
                    "is_pie": flag,
                    "agree": float(v > 2),
                    "quality": float(v),
                    "difficulty": float(6 - v),
                    "source": "readers",
                }
            )
    return pd.DataFrame(rows)


def test_compare_groups_on_a_hand_computed_case():
    pie, non = [1, 2, 2, 3, 4], [3, 4, 4, 5, 5, 5]
    tests = rs.compare_groups(_toy_answers(pie, non)).set_index("question")
    q = tests.loc["quality"]
    assert q["n_pie"] == 5 and q["n_non_pie"] == 6
    assert q["mean_pie"] == pytest.approx(2.4) and q["mean_non_pie"] == pytest.approx(26 / 6)
    assert q["sd_pie"] == pytest.approx(np.std(pie, ddof=1))
    assert q["kw_h"] == pytest.approx(
        _kruskal_reference(np.array(pie, float), np.array(non, float))
    )
    assert q["kw_p"] == pytest.approx(scipy.stats.chi2.sf(q["kw_h"], 1))
    assert q["mwu_p"] == pytest.approx(
        scipy.stats.mannwhitneyu(pie, non, alternative="two-sided").pvalue
    )
    assert q["welch_t"] == pytest.approx(scipy.stats.ttest_ind(pie, non, equal_var=False).statistic)
    assert q["welch_t"] < 0
    d = tests.loc["difficulty"]  # 6 - v: mirrored, same H and P
    assert d["kw_h"] == pytest.approx(q["kw_h"]) and d["welch_t"] == pytest.approx(-q["welch_t"])
    assert tests.loc["agree", "mean_pie"] == pytest.approx(0.4)


def test_tests_are_nan_when_undefined():
    tests = rs.compare_groups(_toy_answers([3, 3, 3], [3, 3])).set_index("question")
    assert tests[["kw_p", "mwu_p", "welch_p"]].isna().all().all()
    assert tests.loc["quality", "mean_pie"] == 3
    one = rs.compare_groups(_toy_answers([1], [2, 3])).set_index("question")
    assert math.isnan(one.loc["quality", "kw_h"]) and math.isnan(one.loc["quality", "sd_pie"])


def test_group_labels_come_from_is_pie_not_from_order():
    answers = _toy_answers([1, 1, 2], [5, 5, 4])
    shuffled = answers.sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(rs.compare_groups(answers), rs.compare_groups(shuffled))


# -- simulation --------------------------------------------------------------------------
def test_simulation_is_seeded_in_range_and_follows_its_pie_effect():
    make_run(400)
    key = rs.assign_images(rs.load_pies(RUN), n_readers=5, images_per_reader=40, seed=0)
    a = rs_answers.simulate_responses(key, seed=3)
    pd.testing.assert_frame_equal(a, rs_answers.simulate_responses(key, seed=3))
    assert not a.equals(rs_answers.simulate_responses(key, seed=4))
    assert list(a.columns) == list(rs_answers.RESPONSE_COLUMNS)
    assert set(a["agree"]) <= {"yes", "no"}
    assert a["quality"].between(1, 5).all() and a["difficulty"].between(1, 5).all()
    strong = rs_answers.simulate_responses(key, seed=3, model=rs.SimulationModel(pie_effect=2.0))
    joined = strong.merge(key[["code", "is_pie"]], on="code")
    means = joined.groupby("is_pie")[["quality", "difficulty"]].mean()
    assert means.at[True, "difficulty"] > means.at[False, "difficulty"] + 1
    assert means.at[True, "quality"] < means.at[False, "quality"] - 1


def test_collect_responses_prefers_real_answers(study, tmp_path):
    rp = paths.run_paths(RUN)
    sim = rs.collect_responses(RUN, study, seed=0)
    assert sim.simulated and sim.folder == rp.reader_simulated and len(sim.files) == 3
    answers = rs.read_responses(sim.files, study, source="simulated")  # the same checks pass
    assert len(answers) == 24 and (answers["source"] == "simulated").all()
    write_csv(rp.reader_responses / "r1.csv", answer_rows(study, "reader-1"))
    real = rs.collect_responses(RUN, study)
    assert not real.simulated and real.files == (rp.reader_responses / "r1.csv",)
    elsewhere = write_csv(tmp_path / "in" / "x.csv", answer_rows(study, "reader-2"))
    named = rs.collect_responses(RUN, study, responses_dir=str(elsewhere.parent))
    assert named.files == (elsewhere,)
    with pytest.raises(FileNotFoundError, match="responses_dir='nothing'.*holds no .csv"):
        rs.collect_responses(RUN, study, responses_dir="nothing")


# -- presentation ------------------------------------------------------------------------
def test_published_values_come_from_the_data_table_with_source():
    pub = rs_results.published().set_index("question")
    assert list(pub.index) == list(rs_questions.QUESTION_NAMES)
    assert pub["source"].str.contains("Holste").all()
    assert (pub[["pie", "non_pie", "p_kruskal"]].notna()).all().all()


def test_paper_comparison_and_figure_say_simulated():
    tests = rs.compare_groups(_toy_answers([1, 2, 2, 3, 4], [3, 4, 4, 5, 5, 5]))
    sim = rs.paper_comparison(tests, simulated=True)
    real = rs.paper_comparison(tests, simulated=False)
    assert any(c.startswith("SIMULATED") for c in sim.columns)
    assert not any("SIMULATED" in c for c in real.columns)
    pub = rs_results.published().set_index("question")
    row = real.set_index("Question").loc["Label agreement"]
    assert row["Paper: PIE"] == fmt.pct(pub.at["agree", "pie"], 1)
    assert row["Paper: Kruskal–Wallis"] == fmt.pvalue(pub.at["agree", "p_kruskal"])
    assert row["This study: PIE"] == fmt.pct(0.4, 1)
    data = rs_results.figure_data(tests)
    assert set(data["group"]) == {"PIE", "non-PIE"} and len(data) == 6
    fig, plotted = rs.figure_6(tests, simulated=True)
    assert fig.layout.title.text.startswith("SIMULATED")
    pd.testing.assert_frame_equal(plotted, data)
    assert "SIMULATED" not in rs.figure_6(tests, simulated=False)[0].layout.title.text
    assert rs.headline("x", simulated=True).startswith("SIMULATED")
    assert len(rs.tests_table(tests)) == 3


def test_write_results_follows_the_layout(study):
    answers = rs.read_responses(rs.collect_responses(RUN, study).files, study, source="simulated")
    tests = rs.compare_groups(answers)
    out = rs.write_results(RUN, answers, tests)
    rp = paths.run_paths(RUN)
    assert out == {"answers": rp.reader_answers, "tests": rp.reader_tests}
    back = pd.read_parquet(rp.reader_tests)
    assert list(back["question"]) == list(rs_questions.QUESTION_NAMES)
    for col in (
        "mean_pie",
        "sd_pie",
        "mean_non_pie",
        "sd_non_pie",
        "kw_h",
        "kw_p",
        "mwu_u",
        "mwu_p",
        "welch_t",
        "welch_p",
        "source",
    ):
        assert col in back.columns
    assert (back["source"] == "simulated").all()


# -- the notebook --------------------------------------------------------------------------
NOTEBOOK = paths.notebooks_dir() / "07_reader_study.ipynb"


def test_notebook_follows_the_conventions():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = code[0]
    assert "parameters" in params.metadata.get("tags", [])
    values = {}
    for line in params.source.splitlines():
        assert re.fullmatch(r"\w+: \w+ = .+  # .+", line), line
        node = ast.parse(line.split("  #")[0]).body[0]
        assert isinstance(node, ast.AnnAssign)
        values[node.target.id] = ast.literal_eval(node.value)
    default = config.load_profile("default")
    assert values["run"] == "default"
    for name, value in values.items():
        if name != "run":
            assert default[name] == value, name
        for profile in config.profiles().values():
            assert name in profile, (name, profile["run"])
    assert code[1].source.startswith("import prunecxr as px")
    assert 'px.start_stage("07_reader_study"' in code[1].source.replace("\n    ", "")
    assert code[-1].source.strip() == 'px.finish_stage("07_reader_study", run=run)'
    for cell in code:
        tree = ast.parse(cell.source)
        assert not any(
            isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)
        )
    for before, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code" and cell is not params and "finish_stage" not in cell.source:
            assert before.cell_type == "markdown" or before is params, cell.source[:40]
    text = "\n".join(c.source for c in code)
    assert 'publish(fig6, "fig6_reader_study", run=run' in text
    assert text.count("png_status()") == 1


def test_lower_case_codes_and_short_rows(study, tmp_path):
    rows = answer_rows(study, "reader-1")
    rows[0][2] = rows[0][2].lower()
    path = write_csv(tmp_path / "short.csv", rows)
    path.write_text(path.read_text() + f"reader-1,{rows[0][1]}\n")  # a row cut short
    with pytest.raises(rs.ResponseError, match=r"short\.csv, row 10: empty code") as err:
        rs.read_responses([path], study)
    assert len(err.value.problems) == 1  # the lower-case code was accepted


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_packets_from_the_run_image_cache():
    """With no split given, the images come from prunecxr.data.open_split (phantom run)."""
    from prunecxr.data import datasets as data

    data.prepare_run("ph", dataset="nih-phantom", resolution=32, max_patients=120)
    test = data.open_split("ph", "test")
    is_pie = np.arange(len(test.image_ids)) % 5 == 0
    artifacts.write_parquet(
        paths.run_paths("ph").pies("global_l1"),
        pd.DataFrame({"image_id": test.image_ids, "spearman": 0.0, "is_pie": is_pie}),
    )
    key = rs.assign_images(rs.load_pies("ph"), n_readers=2, images_per_reader=6, seed=0, study="ph")
    packets = rs.write_study("ph", key)
    text = packets["reader-2"].read_text()
    import base64
    import io as bio

    from PIL import Image

    first = key[key["reader"] == "reader-2"].sort_values("position").iloc[0]
    data_uri = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    shown = np.asarray(Image.open(bio.BytesIO(base64.b64decode(data_uri))))
    index = list(test.image_ids).index(first["image_id"])
    assert (shown == np.asarray(test.images[index])).all()  # the right image, first in the packet


def test_real_data_packets_carry_no_phantom_notice():
    split = make_run(dataset="nih-cxr-lt")
    key = rs.assign_images(rs.load_pies(RUN), n_readers=1, images_per_reader=2)
    text = rs.write_study(RUN, key, split=split)["reader-1"].read_text()
    assert "PHANTOM" not in _strip_images(text)
