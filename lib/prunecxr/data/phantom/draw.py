"""Drawing the phantom: a procedural chest per patient, posed and exposed per image, and one
signature per finding on top, each at its own strength (see the package docstring).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..keys import id_seeds
from .labels import FINDINGS, bbox_priors
from .randomness import noise_field, pixel_noise, uniform

#: Bump when the drawing changes: it is part of the image cache key. Version 2: per-finding
#: strengths (version 1 had one global contrast, 2.0) and a hiatal hernia 1.7 times larger.
#: Version 3: every part of a signature scales with its strength (an effusion's fluid and a
#: pneumothorax's missing markings had a floor that no strength removed, so neither could be
#: made as hard as CheXNet finds them).
RENDERER_VERSION = 3

#: The strength every finding had before calibration (version 1's global contrast): the
#: calibration's starting point. Measured then, on all images at 48×48 (the default recipe,
#: one seed): a global 3.0 raised the test mean AP from 0.69 to 0.75 and still did not teach
#: Hernia, whose signature was too small to survive 48 px; it is now drawn 1.7 times larger
#: (:data:`HERNIA_SIZE`), and each finding's strength is its own.
UNCALIBRATED_STRENGTH = 2.0

#: The hiatal hernia's size relative to version 1 (sac half-axes 4–7.5 % and 3–5 % of the
#: image then). Real hiatal hernias are retrocardiac masses several centimetres across; at
#: 1.0 the sac was 1–2 pixels at 48 px and no strength made it learnable (an AP of 0.61 for one
#: seed at 1.7 times the size and 3 times the intensity).
HERNIA_SIZE = 1.7

#: Standard deviation of the quantum noise added to every pixel (intensity in [0, 1]).
NOISE_LEVEL = 0.025


# -- drawing helpers (all float32, broadcasting over [B, R, R]) ---------------------------


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """A soft step: 0 for ``d <= -width/2``, 1 for ``d >= width/2``, linear between."""
    out = d * np.float32(1.0 / width)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _gauss(d2: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * d2)


def _col(x) -> np.ndarray:
    """A per-image parameter as ``[B, 1, 1]`` float32 for broadcasting over pixels."""
    return np.asarray(x, dtype=np.float32).reshape(-1, 1, 1)


# slot layout of the per-image uniforms
_N_POSE = 16
_N_PER_FINDING = 8
_N_IMAGE = _N_POSE + _N_PER_FINDING * len(FINDINGS)
_N_PATIENT = 24


def _pick_box(name: str, u: np.ndarray) -> np.ndarray:
    boxes = bbox_priors()[name]
    idx = np.minimum((u * len(boxes)).astype(np.int64), len(boxes) - 1)
    return boxes[idx]


class Scene:
    """Per-image parameters of one batch, before and after the findings change them."""

    def __init__(self, meta: pd.DataFrame, resolution: int, strength: dict[str, float]):
        n = len(meta)
        self.strength = strength
        self.n = n
        self.res = resolution
        self.edge = max(1.5 / resolution, 0.006)
        self.img_seed = id_seeds(meta["image_id"].tolist(), "phantom-image")
        self.pat_seed = id_seeds(meta["patient_id"].tolist(), "phantom-patient")
        ui = uniform(self.img_seed, _N_IMAGE, stream=1)
        up = uniform(self.pat_seed, _N_PATIENT, stream=2)
        self.pose = ui[:, :_N_POSE]
        self.fu = ui[:, _N_POSE:].reshape(n, len(FINDINGS), _N_PER_FINDING)
        self.has = {f: meta[f].to_numpy(dtype=bool) for f in FINDINGS}
        ap = (meta["view"].to_numpy() == "AP").astype(np.float32)
        male = (meta["sex"].to_numpy() == "M").astype(np.float32)
        age = np.clip(meta["age"].to_numpy(dtype=np.float32), 0, 100)
        self.ap, self.male, self.age = ap, male, age

        # patient anatomy
        self.cx = 0.5 + 0.02 * (up[:, 0] - 0.5)
        self.tw = 0.345 + 0.035 * up[:, 1] + 0.02 * male  # thorax half-width
        self.apex = 0.12 + 0.03 * up[:, 2]
        self.dome_r = 0.64 + 0.05 * up[:, 3]  # right hemidiaphragm dome (image left)
        self.dome_l = self.dome_r + 0.015 + 0.02 * up[:, 4]
        self.dome_h = 0.05 + 0.03 * up[:, 5]  # dome height above the costophrenic angle
        self.mw = 0.045 + 0.015 * up[:, 6]  # mediastinum half-width
        self.ctr = 0.41 + 0.06 * up[:, 7]  # cardiothoracic ratio
        self.heart_h = 0.115 + 0.03 * up[:, 8]
        self.rib_freq = 8.5 + 2.0 * up[:, 9]
        self.rib_phase = up[:, 10]
        self.rib_amp = 0.075 * (1.2 - 0.5 * age / 100) * (0.8 + 0.4 * up[:, 11])
        self.clav_y = 0.13 + 0.03 * up[:, 12]
        self.bubble = (up[:, 13] < 0.75).astype(np.float32) * (0.6 + 0.4 * up[:, 14])
        self.lung_dark = 0.30 + 0.05 * up[:, 15]
        self.marking_amp = 0.045 + 0.02 * up[:, 16]
        self.breast = (1 - male) * (0.04 + 0.04 * up[:, 17])

        # this image: inspiration, pose, exposure
        p = self.pose
        self.dome_r = self.dome_r + 0.03 * (p[:, 0] - 0.5) - 0.035 * ap
        self.dome_l = self.dome_l + 0.03 * (p[:, 0] - 0.5) - 0.035 * ap
        self.ctr = self.ctr * (1 + 0.1 * ap)  # AP magnifies the heart
        self.angle = np.deg2rad((p[:, 1] - 0.5) * (6 + 6 * ap))
        self.scale = 1 + 0.08 * (p[:, 2] - 0.5)
        self.shift_x = 0.04 * (p[:, 3] - 0.5)
        self.shift_y = 0.04 * (p[:, 4] - 0.5)
        self.gain = (0.85 + 0.3 * p[:, 5]) * (1 - 0.12 * ap)
        self.offset = 0.03 * (p[:, 6] - 0.5)
        self.gamma = 0.85 + 0.3 * p[:, 7]
        self.noise = NOISE_LEVEL * (0.8 + 0.4 * p[:, 8]) * (1 + 0.4 * ap)
        self.markings_scale = np.ones(n, np.float32)

    def u(self, finding: str, idx: np.ndarray) -> np.ndarray:
        """The 8 uniforms of ``finding`` for the images ``idx``: ``[len(idx), 8]``."""
        return self.fu[idx, FINDINGS.index(finding)]

    def severity(self, finding: str, idx: np.ndarray) -> np.ndarray:
        return (0.35 + 0.65 * self.u(finding, idx)[:, 0]) * np.float32(self.strength[finding])

    def idx(self, finding: str) -> np.ndarray:
        return np.flatnonzero(self.has[finding])


def _apply_anatomical_findings(s: Scene) -> None:
    """Findings that change the anatomy itself rather than add an opacity."""
    c = s.strength["Cardiomegaly"]
    i = s.idx("Cardiomegaly")
    if len(i):
        u = s.u("Cardiomegaly", i)
        box = _pick_box("Cardiomegaly", u[:, 3])
        target = np.maximum(box[:, 2] / (2 * s.tw[i]) * (0.9 + 0.2 * u[:, 4]), 0.53)
        sev = 0.5 + 0.5 * u[:, 0]
        s.ctr[i] = np.minimum(s.ctr[i] + c * sev * (target - s.ctr[i]), 0.75)
        s.heart_h[i] *= 1 + 0.25 * c * sev
    i = s.idx("Emphysema")
    if len(i):
        sev = s.severity("Emphysema", i)
        s.lung_dark[i] *= 1 + 0.35 * sev
        s.dome_r[i] += 0.05 * sev
        s.dome_l[i] += 0.05 * sev
        s.dome_h[i] *= np.clip(1 - 0.6 * sev, 0.1, 1)
        s.tw[i] += 0.012 * sev
        s.markings_scale[i] *= np.clip(1 - 0.5 * sev, 0.2, 1)
    i = s.idx("Fibrosis")
    if len(i):
        sev = s.severity("Fibrosis", i)
        s.dome_r[i] -= 0.025 * sev
        s.dome_l[i] -= 0.025 * sev
    i = s.idx("Atelectasis")
    if len(i):
        u = s.u("Atelectasis", i)
        sev = s.severity("Atelectasis", i)
        box = _pick_box("Atelectasis", u[:, 3])
        right = box[:, 0] < s.cx[i]  # image left = patient's right
        s.dome_r[i] -= np.where(right, 0.03 * sev, 0)
        s.dome_l[i] -= np.where(right, 0, 0.03 * sev)


def _grid(s: Scene, idx=slice(None)):
    """Patient coordinates ``X, Y`` ``[B, R, R]`` of every pixel after the image's pose."""
    r = s.res
    g = (np.arange(r, dtype=np.float32) + 0.5) / r - 0.5
    cos, sin = _col(np.cos(s.angle[idx])), _col(np.sin(s.angle[idx]))
    inv = _col(1.0 / s.scale[idx])
    gx, gy = g[None, None, :], g[None, :, None]
    X = (cos * gx - sin * gy) * inv + _col(0.5 - s.shift_x[idx])
    Y = (sin * gx + cos * gy) * inv + _col(0.5 - s.shift_y[idx])
    return X.astype(np.float32), Y.astype(np.float32)


