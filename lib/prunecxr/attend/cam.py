"""Class activation maps and how well they point at the drawn findings (weakly supervised localization).

The project's networks end in global average pooling and a linear layer (``avgpool`` → ``fc``:
:class:`prunecxr.models.SmallResNet`, torchvision's ResNets), so the class activation map of
Zhou et al. (CVPR 2016) is exact: with ``A_k`` the ``K`` feature maps that enter the pooling and
``w_ck`` the linear layer's weights, ``CAM_c = Σ_k w_ck A_k`` and the logit of class ``c`` is
``mean_{x,y} CAM_c(x, y) + b_c``.

A network without that head (torchvision's DenseNet-121 pools functionally; timm's models pool in
``global_pool``) gets Grad-CAM (Selvaraju et al., ICCV 2017) instead: with ``A`` the feature maps
of a layer (by default the last one whose output is a spatial map, i.e. what enters the
pooling), ``α_ck = mean_{x,y} ∂y_c/∂A_k`` and ``GradCAM_c = ReLU(Σ_k α_ck A_k)``. On a pooling +
linear head ``α_ck = w_ck / (h·w)``, so Grad-CAM is ``ReLU(CAM_c) / (h·w)`` (tested): where
both apply they peak at the same place whenever the map has a positive part, and differ in the
IoU's threshold, which Grad-CAM takes over the rectified range.
:func:`localization_scores` takes ``method="auto"``: CAM where it is exact, else Grad-CAM.

Grad-CAM is written here rather than taken from the ``grad-cam`` package (pytorch-grad-cam
1.5.7): that package is a source distribution that pulls OpenCV and matplotlib into an install
CI must finish in minutes, and it computes one target per image, resized and min-max scaled
with OpenCV; the scores below need the raw maps of many (image, class) pairs in one batch, one
backward pass per class through the head only.

Localization is scored, per positive (image, finding) whose drawn signature is visible
(``locations.parquet``, ``pixels > 0``), on the map of the finding's class upsampled
bilinearly to the image:

* **pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies in the box.
  Upsampling a coarse map (3 × 3 cells for the default 48 px images) bilinearly leaves flat
  plateaus at its borders, so the point is the centroid of the pixels at the maximum
  (rounded down), not the first of them in row-major order, which would favour the top left;
* **IoU**: the map min-max normalized to [0, 1] and thresholded at ``threshold`` (0.5 of its
  range, a common choice in weakly supervised localization), against the box.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import models, runtime

__all__ = [
    "CAM_METHODS",
    "LOCALIZATION_COLUMNS",
    "cam_method",
    "check_cam_head",
    "class_activation_maps",
    "feature_layer",
    "grad_cams",
    "localization_scores",
]

#: the map of :func:`localization_scores`: CAM (exact for a pooling + linear head), Grad-CAM,
#: or ``auto`` (CAM where it is exact, else Grad-CAM)
CAM_METHODS = ("auto", "cam", "gradcam")

#: the per-box scores of :func:`localization_scores`
LOCALIZATION_COLUMNS = ["image_id", "class", "pointing", "iou"]


def check_cam_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The model's global pooling and linear head; a clear error when it has no such head."""
    pool, fc = getattr(model, "avgpool", None), getattr(model, "fc", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(fc, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} does not end in avgpool (AdaptiveAvgPool2d) and fc (Linear), so its "
            "class activation maps are not exact; use Grad-CAM (method='gradcam' or 'auto')"
        )
    return pool, fc


