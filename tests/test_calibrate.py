"""prunecxr.calibrate: the phantom's per-finding strengths fitted to published AUROCs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from prunecxr import calibrate, paths
from prunecxr.__main__ import main
from prunecxr.data import phantom, reference

CHEXNET = {  # Rajpurkar et al. 2017, Table 2, typed here to check the shipped file
    "Atelectasis": 0.8094,
    "Cardiomegaly": 0.9248,
    "Effusion": 0.8638,
    "Infiltration": 0.7345,
    "Mass": 0.8676,
    "Nodule": 0.7802,
    "Pneumonia": 0.7680,
    "Pneumothorax": 0.8887,
    "Consolidation": 0.7901,
    "Edema": 0.8878,
    "Emphysema": 0.9371,
    "Fibrosis": 0.8047,
    "Pleural Thickening": 0.8062,
    "Hernia": 0.9164,
}


def test_chexnet_table_is_the_published_one():
    assert reference.chexnet_auroc().to_dict() == CHEXNET


def test_targets_of_both_conditions():
    assert calibrate.target_auroc("calibrated") == {f: CHEXNET[f] for f in phantom.FINDINGS}
    equal = calibrate.target_auroc("equal")
    assert all(
        v == pytest.approx((0.8094 + 0.8638) / 2) for v in equal.values()
    )  # the median of 14
    with pytest.raises(ValueError, match="unknown phantom difficulty 'easy'"):
        calibrate.target_auroc("easy")


def test_separation_is_the_binormal_d_prime():
    assert calibrate.separation(0.76) == pytest.approx(math.sqrt(2) * stats.norm.ppf(0.76))
    assert calibrate.separation(0.2) == calibrate.separation(calibrate.AUROC_CLIP[0])  # clipped


def test_next_strength_by_hand():
    f = phantom.FINDINGS
    strength = {x: 2.0 for x in f}
    reached = {x: 0.76 for x in f}
    target = {x: 0.76 for x in f}
    target["Mass"] = 0.86
    reached["Hernia"] = 0.5  # unlearned: the step is capped at MAX_STEP
    out = calibrate.next_strength(strength, reached, target)
    d = lambda a: math.sqrt(2) * stats.norm.ppf(a)  # noqa: E731
    assert out["Infiltration"] == 2.0
    assert out["Mass"] == pytest.approx(2.0 * d(0.86) / d(0.76), abs=1e-4)  # slope 1: d' ∝ strength
    assert out["Hernia"] == pytest.approx(2.0 * calibrate.MAX_STEP)
    # with the iteration before, the secant slope: doubling the strength raised d' by 2^0.5
    previous = (
        {x: 1.0 for x in f},
        {x: float(stats.norm.cdf(d(0.76) / 2**0.5 / math.sqrt(2))) for x in f},
    )
    out2 = calibrate.next_strength(strength, reached, target, previous=previous)
    assert out2["Mass"] == pytest.approx(2.0 * (d(0.86) / d(0.76)) ** 2, abs=1e-3)


def test_recipe_is_the_profiles_and_refuses_typos():
    rec = calibrate.recipe("default")
    assert rec["model"] == "small_resnet" and rec["max_patients"] == 0
    assert calibrate.recipe("default", max_epochs=1)["max_epochs"] == 1
    with pytest.raises(ValueError, match=r"unknown recipe keys \['epochs'\]"):
        calibrate.recipe("default", epochs=1)
    with pytest.raises(ValueError, match="does not use the phantom"):
        calibrate.recipe("nih-cxr-lt")


def test_calibrate_writes_a_table_with_provenance(tmp_path):
    """Two tiny iterations (300 patients at 16 px, one epoch): the loop, the record and the file."""
    lines = []
    record = calibrate.calibrate(
        "equal",
        seeds=(0,),
        max_iterations=2,
        tolerance_mean=0.0,
        tolerance_max=0.0,
        recipe_overrides={"max_patients": 1500, "resolution": 16, "max_epochs": 1, "threads": 1},
        log=lines.append,
    )
    assert len(lines) == 2 and lines[0].startswith("[equal] iteration 0")
    prov = record["provenance"]
    assert prov["seeds"] == [0] and prov["recipe"]["resolution"] == 16 and not prov["converged"]
    assert [h["iteration"] for h in prov["iterations"]] == [0, 1]
    first, second = (h["strength"] for h in prov["iterations"])
    assert first == {f: phantom.UNCALIBRATED_STRENGTH for f in phantom.FINDINGS}
    assert second == calibrate.next_strength(
        first, prov["iterations"][0]["auroc"], record["target_auroc"]
    )
    assert record["strength"] == prov["iterations"][prov["chosen_iteration"]]["strength"]
    # each seed's result is kept: measuring the same table again reads it, training nothing
    kept = sorted((paths.cache_root() / "calibration").glob("*.json"))
    assert len(kept) == 2 and not any((paths.cache_root() / "calibration" / "work").iterdir())
    rec = calibrate.recipe("default", max_patients=1500, resolution=16, max_epochs=1, threads=1)
    again = calibrate.measure(first, recipe=rec, seeds=[0])
    assert again.set_index("class")["auroc"].loc[list(phantom.FINDINGS)].to_dict() == pytest.approx(
        prov["iterations"][0]["auroc"]
    )
    assert sorted((paths.cache_root() / "calibration").glob("*.json")) == kept
    path = calibrate.write_table(record, tmp_path)
    assert path.name == "phantom_difficulty_equal.json"
    assert json.loads(path.read_text())["strength"] == record["strength"]
    table = calibrate.compare(record)
    assert list(table["finding"]) == list(phantom.FINDINGS)
    assert np.allclose(table["difference"], table["reached_auroc"] - table["target_auroc"])


def test_shipped_tables_record_their_calibration():
    for condition in reference.CONDITIONS:
        record = reference.phantom_difficulty(condition)
        prov = record["provenance"]
        assert record["target_auroc"] == calibrate.target_auroc(condition)
        assert prov["renderer_version"] == phantom.RENDERER_VERSION
        today = calibrate.recipe(prov["profile"])  # the default recipe of today; threads and
        learned = [
            k for k in calibrate.RECIPE_KEYS if k not in calibrate.EXECUTION_KEYS
        ]  # device: rounding
        assert {
            k: prov["recipe"].get(k, today[k] if k == "pretrained" else None) for k in learned
        } == {k: today[k] for k in learned}
        chosen = prov["iterations"][prov["chosen_iteration"]]
        assert chosen["strength"] == record["strength"]
        assert {f: round(v, 4) for f, v in chosen["auroc"].items()} == record["reached_auroc"]


def test_cli_refuses_bad_arguments(capsys):
    assert main(["calibrate-phantom", "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate-phantom", "--condition", "hard"])
