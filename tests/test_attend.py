"""Notebook 09's room: HTL images, the up-weighted loss, CAMs and their scores, paired statistics."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from conftest import tiny_weigher
from prunecxr import artifacts, models, paths, stats
from prunecxr import train as T
from prunecxr.analysis.pies import n_pies
from prunecxr.attend import cam, compare, htl, weights
from prunecxr.train import loop
from prunecxr.train.feed import DeviceSplit

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _config(**kw):
    base = dict(
        model="small_resnet", pretrained=False, max_epochs=3, patience=3, batch_size=32, lr=1e-3
    )
    base.update(kw)
    return T.TrainConfig(**base)


# -- the up-weighted loss ------------------------------------------------------------------


def test_the_htl_weighted_loss_is_the_hand_computed_weighted_bce():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0], [-3.0, 1.5]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    flags = np.array([False, True, False])
    w = weights.image_weights(flags, 3.0)
    assert w.tolist() == [1.0, 3.0, 1.0]

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    hand = (
        sum(
            w[i].item() * bce(logits[i, c].item(), labels[i, c].item())
            for i in range(3)
            for c in range(2)
        )
        / 6
    )
    assert loop.weighted_bce(logits, labels, w).item() == pytest.approx(hand, rel=1e-6)
    # per-label weights [N, C] (class-balanced) weigh each entry
    wc = torch.tensor([[1.0, 2.0], [0.5, 1.0], [1.0, 4.0]])
    hand_c = (
        sum(
            wc[i, c].item() * bce(logits[i, c].item(), labels[i, c].item())
            for i in range(3)
            for c in range(2)
        )
        / 6
    )
    assert loop.weighted_bce(logits, labels, wc).item() == pytest.approx(hand_c, rel=1e-6)
    # weights of 1 give the plain loss
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert loop.weighted_bce(logits, labels, torch.ones(3)).item() == pytest.approx(
        plain.item(), rel=1e-6
    )


def test_the_weights_reach_the_training_step(arrays):
    tr_x, tr_y, _, _ = arrays
    torch.manual_seed(0)
    net = models.create_model("small_resnet", tr_y.shape[1])
    before = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    split = DeviceSplit(tr_x, tr_y, torch.device("cpu"))
    net.eval()  # BatchNorm statistics stay: only the loss's gradients could move the weights
    loss = loop.train_epoch(
        net,
        opt,
        split,
        torch.Generator().manual_seed(0),
        config=_config(augment=False),
        device=torch.device("cpu"),
        progress=False,
        desc="",
        weights=torch.zeros(len(tr_x)),
    )
    assert loss == 0.0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items() if k in before)
    with pytest.raises(ValueError, match=r"shape \(96,\) or \(96, 4\); got \(5,\)"):
        loop.check_weights(torch.ones(5), 96, 4)
    with pytest.raises(ValueError, match="finite and non-negative"):
        loop.check_weights(-torch.ones(96), 96, 4)


def test_class_balanced_weights_are_cuis_effective_numbers():
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]])
    beta = 0.9
    alpha = np.array([(1 - beta) / (1 - beta**n) for n in (3, 1, 1)])
    alpha /= alpha.mean()
    w = weights.class_balanced_weights(y, beta=beta).numpy()
    np.testing.assert_allclose(w, np.where(y == 1, alpha, 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"balance_beta must be in \[0, 1\); got 1"):
        weights.class_balanced_weights(y, beta=1)


def test_the_random_control_attends_as_many_images_as_htl_drawn_per_seed_and_epoch():
    ids = [f"i{k}" for k in range(200)]
    rnd = weights.RandomHTL("r", ids, 2.0, 0.05)
    a, b = rnd.flags(0, 1), rnd.flags(0, 1)
    assert a.sum() == n_pies(200, 0.05) == 10 and np.array_equal(a, b)
    assert not np.array_equal(a, rnd.flags(0, 2)) and not np.array_equal(a, rnd.flags(1, 1))
    assert rnd(None, 0, 0) is None  # the first epoch is plain
    w = rnd(None, 0, 1)
    assert sorted(set(w.tolist())) == [1.0, 2.0] and int((w == 2).sum()) == 10
    assert paths.run_paths("r").attend_epoch(0, 1).exists()
    with pytest.raises(ValueError, match="unknown attend arm 'focal'"):
        weights.create_weigher(
            "focal",
            run="r",
            images=None,
            labels=None,
            image_ids=ids,
            weight=2,
            sparsity=0.5,
            fraction=0.05,
            beta=0.99,
            batch_size=8,
        )
    with pytest.raises(ValueError, match="attend_weight must be a number >= 1"):
        weights.check_weight(0.5)


def test_htl_are_the_images_whose_pruned_ranking_disagrees_most():
    dense = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.2, 0.3, 0.4], [0.5, 0.6, 0.7]])
    pruned = np.array([[0.8, 0.4, 0.2], [0.1, 0.5, 0.9], [0.3, 0.2, 0.4], [0.5, 0.6, 0.7]])
    table = htl.disagreement(dense, pruned, ["a", "b", "c", "d"], fraction=0.5)
    np.testing.assert_allclose(
        table["spearman"], [scipy.stats.spearmanr(d, p)[0] for d, p in zip(dense, pruned)]
    )
    assert table["htl"].tolist() == [False, True, True, False]  # rho -1 and 0.5 are the lowest two


def test_adaptive_htl_prunes_a_copy_and_leaves_the_model_alone(arrays):
    tr_x, tr_y, _, _ = arrays
    torch.manual_seed(0)
    net = models.create_model("small_resnet", tr_y.shape[1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = [str(k) for k in range(len(tr_x))]
    table = htl.adaptive_scores(
        net, tr_x, ids, sparsity=0.5, fraction=0.1, batch_size=32, device="cpu"
    )
    assert int(table["htl"].sum()) == n_pies(len(tr_x), 0.1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert table["spearman"][table["htl"]].max() <= table["spearman"][~table["htl"]].min()


def test_an_attended_population_resumes_to_the_uninterrupted_weights(arrays):
    tr_x, tr_y, va_x, va_y = arrays

    def fit(run, weigher):
        w, attention = weigher
        return T.fit_population(
            tr_x,
            tr_y,
            va_x,
            va_y,
            seeds=[0],
            config=_config(),
            run=run,
            device="cpu",
            threads=1,
            progress=False,
            weigher=w,
            attention=attention,
        )

    def make(run):
        return tiny_weigher("htl", run, arrays)

    fit("whole", make("whole"))
    w, attention = make("cut")
    calls = []

    def crash_once(net, seed, epoch):
        calls.append(epoch)
        if epoch == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt  # after epoch 2's resume point
        return w(net, seed, epoch)

    with pytest.raises(KeyboardInterrupt):
        fit("cut", (crash_once, attention))
    assert paths.run_paths("cut").train_state(0).exists()
    assert list(fit("cut", (crash_once, attention))["status"]) == ["resumed"]
    a = torch.load(paths.run_paths("whole").checkpoint(0), weights_only=True)
    b = torch.load(paths.run_paths("cut").checkpoint(0), weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for e in (1, 2):
        assert artifacts.read_parquet(paths.run_paths("whole").attend_epoch(0, e)).equals(
            artifacts.read_parquet(paths.run_paths("cut").attend_epoch(0, e))
        )
    assert artifacts.read_train_record("cut")["attention"]["arm"] == "htl"
    # the attended population is not the plain one: a plain fit of it is refused
    with pytest.raises(ValueError, match="attention"):
        T.fit_population(
            tr_x,
            tr_y,
            va_x,
            va_y,
            seeds=[1],
            config=_config(),
            run="cut",
            device="cpu",
            threads=1,
            progress=False,
        )


def test_arms_share_their_plain_first_epoch_through_a_branch_point(arrays):
    """Every arm's first epoch is the plain one: trained once per seed, the others start from
    its branch point, and end with the weights they reach training it themselves."""
    tr_x, tr_y, va_x, va_y = arrays
    shared = paths.home() / "shared-branch"

    def fit(run, arm, branch, threads=1):
        w, attention = tiny_weigher(arm, run, arrays)
        return T.fit_population(
            tr_x,
            tr_y,
            va_x,
            va_y,
            seeds=[0, 1],
            config=_config(),
            run=run,
            device="cpu",
            threads=threads,
            progress=False,
            weigher=w,
            attention=attention,
            branch=None if branch is None else T.checkpoints.Branch(branch),
        )

    assert list(fit("first", "htl", shared)["status"]) == ["trained", "trained"]
    points = sorted(p.name for p in shared.iterdir() if p.suffix == ".pt")
    assert points == ["seed-0-epoch-1.pt", "seed-1-epoch-1.pt"]
    for arm in ("random", "balanced"):
        assert list(fit(f"{arm}-branched", arm, shared)["status"]) == ["branched"] * 2
        assert list(fit(f"{arm}-alone", arm, None)["status"]) == ["trained"] * 2
        for s in (0, 1):
            a, b = (
                torch.load(paths.run_paths(r).checkpoint(s), weights_only=True)
                for r in (f"{arm}-branched", f"{arm}-alone")
            )
            assert all(torch.equal(a[k], b[k]) for k in a)
            assert artifacts.read_history(f"{arm}-branched", s).equals(
                artifacts.read_history(f"{arm}-alone", s).assign(
                    seconds=artifacts.read_history(f"{arm}-branched", s)["seconds"]
                )
            )
    # the balanced arm's first epoch is the plain one too: its epoch-1 loss is the htl arm's
    first_loss = artifacts.read_history("first", 0)["train_loss"][0]
    assert artifacts.read_history("balanced-alone", 0)["train_loss"][0] == first_loss
    # a branch point made with another thread count rounds differently: not used, and remade
    assert list(fit("two-threads", "random", shared, threads=2)["status"]) == ["trained"] * 2
    point = torch.load(shared / "seed-0-epoch-1.pt", weights_only=True)
    assert point["execution"][1] == 2 and "attention" not in point
    # a population whose first epoch is weighted is not plain training: it writes no branch point
    weighted = paths.home() / "weighted-branch"
    T.fit_population(
        tr_x,
        tr_y,
        va_x,
        va_y,
        seeds=[0],
        config=_config(max_epochs=2),
        run="weighted",
        device="cpu",
        threads=1,
        progress=False,
        weigher=lambda net, seed, epoch: torch.ones(len(tr_x)),
        attention={"arm": "ones"},
        branch=T.checkpoints.Branch(weighted),
    )
    assert not list(weighted.glob("*.pt"))


# -- class activation maps -----------------------------------------------------------------


def test_the_cam_of_a_linear_head_is_the_class_weighted_feature_map():
    torch.manual_seed(0)
    net = models.create_model("small_resnet", 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cams, logits = cam.class_activation_maps(net, x)
        feats = net.layers(net.relu(net.bn1(net.conv1(x))))
    hand = torch.zeros_like(cams)
    for c in range(3):
        for k in range(feats.shape[1]):
            hand[:, c] += net.fc.weight[c, k] * feats[:, k]
    torch.testing.assert_close(cams, hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + net.fc.bias, logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Grad-CAM"):
        cam.check_cam_head(nn.Sequential(nn.Linear(2, 2)))


class _Identity(nn.Module):
    """A 'network' whose one feature map is the image's first channel: its CAM is the image."""

    def __init__(self):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(x[:, :1]), 1))