def class_activation_maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CAM [N, C, h, w], logits [N, C])`` of ``model`` on preprocessed images ``x`` ``[N, 3, H, W]``.

    ``CAM_c = Σ_k w_ck A_k`` with ``A`` the feature maps entering ``model.avgpool`` and ``w``
    the weights of ``model.fc`` (its bias is not part of the map); ``logits`` are the model's
    own outputs, so ``mean_{h,w} CAM + b == logits`` up to rounding.
    """
    pool, fc = check_cam_head(model)
    seen = {}
    handle = pool.register_forward_hook(lambda _m, inputs, _out: seen.__setitem__("a", inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    features = seen["a"].float()
    cams = torch.einsum("ck,nkhw->nchw", fc.weight.float(), features)
    return cams, logits.float()


def cam_method(model: nn.Module, method: str = "auto") -> str:
    """``"cam"`` or ``"gradcam"``: what ``method`` (one of :data:`CAM_METHODS`) means for ``model``."""
    if method not in CAM_METHODS:
        raise ValueError(f"cam_method must be one of {list(CAM_METHODS)}; got {method!r}")
    if method == "cam":
        check_cam_head(model)
        return "cam"
    if method == "gradcam":
        return "gradcam"
    try:
        check_cam_head(model)
    except ValueError:
        return "gradcam"
    return "cam"


def feature_layer(model: nn.Module, x: torch.Tensor, layer: str = "") -> str:
    """The name of the module whose output Grad-CAM weighs: ``layer`` if given (checked), else the
    last module to return a spatial map (a 4-D output larger than 1 × 1) on input ``x``."""
    named = dict(model.named_modules())
    if layer:
        if layer not in named:
            raise ValueError(
                f"cam_layer {layer!r} is not a module of {type(model).__name__}; e.g. "
                f"{[n for n in named if n][-3:]}"
            )
        return layer
    order: list[str] = []

    def record(name):
        def hook(_m, _inputs, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
                order.append(name)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in named.items() if n]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial output on {tuple(x.shape[1:])} "
            "inputs, so there is no map to draw"
        )
    return order[-1]


def grad_cams(
    model: nn.Module, x: torch.Tensor, classes, *, layer: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM ``[N, h, w]`` of class ``classes[i]`` on image ``i``, and the logits ``[N, C]``.

    ``x`` is preprocessed ``[N, 3, H, W]``; ``classes`` an int per image; ``layer`` the module
    whose output is weighed (:func:`feature_layer`). The model is run in eval mode as given
    (batch norm with its running statistics, so the images do not interact) and the gradient
    reaches back to ``layer`` only: the parameters are excluded for the call, one backward
    pass per distinct class.
    """
    name = feature_layer(model, x, layer)
    target = dict(model.named_modules())[name]
    seen = {}

    def hook(_m, _inputs, out):
        leaf = out.detach().requires_grad_(True)
        seen["a"] = leaf
        return leaf

    params = [p for p in model.parameters() if p.requires_grad]
    handle = target.register_forward_hook(hook)
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            features = seen["a"]
            cls = torch.as_tensor(classes, device=logits.device, dtype=torch.long)
            maps = torch.zeros(
                (len(x), features.shape[2], features.shape[3]), device=features.device
            )
            wanted = cls.unique().tolist()
            for k, c in enumerate(wanted):
                (grad,) = torch.autograd.grad(
                    logits[:, c].sum(), features, retain_graph=k < len(wanted) - 1
                )
                rows = cls == c
                alpha = grad[rows].float().mean(dim=(2, 3))
                maps[rows] = torch.relu(
                    torch.einsum("nk,nkhw->nhw", alpha, features[rows].detach().float())
                )
    finally:
        handle.remove()
        for p in params:
            p.requires_grad_(True)
    return maps, logits.detach().float()


