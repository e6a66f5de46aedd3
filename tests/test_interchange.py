"""Predictions from anywhere (prunecxr.compress.interchange): the layout, every refusal, the import
and its command line."""

import json

import numpy as np
import pandas as pd
import pytest

from prunecxr import artifacts, config, paths
from prunecxr.compress import interchange
from prunecxr.compress.interchange import InterchangeError

CLASSES = ["Effusion", "Hernia", "No Finding"]
SEEDS = (0, 1)
LEVELS = (0.0, 0.5, 0.9)


def make_labels(n_train=6, n_test=8, seed=0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    frame = pd.DataFrame(
        {
            "image_id": [f"img-{i:03d}" for i in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
        }
    )
    for c in CLASSES:
        frame[c] = (rng.random(n) < 0.5).astype(int)
    frame.loc[n_train, CLASSES] = 1  # every class has a positive test image
    return frame


def make_predictions(labels, *, seeds=SEEDS, levels=LEVELS, seed=1):
    rng = np.random.default_rng(seed)
    test = labels[labels["split"] == "test"]["image_id"]
    rows = [
        (s, lv, i, c, float(rng.random()))
        for s in seeds
        for lv in levels
        for i in test
        for c in CLASSES
    ]
    return pd.DataFrame(rows, columns=list(interchange.PREDICTION_COLUMNS))


@pytest.fixture
def files(tmp_path):
    labels = make_labels()
    preds = make_predictions(labels)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path, labels, preds


def write(tmp_path, preds, name="preds.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        preds.to_parquet(path, index=False)
    else:
        preds.to_csv(path, index=False)
    return path


def assert_nothing_written(run="mine"):
    assert not paths.run_paths(run).root.exists()


@pytest.mark.parametrize("name", ["preds.csv", "preds.parquet"])
def test_import_of_a_long_table(files, name):
    tmp_path, labels, preds = files
    shuffled = preds.sample(frac=1.0, random_state=0)  # row order does not matter
    shuffled = pd.concat([preds.iloc[:3], shuffled]).drop_duplicates(
        ["seed", "level", "image_id", "class"]
    )
    path = interchange.import_predictions(
        "mine", write(tmp_path, shuffled, name), labels=tmp_path / "labels.csv", method="my_method"
    )
    probs, meta = artifacts.read_store("mine", "my_method")
    assert path == paths.run_paths("mine").probs("my_method")
    assert (
        meta["seeds"] == list(SEEDS)
        and meta["levels"] == list(LEVELS)
        and meta["classes"] == CLASSES
    )
    assert meta["origin"].startswith("imported from") and meta["origin"].endswith(name)
    test_ids = labels.loc[labels["split"] == "test", "image_id"].tolist()
    row = preds[
        (preds["seed"] == 1)
        & (preds["level"] == 0.5)
        & (preds["image_id"] == test_ids[3])
        & (preds["class"] == "Hernia")
    ]
    assert probs[1, 1, 3, 1] == np.float32(row["prob"].item())
    written = pd.read_parquet(paths.run_paths("mine").labels)
    assert list(written.columns) == ["image_id", "patient_id", "split", *CLASSES]
    assert (written["split"] == labels["split"]).all() and (
        written[CLASSES].dtypes == np.int8
    ).all()
    record = config.run_data("mine")
    assert record["source"] == "import" and record["n_images"] == {"train": 6, "test": 8}
    metrics = artifacts.read_metrics("mine", "my_method")
    assert len(metrics) == len(SEEDS) * len(LEVELS) * len(CLASSES) and metrics["ap"].notna().all()


def test_import_of_an_array_with_its_sidecar(files):
    tmp_path, labels, preds = files
    test_ids = labels.loc[labels["split"] == "test", "image_id"].tolist()
    rng = np.random.default_rng(3)
    array = rng.random((2, 3, len(test_ids), len(CLASSES))).astype(np.float32)
    order = [2, 0, 1]  # levels in another order: compression order is restored
    np.save(tmp_path / "probs.npy", array[:, order][:, :, ::-1])  # images reversed too
    sidecar = {
        "axes": ["seed", "level", "image", "class"],
        "seeds": [4, 7],
        "level_name": "bits",
        "level_unit": "bits per weight",
        "levels": [[32.0, 8.0, 4.0][i] for i in order],
        "classes": CLASSES,
        "image_ids": test_ids[::-1],
    }
    (tmp_path / "probs.json").write_text(json.dumps(sidecar))
    interchange.import_predictions(
        "mine", tmp_path / "probs.npy", labels=tmp_path / "labels.csv", method="quant"
    )
    probs, meta = artifacts.read_store("mine", "quant")
    assert (
        meta["level_name"] == "bits"
        and meta["levels"] == [32.0, 8.0, 4.0]
        and meta["seeds"] == [4, 7]
    )
    np.testing.assert_array_equal(probs, array)
    assert "bits" in artifacts.read_metrics("mine", "quant").columns


def test_labels_without_split_are_test_images(tmp_path):
    labels = make_labels(n_train=0)
    labels.drop(columns="split").to_parquet(tmp_path / "labels.parquet", index=False)
    path = write(tmp_path, make_predictions(labels))
    interchange.import_predictions("mine", path, labels=tmp_path / "labels.parquet")
    assert (pd.read_parquet(paths.run_paths("mine").labels)["split"] == "test").all()


# -- every refusal names the file, the row and the value, and writes nothing ---------------
def refuse(tmp_path, preds, match, *, labels="labels.csv", **options):
    path = write(tmp_path, preds)
    with pytest.raises(InterchangeError, match=match):
        interchange.import_predictions("mine", path, labels=tmp_path / labels, **options)
    assert_nothing_written()


def test_refuses_image_ids_that_are_not_the_labels_test_images(files):
    tmp_path, labels, preds = files
    bad = preds.copy()
    bad.loc[5, "image_id"] = "img-999"
    refuse(
        tmp_path,
        bad,
        r"preds.csv: row 6 has image_id 'img-999', which is not a test image of .*labels.csv \(not in it\)",
    )
    bad = preds.copy()
    bad.loc[7, "image_id"] = "img-000"  # a training image
    refuse(
        tmp_path,
        bad,
        r"row 8 has image_id 'img-000', which is not a test image .*\(a train image there\)",
    )


def test_refuses_missing_seeds_levels_and_images(files):
    tmp_path, labels, preds = files
    lacking = preds[~((preds["seed"] == 1) & (preds["level"] == 0.5))]
    refuse(
        tmp_path,
        lacking,
        r"preds.csv: seed 1 has no row at sparsity 0.5 \(its levels: \[0.0, 0.9\]\)",
    )
    last = labels.loc[labels["split"] == "test", "image_id"].iloc[-1]
    lacking = preds[~((preds["seed"] == 0) & (preds["level"] == 0.9) & (preds["image_id"] == last))]
    refuse(
        tmp_path,
        lacking,
        rf"seed 0 at sparsity 0.9 has 21 rows of 24 .* lacks image '{last}', class 'Effusion'",
    )
    refuse(tmp_path, preds[preds["level"] != 0.0], r"no row at the dense level \(sparsity 0\)")
    refuse(
        tmp_path, preds[preds["class"] != "Hernia"], r"no predictions for the classes \['Hernia'\]"
    )


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (-0.1, "-0.1"), (np.nan, "nan")])
def test_refuses_probabilities_outside_0_1_or_nan(files, value, shown):
    tmp_path, _, preds = files
    bad = preds.copy()
    bad.loc[11, "prob"] = value
    refuse(
        tmp_path, bad, rf"preds.csv: row 12 has prob {shown}; a probability is a number in \[0, 1\]"
    )


def test_refuses_text_where_a_number_belongs(files):
    tmp_path, _, preds = files
    bad = preds.astype({"prob": object})
    bad.loc[2, "prob"] = "high"
    refuse(tmp_path, bad, r"row 3, column 'prob' holds 'high', not a number")
    bad = preds.astype({"seed": float})
    bad.loc[4, "seed"] = 1.5
    refuse(tmp_path, bad, r"row 5 has seed 1.5; seeds are non-negative integers")
    bad = preds.copy()
    bad.loc[0, "level"] = 1.2
    refuse(tmp_path, bad, r"row 1: level must be in \[0, 1\]")


def test_refuses_a_class_order_that_differs_from_the_labels(files):
    tmp_path, _, preds = files
    order = {"Hernia": 0, "Effusion": 1, "No Finding": 2}
    swapped = preds.sort_values(["seed", "level", "image_id"], kind="stable")
    swapped = swapped.iloc[
        np.lexsort([swapped["class"].map(order).to_numpy(), np.arange(len(swapped)) // 3])
    ]
    refuse(
        tmp_path,
        swapped,
        r"lists the classes in the order \['Hernia', 'Effusion', 'No Finding'\], but .*labels.csv "
        r"in the order \['Effusion', 'Hernia', 'No Finding'\]",
    )
    bad = preds.copy()
    bad.loc[3, "class"] = "Pneumonia"
    refuse(tmp_path, bad, r"row 4 names the class 'Pneumonia', which .* does not have")


def test_refuses_duplicated_rows(files):
    tmp_path, _, preds = files
    doubled = pd.concat([preds, preds.iloc[[9]]], ignore_index=True)
    n = len(preds)
    refuse(
        tmp_path,
        doubled,
        rf"row 10 and row {n + 1} both give seed 0, level 0.0, image '.*', class 'Effusion'; "
        "each must appear once",
    )


def test_refuses_bad_label_files(files):
    tmp_path, labels, preds = files
    cases = [
        (
            labels.assign(Hernia=labels["Hernia"].where(labels.index != 3, 2)),
            r"row 4, class 'Hernia' holds 2; labels must be 0 or 1",
        ),
        (
            pd.concat([labels, labels.iloc[[2]]], ignore_index=True),
            r"image_id 'img-002' appears twice \(row 3 and row 15\)",
        ),
        (
            labels.assign(split=labels["split"].where(labels.index != 1, "holdout")),
            r"row 2 has split 'holdout'",
        ),
        (labels.drop(columns="image_id"), r"has no 'image_id' column"),
    ]
    for i, (table, match) in enumerate(cases):
        table.to_csv(tmp_path / f"labels{i}.csv", index=False)
        refuse(tmp_path, preds, rf"labels{i}.csv.*{match}", labels=f"labels{i}.csv")


def test_array_refusals_name_the_index_and_the_value(files):
    tmp_path, labels, _ = files
    test_ids = labels.loc[labels["split"] == "test", "image_id"].tolist()
    array = np.full((1, 2, len(test_ids), 3), 0.5, dtype=np.float32)
    sidecar = {
        "axes": ["seed", "level", "image", "class"],
        "seeds": [0],
        "level_name": "sparsity",
        "levels": [0.0, 0.5],
        "classes": CLASSES,
        "image_ids": test_ids,
    }

    def check(array, match, **change):
        np.save(tmp_path / "p.npy", array)
        (tmp_path / "p.json").write_text(json.dumps({**sidecar, **change}))
        with pytest.raises((InterchangeError, FileNotFoundError), match=match):
            interchange.import_predictions(
                "mine", tmp_path / "p.npy", labels=tmp_path / "labels.csv"
            )
        assert_nothing_written()

    bad = array.copy()
    bad[0, 1, 2, 1] = np.nan
    check(
        bad,
        rf"p.npy: \[0, 1, 2, 1\] \(seed 0, sparsity 0.5, image '{test_ids[2]}', class 'Hernia'\) holds nan",
    )
    check(
        array,
        r"lists the classes in the order \['Hernia', 'Effusion', 'No Finding'\]",
        classes=["Hernia", "Effusion", "No Finding"],
    )
    check(
        array,
        r"image_ids\[0\] is 'img-000', which is not a test image",
        image_ids=["img-000", *test_ids[1:]],
    )
    check(
        array, r"image_ids\[0\] and image_ids\[1\] are both", image_ids=[test_ids[1], *test_ids[1:]]
    )
    check(array, r"has shape \(1, 2, 8, 3\); .* describes \(2, 2, 8, 3\)", seeds=[0, 1])
    check(array, r"levels \[0.5, 0.9\] lack the dense level", levels=[0.5, 0.9])
    check(array, r"level_unit 'percent' is not the unit of sparsity", level_unit="percent")
    (tmp_path / "p.json").unlink()
    with pytest.raises(FileNotFoundError, match="needs its sidecar"):
        interchange.import_predictions("mine", tmp_path / "p.npy", labels=tmp_path / "labels.csv")


def test_a_run_with_labels_refuses_other_labels(files):
    tmp_path, labels, preds = files
    path = write(tmp_path, preds)
    interchange.import_predictions("mine", path, labels=tmp_path / "labels.csv", method="first")
    interchange.import_predictions("mine", path, method="second")  # the run's labels serve
    assert artifacts.methods_present("mine") == ["first", "second"]
    other = labels.assign(Hernia=1 - labels["Hernia"])
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(
        InterchangeError, match="already has .*labels.parquet, and .*other.csv differs"
    ):
        interchange.import_predictions("mine", path, labels=tmp_path / "other.csv", method="third")
    assert not paths.run_paths("mine").prune_dir("third").exists()


def test_the_import_command(files, prunecxr_home, capsys):
    from prunecxr.__main__ import main

    tmp_path, _, preds = files
    path = write(tmp_path, preds)
    bad = preds.copy()
    bad.loc[1, "prob"] = 2.0
    command = ["import", "--run", "cli", "--labels", str(tmp_path / "labels.csv")]
    assert main([*command, "--predictions", str(write(tmp_path, bad, "bad.csv"))]) == 2
    assert "bad.csv: row 2 has prob 2.0" in capsys.readouterr().err
    assert not (prunecxr_home / "runs" / "cli").exists()
    assert main([*command, "--predictions", str(path), "--method", "mine"]) == 0
    assert "--notebooks 04-07" in capsys.readouterr().out
    assert (prunecxr_home / "runs" / "cli" / "prune" / "mine" / "metrics.parquet").exists()
    assert "profile" not in artifacts.read_run("cli")