def test_pointing_game_and_iou_against_hand_drawn_boxes():
    img = np.zeros((2, 8, 8), dtype=np.uint8)
    img[0, 2:4, 2:4] = 200  # image a: a bright 2x2 square
    img[1, 6, 6] = 255  # image b: one bright pixel
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b"],
            "class": ["one", "one", "one", "two"],
            "x0": [2, 5, 0, 0],
            "y0": [2, 5, 0, 0],
            "x1": [4, 8, 3, 8],
            "y1": [4, 8, 3, 8],
            "pixels": [4, 9, 9, 0],
        }
    )
    scores = cam.localization_scores(
        _Identity(), img, ["a", "b"], boxes, ["one", "two"], threshold=0.5, batch_size=1
    )
    assert len(scores) == 3  # the row with pixels 0 is not scored
    assert scores["pointing"].tolist() == [True, False, False]
    # image a's map is the square itself (no upsampling at the same size): IoU 1 with its box, 0 with the other
    assert scores["iou"].tolist()[:2] == [1.0, 0.0]
    with pytest.raises(ValueError, match="cam_threshold must be in"):
        cam.localization_scores(_Identity(), img, ["a", "b"], boxes, ["one", "two"], threshold=1.0)


class _Functional(nn.Module):
    """Like :class:`_Identity` but pooled functionally (no ``avgpool``/``fc`` pair, as
    DenseNet-121): CAM is not exact for it, Grad-CAM is what it gets."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        a = torch.relu(self.features(x[:, :1] - 0.25))
        return self.head(a.mean(dim=(2, 3)))


def test_grad_cam_of_a_pooling_linear_head_is_the_rectified_cam():
    torch.manual_seed(0)
    net = models.create_model("small_resnet", 3).eval()
    x = torch.randn(4, 3, 32, 32)
    classes = [2, 0, 2, 1]
    maps, logits = cam.grad_cams(net, x, classes)
    with torch.no_grad():
        cams, expected = cam.class_activation_maps(net, x)
    hw = cams.shape[2] * cams.shape[3]
    hand = torch.relu(cams[torch.arange(4), torch.tensor(classes)]) / hw
    torch.testing.assert_close(maps, hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, expected)
    assert cam.feature_layer(net, x) == "layers"  # what enters avgpool
    assert all(p.requires_grad for p in net.parameters())  # given back as they were
    assert cam.cam_method(net) == "cam" and cam.cam_method(net, "gradcam") == "gradcam"


def test_grad_cam_weighs_a_functional_heads_feature_map_by_its_mean_gradient():
    net = _Functional().eval()
    x = torch.rand(3, 3, 6, 6)
    maps, _ = cam.grad_cams(net, x, [0, 1, 0])
    a = (x[:, :1] - 0.25)[:, 0]  # what `features` returns
    # y_c = w_c · mean(ReLU(a)), so ∂y_c/∂a = w_c · 1[a > 0] / (h·w), and α_c is its mean
    sign = torch.tensor([1.0, -1.0, 1.0])[:, None, None]  # w of the class asked of each image
    alpha = sign * (a > 0).float().mean(dim=(1, 2), keepdim=True) / 36
    torch.testing.assert_close(maps, torch.relu(alpha * a))
    assert cam.cam_method(_Functional()) == "gradcam"
    with pytest.raises(ValueError, match="use Grad-CAM"):
        cam.cam_method(_Functional(), "cam")
    with pytest.raises(ValueError, match="cam_layer 'nope' is not a module"):
        cam.grad_cams(net, x, [0, 0, 0], layer="nope")
    with pytest.raises(ValueError, match="cam_method must be one of"):
        cam.cam_method(net, "saliency")


def test_localization_scores_take_grad_cam_where_cam_is_not_exact():
    img = np.zeros((2, 8, 8), dtype=np.uint8)
    img[0, 2:4, 2:4] = 200
    img[1, 6, 6] = 255
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "a", "b"],
            "class": ["one", "one", "one"],
            "x0": [2, 5, 0],
            "y0": [2, 5, 0],
            "x1": [4, 8, 3],
            "y1": [4, 8, 3],
        }
    )  # no pixels column: every box is scored (NIH's boxes)
    both = dict(threshold=0.5, batch_size=1)
    exact = cam.localization_scores(_Identity(), img, ["a", "b"], boxes, ["one", "two"], **both)
    graded = cam.localization_scores(_Functional(), img, ["a", "b"], boxes, ["one", "two"], **both)
    pd.testing.assert_frame_equal(exact, graded)
    assert graded["pointing"].tolist() == [True, False, False]


def test_notebook_09s_late_options_are_checked_at_its_start(tmp_path):
    from prunecxr import attend

    ok = dict(cam_method="auto", cam_threshold=0.5, population="sequential")
    attend.check_options(**ok)
    with pytest.raises(ValueError, match="cam_method must be one of"):
        attend.check_options(**{**ok, "cam_method": "gradcam++"})
    with pytest.raises(ValueError, match=r"cam_threshold must be in \(0, 1\)"):
        attend.check_options(**{**ok, "cam_threshold": 1})
    with pytest.raises(ValueError, match="unknown population mode"):
        attend.check_options(**{**ok, "population": "parallel"})
    with pytest.raises(FileNotFoundError, match="bbox_file .* does not exist"):
        attend.check_options(**ok, bbox_file=str(tmp_path / "BBox_List_2017.csv"))
    # the arms' sweep levels: the dense run's own sweep must have each (the comparison's other side)
    with pytest.raises(ValueError, match="run 'swept' has no sweep of 'global_l1'"):
        attend.check_options(**ok, run="swept", sparsities=[0.0, 0.5])
    levels = [0.0, 0.25, 0.5, 0.75]
    artifacts.write_json(
        paths.run_paths("swept").prune_meta("global_l1"),
        {"method": "global_l1", "seeds": [0], "classes": ["a"], "sparsities": levels},
    )
    attend.check_options(**ok, run="swept", sparsities=[0.0, 0.5, 0.75])
    with pytest.raises(ValueError, match=r"sparsities \[0.1\] are not among the levels"):
        attend.check_options(**ok, run="swept", sparsities=[0.0, 0.1, 0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        attend.check_options(**ok, run="swept", sparsities=[0.0, 0.5, 0.25])


def test_forgetting_compares_dense_and_arms_on_the_arms_levels(monkeypatch):
    """The dense sweep has more levels than the arms': its first drop is found on the arms' grid
    (here the drop at 0.1 is not on it, so the first drop of the same curve is 0.3)."""
    from prunecxr.attend import evaluate

    ap = {0.0: 0.5, 0.1: 0.35, 0.2: 0.45, 0.3: 0.3, 0.95: 0.1}  # rel. change −0.3 at 0.1
    grids = {"r": [0.0, 0.1, 0.2, 0.3, 0.95], "r.attend-htl": [0.0, 0.2, 0.3, 0.95]}

    def metrics(run, method):
        rows = [
            {"seed": s, "sparsity": k, "class": c, "ap": ap[k], "auroc": 0.7, "n_pos": 5}
            for s in (0, 1)
            for k in grids[run]
            for c in ("a", "b")
        ]
        return pd.DataFrame(rows)

    def meta(run, method):
        return {"classes": ["a", "b"], "levels": grids[run], "level_name": "sparsity"}

    labels = pd.DataFrame({"split": ["train", "test"] * 2, "a": [1, 1, 0, 0], "b": [1, 1, 1, 1]})
    monkeypatch.setattr(artifacts, "read_metrics", metrics)
    monkeypatch.setattr(artifacts, "read_meta", meta)
    monkeypatch.setattr(artifacts, "read_labels", lambda run, classes=None: labels)
    monkeypatch.setattr(paths.RunPaths, "prune_meta", lambda self, m: paths.home())  # exists
    table = evaluate.forgetting_table("r", ["htl"], [0, 1], method="global_l1")
    assert table.groupby("arm")["first_drop"].apply(set).to_dict() == {"dense": {0.3}, "htl": {0.3}}
    grids["r.attend-htl"] = [0.0, 0.15, 0.95]  # a level the dense sweep lacks
    with pytest.raises(ValueError, match=r"sparsities \[0.15\] are not among the levels"):
        evaluate.forgetting_table("r", ["htl"], [0, 1], method="global_l1")


# -- NIH's boxes -----------------------------------------------------------------------------

NIH_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def test_nih_boxes_scale_to_the_run_and_name_bad_rows(tmp_path):
    from prunecxr.data import boxes as nih

    f = tmp_path / "BBox_List_2017.csv"
    f.write_text(
        NIH_HEADER
        + "00000001_000.png,Infiltrate,100.5,0,50,1024\n"
        + "00000002_000.png,Mass,0,0,1024,1024\n"
        + "00000099_000.png,Nodule,10,10,5,5\n"
    )
    raw = nih.read_nih_boxes(f, classes=["Infiltration", "Mass", "Nodule"])
    assert raw["class"].tolist() == ["Infiltration", "Mass", "Nodule"]
    table = pd.DataFrame(
        {
            "image_id": ["images/00000001_000.png", "images/00000002_000.png"],
            "split": ["test", "val"],
        }
    )
    out = nih.boxes_at_resolution(raw, table, 48)
    assert out.columns.tolist() == nih.BOX_COLUMNS
    # x 100.5 → 4.71 → 4; x + w 150.5 → 7.05 → 8 (the smallest whole-pixel box holding it)
    assert out[["x0", "y0", "x1", "y1", "pixels"]].values.tolist() == [
        [4, 0, 8, 48, 192],
        [0, 0, 48, 48, 2304],
    ]
    assert out["image_id"].tolist() == table["image_id"].tolist()
    assert out.attrs["unmatched"] == 1  # the image the run does not hold
    with pytest.raises(ValueError, match="line 3: finding 'Mass' is not a class"):
        nih.read_nih_boxes(f, classes=["Infiltration", "Nodule"])
    f.write_text(NIH_HEADER + "00000001_000.png,Mass,1,2,0,4\n")
    with pytest.raises(ValueError, match=r"line 2: box w must be a positive number; got '0'"):
        nih.read_nih_boxes(f)
    f.write_text("Image Index,Finding Label\nx.png,Mass\n")
    with pytest.raises(ValueError, match="expected NIH's columns"):
        nih.read_nih_boxes(f)
    # where the file is looked for: given, the dataset folder, the wheel's copy
    with pytest.raises(FileNotFoundError, match="bbox_file .*missing.csv does not exist"):
        nih.find_box_file(tmp_path / "missing.csv")
    (tmp_path / "ds").mkdir()
    assert nih.find_box_file("", tmp_path / "ds").name == "BBox_List_2017.csv.gz"  # the wheel's
    (tmp_path / "ds" / nih.NIH_BOX_FILE).write_text(NIH_HEADER)
    assert nih.find_box_file("", tmp_path / "ds") == tmp_path / "ds" / nih.NIH_BOX_FILE
    wheel = nih.read_nih_boxes(nih.find_box_file())
    assert len(wheel) == 984 and wheel["class"].nunique() == 8  # NIH's release


def test_a_real_nih_run_is_scored_against_nihs_boxes(tmp_path):
    from prunecxr import data
    from prunecxr.attend import evaluate
    from test_data import RES, make_nih

    make_nih(tmp_path)
    data.prepare_run("nih", dataset="nih-cxr-lt", resolution=RES, data_root=str(tmp_path))
    test = data.open_split("nih", "test")
    name = test.image_ids[0].split("/")[-1]
    (tmp_path / "nih-cxr-lt" / "BBox_List_2017.csv").write_text(
        NIH_HEADER + f"{name},Effusion,512,0,512,512\n00000001_000.png,Mass,0,0,10,10\n"
    )
    boxes = evaluate.localization_boxes("nih", data_root=str(tmp_path))
    assert boxes.attrs["source"] == "BBox_List_2017.csv"
    # the test image's box, at the run's 8 px; the training image's box is not a test box
    assert boxes[["image_id", "class", "x0", "y0", "x1", "y1"]].values.tolist() == [
        [test.image_ids[0], "Effusion", RES // 2, 0, RES, RES // 2]
    ]
    with pytest.raises(FileNotFoundError, match="bbox_file"):
        evaluate.localization_boxes("nih", bbox_file=str(tmp_path / "nope.csv"))


# -- paired statistics ---------------------------------------------------------------------


def test_paired_differences_pair_by_seed_and_match_scipy():
    rng = np.random.default_rng(1)
    base = rng.random(6)
    arm = base + np.array([0.1, 0.05, 0.2, -0.01, 0.07, 0.12])
    table = pd.DataFrame(
        {
            "arm": ["dense"] * 6 + ["htl"] * 6,
            "seed": list(range(6)) * 2,
            "class": "A",
            "ap": np.r_[base, arm],
        }
    ).sample(frac=1, random_state=0)  # row order must not matter
    out = compare.paired_differences(table, quantities=["ap"])
    row = out.iloc[0]
    d = arm - base
    assert row["n_seeds"] == 6 and row["mean_difference"] == pytest.approx(d.mean())
    assert row["p_value"] == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    ci = scipy.stats.bootstrap(
        (d,), np.mean, method="percentile", n_resamples=9999, rng=np.random.default_rng(0)
    ).confidence_interval
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert compare.paired_test([0.0, 0.0, 0.0])["p_value"] == 1.0
    assert math.isnan(compare.paired_test([0.3])["p_value"])
    with pytest.raises(ValueError, match="baseline arm 'dense'"):
        compare.paired_differences(table[table["arm"] == "htl"], quantities=["ap"])


def test_the_rowwise_spearman_of_htl_is_the_pie_measure():
    a = np.random.default_rng(0).random((5, 4))
    np.testing.assert_array_equal(
        htl.disagreement(a, a[:, ::-1], list("abcde"), fraction=0.2)["spearman"],
        stats.rowwise_spearman(a, a[:, ::-1]),
    )