@torch.no_grad()
def localization_scores(
    model: nn.Module,
    images,
    image_ids,
    boxes: pd.DataFrame,
    classes,
    *,
    threshold: float = 0.5,
    batch_size: int = 128,
    device="cpu",
    method: str = "auto",
    layer: str = "",
) -> pd.DataFrame:
    """Pointing game and IoU of ``model``'s class activation maps against ``boxes``.

    Parameters
    ----------
    model : a classifier with an ``avgpool`` → ``fc`` head (:func:`check_cam_head`).
    images : uint8 ``[N, H, W]`` (the test split of the image cache).
    image_ids : the ``N`` ids of ``images``.
    boxes : rows of ``locations.parquet`` (``image_id``, ``class``, ``x0``, ``y0``, ``x1``,
        ``y1``, ``pixels``); rows with ``pixels == 0`` (nothing visible drawn) are left out.
    classes : the model's output classes, in order.
    threshold : the share of the normalized map's range above which a pixel is "on", in (0, 1).
    method : one of :data:`CAM_METHODS` (:func:`cam_method`); ``layer`` names Grad-CAM's layer
        (empty: :func:`feature_layer`'s choice).

    Returns
    -------
    DataFrame with :data:`LOCALIZATION_COLUMNS`, one row per scored box: ``pointing`` (bool,
    the centroid of the map's maximal pixels lies in the box) and ``iou`` (float).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"cam_threshold must be in (0, 1); got {threshold!r}")
    kind = cam_method(model, method)
    classes = list(classes)
    if "pixels" in boxes:
        boxes = boxes[boxes["pixels"] > 0]
    unknown = sorted(set(boxes["class"]) - set(classes))
    if unknown:
        raise ValueError(f"locations name classes the model does not predict: {unknown[:3]}")
    where = {str(i): k for k, i in enumerate(image_ids)}
    pos = boxes["image_id"].astype(str).map(where)
    if pos.isna().any():
        raise ValueError(
            f"locations name images not among the given ones, e.g. "
            f"{boxes['image_id'][pos.isna()].iloc[0]!r}"
        )
    pos = pos.to_numpy(dtype=np.int64)
    cls = boxes["class"].map({c: k for k, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    box = boxes[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.int64)
    dev = runtime.resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    n, h, w = np.asarray(images).shape[0], images.shape[1], images.shape[2]
    ys, xs = torch.arange(h, device=dev)[:, None], torch.arange(w, device=dev)[None, :]
    pointing = np.zeros(len(pos), dtype=bool)
    iou = np.zeros(len(pos), dtype=np.float64)
    order = np.argsort(pos, kind="stable")
    if kind == "gradcam" and len(pos):
        first = torch.from_numpy(np.array(images[:1])).to(dev)
        layer = feature_layer(model, models.preprocess(first), layer)
    try:
        for start in range(0, n, batch_size):
            rows = order[(pos[order] >= start) & (pos[order] < start + batch_size)]
            if not len(rows):
                continue
            x = torch.from_numpy(np.array(images[start : start + batch_size])).to(dev)
            which = torch.as_tensor(pos[rows] - start, device=dev)
            if kind == "cam":
                cams, _ = class_activation_maps(model, models.preprocess(x))
                maps = cams[which, torch.as_tensor(cls[rows], device=dev)]
            else:
                maps, _ = grad_cams(model, models.preprocess(x[which]), cls[rows], layer=layer)
            maps = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[
                :, 0
            ]
            flat = maps.reshape(len(rows), -1)
            lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
            peak = (
                maps == hi
            ).double()  # the maximum's plateau (bilinear upsampling makes flat corners)
            ty = (
                torch.floor((peak * ys).sum(dim=(1, 2)) / peak.sum(dim=(1, 2))).long().cpu().numpy()
            )
            tx = (
                torch.floor((peak * xs).sum(dim=(1, 2)) / peak.sum(dim=(1, 2))).long().cpu().numpy()
            )
            b = box[rows]
            pointing[rows] = (tx >= b[:, 0]) & (tx < b[:, 2]) & (ty >= b[:, 1]) & (ty < b[:, 3])
            span = hi - lo
            norm = torch.where(
                span > 0, (maps - lo) / torch.where(span > 0, span, 1), torch.zeros_like(maps)
            )
            on = norm >= threshold
            bt = torch.as_tensor(b, device=dev)
            inside = (
                (xs[None] >= bt[:, 0, None, None])
                & (xs[None] < bt[:, 2, None, None])
                & (ys[None] >= bt[:, 1, None, None])
                & (ys[None] < bt[:, 3, None, None])
            )
            inter = (on & inside).sum(dim=(1, 2)).double()
            union = (on | inside).sum(dim=(1, 2)).double()
            iou[rows] = (inter / union.clamp(min=1)).cpu().numpy()
    finally:
        model.train(was_training)
    return pd.DataFrame(
        {
            "image_id": boxes["image_id"].astype(str).to_numpy(),
            "class": boxes["class"].to_numpy(),
            "pointing": pointing,
            "iou": iou,
        }
    )