def _lung(s, X, Y, idx, side: int, *, shrink=0.0):
    """Soft mask of one lung (side -1: image left = patient's right; +1: image right).

    ``shrink`` (per image) moves the lateral edge in and the apex down (a collapsed lung).
    """
    cx, tw, mw = _col(s.cx[idx]), _col(s.tw[idx]), _col(s.mw[idx])
    shrink = _col(np.broadcast_to(np.asarray(shrink, np.float32), (len(s.cx[idx]),)))
    dome = _col((s.dome_r if side < 0 else s.dome_l)[idx])
    dome_h = _col(s.dome_h[idx])
    apex = _col(s.apex[idx]) + shrink
    medial = cx + side * mw
    lateral = cx + side * (tw - 0.03 - shrink)
    centre = (medial + lateral) * 0.5
    half = np.abs(lateral - medial) * 0.5
    t = np.clip((Y - apex) / (dome - apex), 0, 1)
    # a rounded apex widening to the base: half-width ∝ sqrt(1 - (1 - t)³)
    t = 1 - t
    half_y = half * np.sqrt(1 - t * t * t)
    dist_x = half_y - np.abs(X - centre)
    rel = (X - centre) / half * side  # -1 medial … +1 lateral
    diaphragm = (
        dome + dome_h * np.clip(rel, -1, 1.2) ** 2 * 0.5 + dome_h * 0.5 * np.clip(rel, 0, 1.2)
    )
    e = s.edge
    return _ramp(dist_x, e) * _ramp(diaphragm - Y, e) * _ramp(Y - apex, e), diaphragm


def _ellipse(X, Y, x0, y0, rx, ry, edge):
    """Soft ellipse mask; near the rim (1 - d²)/2 ≈ 1 - d, so no square root is needed."""
    d2 = ((X - x0) / rx) ** 2 + ((Y - y0) / ry) ** 2
    return _ramp((1 - d2) * (0.5 * np.minimum(rx, ry)), edge)


def render_batch(s: Scene, out: np.ndarray) -> None:
    """Draw the images of scene ``s`` into ``out`` (uint8 ``[B, R, R]``)."""
    _apply_anatomical_findings(s)
    e = s.edge
    X, Y = _grid(s)
    cx = _col(s.cx)
    tw = _col(s.tw)
    ax = np.abs(X - cx)

    # body, shoulders and neck
    neck = np.clip((Y - 0.01) * 9, 0, 1)
    body_half = (tw + 0.08) * (0.3 + 0.7 * np.sqrt(1 - (1 - neck) ** 2)) + 0.015 * np.sin(
        np.float32(np.pi) * np.clip(Y, 0, 1)
    )
    body = _ramp(body_half - ax, 0.025)
    img = 0.05 + 0.42 * body

    lung_r, dia_r = _lung(s, X, Y, slice(None), -1)
    lung_l, dia_l = _lung(s, X, Y, slice(None), +1)

    # heart (its left border is on the image right)
    hw = _col(s.ctr * s.tw)
    hx = cx - 0.09 + hw  # the right heart border sits just right of the spine
    hh = _col(s.heart_h)
    hy = _col(s.dome_l) - 0.5 * hh
    heart = _ellipse(X, Y, hx, hy, hw, hh, e)
    lung_r *= 1 - heart
    lung_l *= 1 - heart
    lungs = lung_r + lung_l

    # abdomen below the diaphragm, stomach bubble under the left hemidiaphragm
    right_side = (X < cx).astype(np.float32)
    below = _ramp(Y - (dia_l + (dia_r - dia_l) * right_side), e)
    img += 0.14 * below * body
    heart *= 1 - below
    bubble = _ellipse(X, Y, cx + 0.16, _col(s.dome_l) + 0.06, 0.045, 0.03, e)
    img -= 0.16 * _col(s.bubble) * bubble * below

    # mediastinum, spine, heart
    mediastinum = _ramp(_col(s.mw) + 0.01 - ax, e) * _ramp(Y - 0.08, e)
    img += 0.08 * mediastinum + 0.10 * heart
    img += 0.05 * _ramp(0.022 - ax, e)

    # lungs: dark air, ribs over them, vessel markings fanning out from the hila
    img -= _col(s.lung_dark) * lungs
    phase = _col(s.rib_freq) * (Y - 0.05 - 0.18 * ax - 0.35 * ax**2) + _col(s.rib_phase)
    ribs = np.cos(np.float32(2 * np.pi) * phase)
    ribs = _ramp(ribs - 0.35, 0.5) * _ramp(tw - 0.01 - ax, e) * _ramp(Y - 0.07, e)
    ribs *= 1 - 0.7 * below
    img += _col(s.rib_amp) * ribs * (0.4 + 0.6 * lungs)
    clav_y = _col(s.clav_y) - 0.16 * ax + 0.3 * ax**2
    clav = _ramp(0.013 - np.abs(Y - clav_y), e) * _ramp(ax - 0.03, e) * _ramp(tw - 0.02 - ax, e)
    img += 0.09 * clav

    markings = noise_field(s.pat_seed, s.res, 16, stream=3)  # the patient's vessels
    hilum = 1 / (1 + ((ax - 0.11) / 0.12) ** 2 + ((Y - _col(s.dome_r) + 0.22) / 0.16) ** 2)
    vessels = np.clip(markings, 0, None) * (0.35 + 0.65 * hilum) * lungs
    vessels *= _col(s.marking_amp * s.markings_scale)

    # breast shadows over the lower lung fields
    i = np.flatnonzero(s.breast > 0)
    if len(i):
        dy2 = ((Y[i] - _col(s.dome_r[i]) + 0.02) / 0.09) ** 2
        shadow = 1 / (1 + ((ax[i] - 0.25) / 0.11) ** 2 + dy2) ** 2  # both sides at once
        img[i] += _col(s.breast[i]) * shadow

    # --- findings that add opacities or lucencies ---------------------------------------
    def lung_side(idx, side):
        return (lung_r if side < 0 else lung_l)[idx]

    # pneumothorax: lucent rim without markings, a thin pleural line
    i = s.idx("Pneumothorax")
    if len(i):
        u = s.u("Pneumothorax", i)
        sev = s.severity("Pneumothorax", i)
        box = _pick_box("Pneumothorax", u[:, 3])
        gap = np.clip(0.3 * box[:, 2] * (0.6 + 0.8 * u[:, 4]) * np.sqrt(sev), 0.02, 0.1)
        Xi, Yi = X[i], Y[i]
        for side in (-1, 1):
            on = (box[:, 0] < s.cx[i]) == (side < 0)
            if not on.any():
                continue
            j = i[on]
            inner, _ = _lung(s, Xi[on], Yi[on], j, side, shrink=gap[on])
            inner *= 1 - heart[j]
            whole = lung_side(j, side)
            rim = np.clip(whole - inner, 0, 1)
            vessels[j] *= 1 - _col(np.clip(0.5 * sev[on], 0, 1)) * rim  # faint: markings stay
            img[j] -= _col(0.09 * sev[on]) * rim
            line = np.clip(inner * (1 - inner) * 4, 0, 1) * whole
            img[j] += _col(0.07 * sev[on]) * line

    # pleural thickening: a dense band along the chest wall, an apical cap
    i = s.idx("Pleural Thickening")
    if len(i):
        u = s.u("Pleural Thickening", i)
        sev = s.severity("Pleural Thickening", i)
        gap = 0.012 + 0.02 * u[:, 3]
        bilateral = u[:, 2] < 0.35
        first = np.where(u[:, 1] < 0.5, -1, 1)
        for side in (-1, 1):
            on = bilateral | (first == side)
            if not on.any():
                continue
            j = i[on]
            inner, _ = _lung(s, X[j], Y[j], j, side, shrink=gap[on])
            inner *= 1 - heart[j]
            rim = np.clip(lung_side(j, side) - inner, 0, 1)
            img[j] += _col(0.16 * sev[on]) * rim

    # effusion: fluid in the costophrenic angle, a meniscus rising laterally
    i = s.idx("Effusion")
    if len(i):
        u = s.u("Effusion", i)
        sev = s.severity("Effusion", i)
        box = _pick_box("Effusion", u[:, 3])
        depth = np.clip(box[:, 3] * 0.5 * (0.5 + 0.5 * u[:, 4]) * np.sqrt(sev), 0.03, 0.3)
        meniscus = 0.02 + 0.05 * u[:, 5]
        bilateral = u[:, 2] < 0.3
        first = np.where(box[:, 0] < s.cx[i], -1, 1)
        for side in (-1, 1):
            on = bilateral | (first == side)
            if not on.any():
                continue
            j = i[on]
            Xj, Yj = X[j], Y[j]
            dome = _col((s.dome_r if side < 0 else s.dome_l)[j])
            cp = dome + _col(s.dome_h[j])
            lat = _col(s.cx[j] + side * (s.tw[j] - 0.03))
            med = _col(s.cx[j] + side * s.mw[j])
            rel = np.clip((Xj - med) / (lat - med), 0, 1)
            top = cp - _col(depth[on]) - _col(meniscus[on]) * rel**2
            fluid = _ramp(Yj - top, 0.02) * lung_side(j, side)
            dense = _col(s.lung_dark[j] * np.clip(0.55 + 0.45 * sev[on], 0, 1.3))
            seen = _col(np.clip(0.5 * sev[on], 0, 1))  # a faint effusion fades away entirely
            img[j] += seen * dense * fluid
            vessels[j] *= 1 - seen * fluid

    # consolidation: dense homogeneous lobar opacity bounded by a fissure
    i = s.idx("Consolidation")
    if len(i):
        u = s.u("Consolidation", i)
        sev = s.severity("Consolidation", i)
        side = np.where(u[:, 1] < 0.55, -1, 1)
        lower = u[:, 2] < 0.6
        fissure = np.where(lower, 0.42 + 0.12 * u[:, 3], 0.30 + 0.1 * u[:, 3])
        slope = 0.3 * (u[:, 4] - 0.5)
        Xi, Yi = X[i], Y[i]
        d = Yi - _col(fissure) - _col(slope) * (Xi - _col(s.cx[i]))
        region = _ramp(np.where(_col(lower), d, -d), 0.015)
        lung = np.where(_col(side) < 0, lung_r[i], lung_l[i])
        img[i] += _col(0.22 * sev) * region * lung * (0.9 + 0.1 * np.cos(30 * Xi + 20 * Yi))

    # infiltration: patchy ill-defined opacities, focal or bibasal
    i = s.idx("Infiltration")
    if len(i):
        u = s.u("Infiltration", i)
        sev = s.severity("Infiltration", i)
        box = _pick_box("Infiltration", u[:, 3])
        Xi, Yi = X[i], Y[i]
        focal = _gauss(
            ((Xi - _col(box[:, 0])) / _col(0.5 * box[:, 2] + 0.03)) ** 2
            + ((Yi - _col(box[:, 1])) / _col(0.5 * box[:, 3] + 0.03)) ** 2
        )
        basal = _ramp(Yi - _col(s.dome_r[i]) + 0.22, 0.1)
        where = np.where(_col(u[:, 2] < 0.4), basal, focal)
        patches = _ramp(noise_field(s.img_seed[i], s.res, 12, stream=5) - 0.2, 1.0)
        img[i] += _col(0.16 * sev) * patches * where * lungs[i]

    # pneumonia: a focal patchy airspace opacity
    i = s.idx("Pneumonia")
    if len(i):
        u = s.u("Pneumonia", i)
        sev = s.severity("Pneumonia", i)
        box = _pick_box("Pneumonia", u[:, 3])
        Xi, Yi = X[i], Y[i]
        sx = _col(0.4 * box[:, 2] + 0.02)
        sy = _col(0.4 * box[:, 3] + 0.02)
        blob = _gauss(((Xi - _col(box[:, 0])) / sx) ** 2 + ((Yi - _col(box[:, 1])) / sy) ** 2)
        patchy = 0.75 + 0.25 * noise_field(s.img_seed[i], s.res, 10, stream=6)
        img[i] += _col(0.2 * sev) * np.clip(blob * patchy, 0, 1) * lungs[i]

    # edema: bilateral perihilar haze and Kerley B lines at the bases
    i = s.idx("Edema")
    if len(i):
        sev = s.severity("Edema", i)
        Xi, Yi = X[i], Y[i]
        axi = ax[i]
        hy = _col(s.dome_r[i]) - 0.2
        bat = _gauss(((axi - _col(s.mw[i]) - 0.06) / 0.09) ** 2 + ((Yi - hy) / 0.12) ** 2)
        img[i] += _col(0.13 * sev) * bat * lungs[i]
        kerley = _ramp(np.cos(np.float32(2 * np.pi * 24) * Yi) - 0.6, 0.4)
        periph = _ramp(axi - _col(s.tw[i]) + 0.09, 0.03) * _ramp(
            Yi - _col(s.dome_r[i]) + 0.12, 0.03
        )
        img[i] += _col(0.08 * sev) * kerley * periph * lungs[i]
        vessels[i] *= 1 + 0.6 * sev.reshape(-1, 1, 1)

    # fibrosis: coarse reticulation, peripheral and basal
    i = s.idx("Fibrosis")
    if len(i):
        u = s.u("Fibrosis", i)
        sev = s.severity("Fibrosis", i)
        Xi, Yi = X[i], Y[i]
        warp = noise_field(s.img_seed[i], s.res, 8, stream=7)
        f = 11 + 3 * u[:, 3]
        net = np.maximum(
            np.cos(_col(2 * np.pi * f) * (Xi + 0.02 * warp)),
            np.cos(_col(2 * np.pi * f) * (Yi - 0.02 * warp)),
        )
        net = _ramp(net - 0.55, 0.5)
        where = np.clip(ax[i] / _col(s.tw[i]), 0, 1) ** 1.5 * _ramp(Yi - 0.3, 0.2)
        img[i] += _col(0.14 * sev) * net * where * lungs[i]

    # nodule: a small round well-defined opacity
    i = s.idx("Nodule")
    if len(i):
        u = s.u("Nodule", i)
        sev = s.severity("Nodule", i)
        box = _pick_box("Nodule", u[:, 3])
        r = np.clip(0.5 * box[:, 2] * (0.7 + 0.5 * u[:, 4]), 0.012, 0.045)
        x0 = box[:, 0] + 0.03 * (u[:, 5] - 0.5)
        y0 = box[:, 1] + 0.03 * (u[:, 6] - 0.5)
        disk = _ellipse(X[i], Y[i], _col(x0), _col(y0), _col(r), _col(r), e)
        img[i] += _col(0.2 * sev) * disk * (0.4 + 0.6 * lungs[i])

    # mass: a large lobulated opacity
    i = s.idx("Mass")
    if len(i):
        u = s.u("Mass", i)
        sev = s.severity("Mass", i)
        box = _pick_box("Mass", u[:, 3])
        r = np.clip(0.5 * np.sqrt(box[:, 2] * box[:, 3]) * (0.7 + 0.5 * u[:, 4]), 0.04, 0.12)
        x0, y0 = _col(box[:, 0]), _col(box[:, 1])
        Xi, Yi = X[i], Y[i]
        theta = np.arctan2(Yi - y0, Xi - x0)
        lobes = (
            1
            + 0.12 * np.cos(3 * theta + _col(2 * np.pi * u[:, 5]))
            + 0.06 * np.cos(5 * theta + _col(2 * np.pi * u[:, 6]))
        )
        d = np.sqrt((Xi - x0) ** 2 + (Yi - y0) ** 2)
        mass = _ramp(_col(r) * lobes - d, 0.012)
        img[i] += _col(0.22 * sev) * mass * (0.5 + 0.5 * lungs[i])

    # hernia: retrocardiac soft tissue with a gas cap and an air-fluid level
    i = s.idx("Hernia")
    if len(i):
        u = s.u("Hernia", i)
        sev = s.severity("Hernia", i)
        x0 = _col(s.cx[i] + 0.02 + 0.04 * (u[:, 1] - 0.5))
        y0 = _col(s.dome_l[i] - 0.06 - 0.03 * u[:, 2])
        rx = _col(HERNIA_SIZE * (0.04 + 0.035 * u[:, 3]))
        ry = _col(HERNIA_SIZE * (0.03 + 0.02 * u[:, 4]))
        Xi, Yi = X[i], Y[i]
        sac = _ellipse(Xi, Yi, x0, y0, rx, ry, e)
        level = y0 - ry * _col(0.1 + 0.3 * u[:, 5])
        gas = sac * _ramp(level - Yi, e)
        img[i] += _col(0.08 * sev) * sac - _col(0.28 * sev) * gas

    img += vessels

    # exposure, detector response, quantum noise
    np.clip(img, 0, 1, out=img)
    img *= _col(s.gain)
    img += _col(s.offset)
    np.clip(img, 0, 1, out=img)
    img **= _col(s.gamma)
    img += pixel_noise(s.img_seed, s.res) * _col(s.noise)
    img *= 255.0
    img += 0.5
    np.clip(img, 0, 255, out=img)
    out[...] = img.astype(np.uint8)
