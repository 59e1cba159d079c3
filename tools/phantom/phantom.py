#!/usr/bin/env python3
"""Synthetic chest-radiograph phantom generator for radstream (numpy + scipy only).

Everything here is *synthetic*: the images are procedurally drawn, deterministic for a
given seed, and are meant for pipeline tests, fixtures and a demo model only.  They are
not medical images and carry no clinical meaning.

Main entry points
-----------------
generate_cxr(seed, height=512, width=512, findings=None, **overrides)
    -> (image float32 HxW in [0,1], display sense MONOCHROME2: bright = dense,
        truth dict: {"labels": {key: 0/1}, "geometry": {...}, "params": {...}})
generate_ct_slice(seed, size)        grayscale axial CT-like slice, [0,1]
generate_ultrasound(seed, h, w)      grayscale US sector frame, [0,1]
generate_photo(seed, h, w)           colour "photograph", HxWx3 in [0,1]
generate_limb_xray(seed, h, w)       non-chest radiograph (long bones), [0,1]
to_gray(rgb)                         ITU-R BT.601 luma
percentile_window(img, 0.5, 99.5)    the windowing of the radstream preprocessing contract
write_png(path, array)               minimal PNG writer (8-bit gray/RGB or 16-bit gray)

Geometry
--------
All geometry is in normalised image coordinates: x = (col + 0.5) / width,
y = (row + 0.5) / height, both in [0, 1], origin top-left.  In a PA/AP view the
patient's right is on the image left.  Keys:

    heart_right_border   [x, y]  patient-right (image-left) heart border at its widest level
    heart_left_border    [x, y]  patient-left (image-right) heart border at its widest level
    thorax_right_inner   [x, y]  inner rib margin, patient right, at the widest thoracic level
    thorax_left_inner    [x, y]  inner rib margin, patient left, at the widest thoracic level
    heart_right_x, heart_left_x, thorax_right_x, thorax_left_x   the x of those points
    heart_y, thorax_y    the y of the heart / thoracic measuring level (mean of the 2 points)
    ctr                  cardiothoracic ratio (max heart width / max inner thoracic width),
                         rotation invariant.  Cardiomegaly phantoms draw it from 0.58..0.70,
                         normal ones from 0.36..0.50, so the true CTR is > 0.5 exactly when
                         the label says cardiomegaly.
    landmarks            the radstream landmark set (models/ctr-demo), each {"class", "x", "y"}
                         in the order of LANDMARKS:
        heart_right      = heart_right_border
        heart_left       = heart_left_border
        thorax_right     = thorax_right_inner
        thorax_left      = thorax_left_inner
        heart_top        right cardiovascular junction: where the right heart border leaves
                         the mediastinal shadow (upper end of the cardiac long axis)
        heart_bottom     cardiac apex: the left heart border at the left hemidiaphragm
                         (left cardiophrenic angle; lower end of the long axis)
    The widths use x only (the measuring points of each pair share their level), so the CTR
    from the landmarks' x equals `ctr` whatever the rotation or the image aspect.

CLI
---
    python3 tools/phantom/phantom.py --out DIR --n 8 --seed 1 [--finding cardiomegaly]
        [--size 512x512] [--negatives]
writes DIR/cxr_XXXX.png (8-bit) and DIR/ground_truth.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
from scipy import ndimage as ndi

LABELS = [
    "tuberculosis",
    "cardiomegaly",
    "pleural_thickening",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "atelectasis",
    "nodule_mass",
    "fibrosis",
    "infiltration",
    "calcification",
]

# Landmark classes of the cardiothoracic-ratio model, in output order (see Geometry).
LANDMARKS = ["heart_right", "heart_left", "thorax_right", "thorax_left", "heart_top", "heart_bottom"]

# Working resolution cap: anatomy is rendered at most at this size (longest side) and
# then interpolated up; quantum noise / fine grain is added at the full output size.
MAX_RENDER = 1024


# ----------------------------------------------------------------------------- utils
def _sig(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _smooth_noise(rng, shape, cells, order=3):
    """Smooth random field ~N(0,1)-ish with about `cells` features across the short side."""
    h, w = shape
    cells = max(2, int(cells))
    ch = max(2, int(round(cells * h / min(h, w))))
    cw = max(2, int(round(cells * w / min(h, w))))
    base = rng.standard_normal((ch + 3, cw + 3)).astype(np.float32)
    z = ndi.zoom(base, ((h + 0.0) / ch, (w + 0.0) / cw), order=order, mode="reflect")
    oy = (z.shape[0] - h) // 2
    ox = (z.shape[1] - w) // 2
    z = z[oy:oy + h, ox:ox + w]
    if z.shape != (h, w):
        z = np.pad(z, ((0, h - z.shape[0]), (0, w - z.shape[1])), mode="edge")
    s = z.std()
    return (z - z.mean()) / (s if s > 0 else 1.0)


def _resize(img, h, w, order=1):
    if img.shape == (h, w):
        return img
    return ndi.zoom(img, (h / img.shape[0], w / img.shape[1]), order=order, mode="nearest",
                    grid_mode=True)[:h, :w]


def area_resize(img, h, w):
    """Box-filter (area) resize for downscaling; bilinear otherwise."""
    H, W = img.shape[:2]
    if H % h == 0 and W % w == 0:
        fy, fx = H // h, W // w
        return img.reshape(h, fy, w, fx, *img.shape[2:]).mean(axis=(1, 3))
    if H >= h and W >= w:
        sy, sx = H / h, W / w
        pre = ndi.uniform_filter(img, size=(max(1, int(round(sy))), max(1, int(round(sx)))),
                                 mode="nearest")
        return _resize(pre, h, w, order=1)
    return _resize(img, h, w, order=1)


def percentile_window(img, low=0.5, high=99.5):
    lo, hi = np.percentile(img, [low, high])
    if hi <= lo:
        hi = lo + 1e-6
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_gray(rgb):
    rgb = np.asarray(rgb, dtype=np.float32)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def write_png(path, arr):
    """Write uint8 (HxW or HxWx3) or uint16 (HxW) / float in [0,1] (-> 8-bit) as PNG."""
    a = np.asarray(arr)
    if a.dtype != np.uint8 and a.dtype != np.uint16:
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        color_type, ch = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        color_type, ch = 2, 3
    else:
        raise ValueError("unsupported array shape for PNG")
    h, w = a.shape[:2]
    depth = 16 if a.dtype == np.uint16 else 8
    if depth == 16:
        a = a.astype(">u2")
    raw = a.reshape(h, w * ch).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1).tobytes()

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


# ------------------------------------------------------------------ parameter sampling
def sample_params(rng, findings=None, p_normal=0.35, p_finding=0.17):
    """Draw anatomy/acquisition parameters and the set of findings."""
    if findings is None:
        if rng.random() < p_normal:
            findings = []
        else:
            findings = [k for k in LABELS if rng.random() < p_finding]
            if not findings:
                findings = [LABELS[int(rng.integers(len(LABELS)))]]
    findings = list(findings)
    for f in findings:
        if f not in LABELS:
            raise ValueError(f"unknown finding {f!r}; known: {LABELS}")
    P = dict(
        findings=findings,
        # global pose / size
        rot_deg=float(rng.normal(0, 2.5)),
        shift_x=float(rng.normal(0, 0.02)),
        shift_y=float(rng.normal(0, 0.02)),
        scale=float(rng.uniform(0.86, 1.06)),
        # thorax
        wt=float(rng.uniform(0.30, 0.35)),          # inner half-width at widest level
        y_apex=float(rng.uniform(0.11, 0.15)),
        y_wide=float(rng.uniform(0.58, 0.64)),
        body_extra=float(rng.uniform(0.045, 0.10)),  # chest wall + soft tissue
        dome_r=float(rng.uniform(0.66, 0.71)),       # right hemidiaphragm top (image left)
        dome_l_delta=float(rng.uniform(0.01, 0.035)),
        dome_depth=float(rng.uniform(0.05, 0.085)),
        med_w=float(rng.uniform(0.045, 0.06)),
        aortic=float(rng.uniform(0.02, 0.04)),
        heart_top=float(rng.uniform(0.40, 0.45)),
        heart_frac_r=float(rng.uniform(0.30, 0.40)),
        ctr=float(rng.uniform(0.58, 0.70) if "cardiomegaly" in findings else rng.uniform(0.36, 0.50)),
        med_shift=0.0,
        n_ribs=int(rng.integers(9, 11)),
        rib_amp=float(rng.uniform(0.07, 0.11)),
        lung_air=float(rng.uniform(0.30, 0.38)),
        vessel_amp=float(rng.uniform(0.9, 1.3)),
        breast=bool(rng.random() < 0.3),
        gastric=bool(rng.random() < 0.6),
        marker=bool(rng.random() < 0.5),
        # acquisition / display
        mu=float(rng.uniform(1.4, 2.6)),
        gamma=float(rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(0.004, 0.02)),
        blur=float(rng.uniform(0.0005, 0.0018)),     # in units of image height
        unsharp=float(rng.uniform(0.0, 0.8)),
    )
    return P


# ---------------------------------------------------------------------- the generator
class _Ctx:
    """Pixel grid in the patient frame plus helper geometry."""

    def __init__(self, h, w, P):
        self.h, self.w, self.P = h, w, P
        rows = (np.arange(h, dtype=np.float32) + 0.5) / h
        cols = ((np.arange(w, dtype=np.float32) + 0.5) - w / 2.0) / h
        U, V = np.meshgrid(cols, rows)
        th = math.radians(P["rot_deg"])
        c, s = math.cos(th), math.sin(th)
        du = (U - P["shift_x"]) / P["scale"]
        dv = (V - 0.5 - P["shift_y"]) / P["scale"]
        # inverse rotation
        self.x = (c * du + s * dv).astype(np.float32)
        self.y = (-s * du + c * dv + 0.5).astype(np.float32)
        self.px = 1.0 / (h * P["scale"])  # one pixel in patient units
        self.e = max(self.px * 0.8, 0.0015)  # edge softness

    def to_image(self, x, y):
        """Patient-frame point -> normalised image coordinates."""
        P = self.P
        th = math.radians(P["rot_deg"])
        c, s = math.cos(th), math.sin(th)
        dx, dy = x, y - 0.5
        u = (c * dx - s * dy) * P["scale"] + P["shift_x"]
        v = (s * dx + c * dy) * P["scale"] + 0.5 + P["shift_y"]
        col = u * self.h + self.w / 2.0
        return [float(col / self.w), float(v)]


def _lat(P, y, g=0.0):
    """Lateral inner thoracic half-width at height y (patient frame)."""
    ya, yw = P["y_apex"], P["y_wide"]
    t = np.clip((y - ya) / (yw - ya), 0, 1)
    up = P["wt"] * (0.42 + 0.58 * np.sin(0.5 * np.pi * t) ** 0.6)
    below = P["wt"] * (1.0 - 0.5 * np.clip((y - yw) / 0.25, 0, None) ** 2)
    return np.where(y < yw, up, below) - g


def _dome(P, x, side):
    """Hemidiaphragm height (y, larger = lower) as a function of x for side -1 (R) / +1 (L)."""
    top = P["dome_r"] if side < 0 else P["dome_r"] + P["dome_l_delta"]
    top = top + P.get("dome_shift_" + ("r" if side < 0 else "l"), 0.0)
    xc = side * 0.42 * P["wt"]
    return top + P["dome_depth"] * ((x - xc) / (0.6 * P["wt"])) ** 2


def _heart_extent(P, y):
    """Heart half-extents (right, left) at height y; zero above the heart."""
    W = P["ctr"] * 2 * P["wt"]
    r = P["heart_frac_r"] * W
    l = W - r
    top = P["heart_top"]
    ym = P["y_wide"] - 0.005
    t = np.clip((y - top) / (ym - top), 0, 1)
    prof_l = np.sqrt(np.clip(1 - (1 - t) ** 2, 0, 1))
    prof_r = np.sqrt(np.clip(1 - (1 - t) ** 2, 0, 1)) ** 1.4
    on = y > top
    return np.where(on, r * prof_r, 0.0), np.where(on, l * prof_l, 0.0)


def _lung_margins(P, x, y, side, g_lat=0.0, g_top=0.0):
    """Signed margins (positive inside) for the lung on `side`."""
    sx = side * (x - P["med_shift"])  # mirrored coordinate, >0 towards this lung's lateral wall
    ax = side * x
    m_lat = _lat(P, y, g_lat) - ax
    xa = 0.50 * P["wt"]
    m_top = y - (P["y_apex"] + g_top + 0.9 * ((ax - xa) / P["wt"]) ** 2)
    m_dia = _dome(P, x, side) - y
    hr, hl = _heart_extent(P, y)
    heart = hr if side < 0 else hl
    med = P["med_w"] + (P["aortic"] * np.exp(-((y - 0.33) / 0.035) ** 2) if side > 0 else 0.0)
    m_med = sx - np.maximum(med, heart)
    return m_lat, m_top, m_dia, m_med


def _draw_tree(rng, acc, ctx, start, angle, length, width_px, depth, amp, spread=0.45):
    """Rasterise a branching tree (vessels / bronchi) into acc by point splatting."""
    h, w = acc.shape
    P = ctx.P
    stack = [(start[0], start[1], angle, length, amp, depth)]
    pts_x, pts_y, pts_a = [], [], []
    while stack:
        x0, y0, a, L, A, d = stack.pop()
        n = max(2, int(L / (ctx.px * 0.6)))
        t = np.linspace(0, 1, n)
        wig = np.cumsum(rng.normal(0, 0.02, n))
        xs = x0 + np.cos(a + wig) * L * t
        ys = y0 + np.sin(a + wig) * L * t
        pts_x.append(xs)
        pts_y.append(ys)
        pts_a.append(np.full(n, A, np.float32))
        if d > 0:
            x1, y1 = xs[-1], ys[-1]
            for da in (-spread, spread * rng.uniform(0.4, 1.0)):
                stack.append((x1, y1, a + da + rng.normal(0, 0.15), L * rng.uniform(0.62, 0.8),
                              A * 0.72, d - 1))
    X = np.concatenate(pts_x)
    Y = np.concatenate(pts_y)
    Aw = np.concatenate(pts_a)
    # patient frame -> pixel
    th = math.radians(P["rot_deg"])
    c, s = math.cos(th), math.sin(th)
    dy = Y - 0.5
    u = (c * X - s * dy) * P["scale"] + P["shift_x"]
    v = (s * X + c * dy) * P["scale"] + 0.5 + P["shift_y"]
    col = (u * h + w / 2.0 - 0.5).round().astype(np.int64)
    row = (v * h - 0.5).round().astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    np.add.at(acc, (row[ok], col[ok]), Aw[ok])


def _blob_field(rng, ctx, cx, cy, r, cells=6, thr=0.0):
    """Irregular patchy blob around (cx, cy) radius r in the patient frame, [0,1]."""
    d = np.sqrt(((ctx.x - cx) / r) ** 2 + ((ctx.y - cy) / (r * rng.uniform(0.7, 1.3))) ** 2)
    n = _smooth_noise(rng, ctx.x.shape, max(4, int(cells / max(r, 0.02))), order=1)
    f = _sig((1.0 - d) * 6.0 + 1.2 * n - thr)
    return f.astype(np.float32)


def _render(h, w, P, rng):
    ctx = _Ctx(h, w, P)
    x, y = ctx.x, ctx.y
    e = ctx.e
    f = set(P["findings"])
    shape = (h, w)

    # ---------------- finding-dependent anatomy changes (volume loss / shift)
    if "atelectasis" in f:
        side = P.setdefault("atel_side", int(rng.choice([-1, 1])))
        P["med_shift"] += side * rng.uniform(0.006, 0.02)
        P["dome_shift_" + ("r" if side < 0 else "l")] = -rng.uniform(0.015, 0.04)
    if "fibrosis" in f:
        P["dome_shift_r"] = P.get("dome_shift_r", 0.0) - rng.uniform(0.0, 0.025)
        P["dome_shift_l"] = P.get("dome_shift_l", 0.0) - rng.uniform(0.0, 0.025)

    ms = P["med_shift"]
    # ---------------- body / soft tissue
    yw = P["y_wide"]
    bw = _lat(P, np.clip(y, 0.3, P["y_wide"]), 0.0) + P["body_extra"]
    shoulder = (P["wt"] + P["body_extra"] + 0.10) * _sig((0.30 - y) / 0.04)
    bw = np.maximum(bw, shoulder)
    neck = 0.09 + 0.5 * np.clip(y - 0.02, 0, None)
    bw = np.where(y < 0.10, np.minimum(bw, neck + 0.2 * _sig((y - 0.06) / 0.01)), bw)
    ax = np.abs(x - ms * 0.3)
    y_top_body = 0.01 + 0.16 * (np.clip(ax - 0.09, 0, None) / 0.35) ** 1.3
    body = _sig((bw - ax) / (2 * e)) * _sig((y - y_top_body) / (3 * e))
    thick = np.sqrt(np.clip(1 - (ax / (bw + 1e-3)) ** 2, 0, 1))
    A = 0.55 * body * (0.35 + 0.65 * thick)
    if P["breast"]:
        for side in (-1, 1):
            bx, by = side * 0.55 * P["wt"], yw + 0.08
            d = ((x - bx) / 0.16) ** 2 + ((y - by) / 0.11) ** 2
            A += 0.08 * _sig((1 - d) * 4) * body

    # ---------------- lungs
    Lm = np.zeros(shape, np.float32)   # lung (air) soft mask, both sides
    margins = {}
    for side in (-1, 1):
        m = _lung_margins(P, x, y, side)
        margins[side] = m
        hemi = (side * x) > 0
        Ls = (_sig(m[0] / e) * _sig(m[1] / e) * _sig(m[2] / e) * _sig(m[3] / e)) * hemi
        Lm = np.maximum(Lm, Ls.astype(np.float32))
    # depth of air: thicker in the middle of each lung
    depth = np.clip(0.55 + 0.45 * np.sqrt(np.clip(1 - (np.abs(x) / (P["wt"] + 0.02)) ** 2, 0, 1)), 0, 1)
    fill = np.zeros(shape, np.float32)       # fraction of lung air replaced by fluid/tissue
    extra = np.zeros(shape, np.float32)      # extra density added independently of lungs
    mark_mask = np.ones(shape, np.float32)   # where lung markings are visible
    lucent = np.zeros(shape, np.float32)     # extra lucency (pleural air, cavities)

    def lung_points(n, y0, y1, side=None, periph=None):
        """Random points inside the lungs in a y band (patient frame)."""
        sel = (Lm > 0.9) & (y > y0) & (y < y1)
        if side is not None:
            sel &= (side * x) > 0
        if periph is not None:
            ratio = np.abs(x) / (_lat(P, y) + 1e-3)
            sel &= (ratio > periph[0]) & (ratio < periph[1])
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            idx = np.flatnonzero(Lm > 0.5)
        pick = rng.choice(idx, size=n)
        return [(float(x.flat[i]), float(y.flat[i])) for i in pick]

    # ---------------- findings
    if "pleural_effusion" in f:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.7 else [-1, 1]
        for side in sides:
            top = _dome(P, 0.42 * side * P["wt"], side)
            level = top - rng.uniform(0.03, 0.20)
            mh = rng.uniform(0.02, 0.06)
            t = np.clip(np.abs(x) / P["wt"], 0, 1.2)
            yb = level + mh * (1 - t ** 2)
            fl = _sig((y - yb) / rng.uniform(0.006, 0.015)) * ((side * x) > -0.01)
            # fluid replaces lung air below the meniscus: blunts the costophrenic angle and
            # hides the hemidiaphragm outline (fluid and abdomen have similar density)
            fill = np.maximum(fill, fl)
    if "pneumothorax" in f:
        side = int(rng.choice([-1, 1]))
        g = rng.uniform(0.025, 0.085)
        y_end = rng.uniform(P["y_wide"] - 0.05, P["dome_r"] + 0.02)
        taper = np.clip((y_end - y) / (y_end - P["y_apex"]) * 1.6, 0, 1)
        gl = g * taper
        m_lat, m_top, m_dia, m_med = _lung_margins(P, x, y, side, g_lat=gl, g_top=g * 0.9)
        inner = np.minimum(m_lat, m_top)
        hemi = ((side * x) > 0).astype(np.float32)
        m0 = margins[side]
        in_side = _sig(m0[0] / e) * _sig(m0[1] / e) * _sig(m0[2] / e) * _sig(m0[3] / e) * hemi
        pleural_space = in_side * _sig(-inner / e)
        mark_mask *= 1.0 - pleural_space
        lucent += 0.07 * pleural_space
        lw = max(0.0022, ctx.px * 0.9)
        line = np.exp(-(inner / lw) ** 2) * in_side * _sig(m_med / e) * _sig(m_dia / e) * (taper > 0.02)
        extra += rng.uniform(0.10, 0.16) * line
        fill = np.maximum(fill, 0.12 * in_side * _sig(inner / e))
    if "atelectasis" in f:
        side = P["atel_side"]
        if rng.random() < 0.55:  # plate-like
            for _ in range(int(rng.integers(1, 4))):
                (cx, cy), = lung_points(1, P["y_wide"] - 0.08, P["dome_r"] - 0.01, side)
                ang = rng.normal(0, 0.25)
                L = rng.uniform(0.05, 0.12)
                wd = rng.uniform(0.005, 0.011)
                xr = (x - cx) * math.cos(ang) + (y - cy) * math.sin(ang)
                yr = -(x - cx) * math.sin(ang) + (y - cy) * math.cos(ang)
                band = _sig((wd - np.abs(yr)) / (0.4 * wd)) * _sig((L - np.abs(xr)) / 0.01)
                fill = np.maximum(fill, 0.9 * band)
        else:  # lobar wedge with volume loss
            hx, hy = side * (P["med_w"] + 0.03) + ms, 0.44
            if rng.random() < 0.5:  # upper lobe: wedge towards the apex
                ang0 = math.atan2(P["y_apex"] + 0.05 - hy, side * 0.18)
            else:                   # lower lobe: wedge towards the medial base
                ang0 = math.atan2(0.22, side * 0.06)
            ang = np.arctan2(y - hy, x - hx)
            da = np.angle(np.exp(1j * (ang - ang0)))
            r = np.hypot(x - hx, y - hy)
            wedge = _sig((rng.uniform(0.25, 0.45) - np.abs(da)) / 0.05) * _sig((rng.uniform(0.16, 0.26) - r) / 0.015)
            fill = np.maximum(fill, rng.uniform(0.65, 0.95) * wedge * ((side * x) > 0))
    if "consolidation" in f:
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.choice([-1, 1]))
            (cx, cy), = lung_points(1, P["y_apex"] + 0.08, P["dome_r"] - 0.02, side)
            r = rng.uniform(0.05, 0.11)
            b = _blob_field(rng, ctx, cx, cy, r, cells=0.25, thr=0.5)
            dens = rng.uniform(0.75, 1.0)
            cons = dens * b
            if rng.random() < 0.6:  # air bronchograms
                acc = np.zeros(shape, np.float32)
                _draw_tree(rng, acc, ctx, (cx - side * 0.03, cy - 0.02), math.atan2(0.3, side * 1.0),
                           r * 0.7, 1, 3, 1.0, spread=0.4)
                acc = ndi.gaussian_filter(acc, max(0.6, 0.0025 * h))
                acc = np.clip(acc / (acc.max() + 1e-6) * 2.5, 0, 1)
                cons = cons * (1 - 0.55 * acc * b)
            fill = np.maximum(fill, cons)
    if "tuberculosis" in f:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.6 else [-1, 1]
        for side in sides:
            for (cx, cy) in lung_points(int(rng.integers(4, 10)), P["y_apex"] + 0.01, 0.38, side):
                r = rng.uniform(0.012, 0.03)
                d = np.hypot(x - cx, y - cy)
                fill = np.maximum(fill, rng.uniform(0.5, 0.9) * _sig((r - d) / (0.35 * r)))
            (cx, cy), = lung_points(1, P["y_apex"] + 0.02, 0.33, side)
            region = _blob_field(rng, ctx, cx, cy + 0.02, rng.uniform(0.05, 0.08), cells=0.3, thr=0.8)
            fill = np.maximum(fill, 0.6 * region)
        if rng.random() < 0.75:  # cavity
            (cx, cy), = lung_points(1, P["y_apex"] + 0.03, 0.34, sides[0])
            ro = rng.uniform(0.025, 0.045)
            ri = ro * rng.uniform(0.55, 0.75)
            d = np.hypot(x - cx, (y - cy) * 1.1)
            fill = np.maximum(fill, _sig((ro - d) / 0.004))
            hole = _sig((ri - d) / 0.003)
            fill = fill * (1 - hole)
            lucent += 0.05 * hole
    if "nodule_mass" in f:
        n = int(rng.integers(1, 4))
        for (cx, cy) in lung_points(n, P["y_apex"] + 0.05, P["dome_r"] - 0.02, periph=(0.25, 0.9)):
            R = rng.uniform(0.035, 0.07) if rng.random() < 0.4 else rng.uniform(0.013, 0.026)
            th = np.arctan2(y - cy, x - cx)
            Rm = R * (1 + 0.08 * np.sin(3 * th + rng.uniform(0, 6)) + 0.05 * np.sin(5 * th + rng.uniform(0, 6)))
            d = np.hypot(x - cx, y - cy)
            sph = np.sqrt(np.clip(1 - (d / Rm) ** 2, 0, 1))
            edge = _sig((Rm - d) / max(0.0025, 0.08 * R))
            fill = np.maximum(fill, edge)
            extra += rng.uniform(0.06, 0.14) * sph * (R / 0.03) ** 0.5
    if "fibrosis" in f:
        net = np.zeros(shape, np.float32)
        cell = rng.uniform(0.018, 0.03)
        nz = _smooth_noise(rng, shape, 1.0 / (cell * ctx.P["scale"]) * (min(h, w) / h), order=1)
        net = np.exp(-(nz / 0.4) ** 2)
        lower = _sig((y - rng.uniform(0.38, 0.5)) / 0.04)
        per = np.clip(np.abs(x) / (_lat(P, y) + 1e-3), 0, 1) ** 1.5
        wgt = lower * (0.35 + 0.65 * per)
        fill = np.maximum(fill, np.clip(rng.uniform(0.35, 0.55) * net * wgt + 0.15 * wgt, 0, 1))
    if "infiltration" in f:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.4 else [-1, 1]
        for side in sides:
            cy = rng.uniform(0.35, 0.6)
            region = _sig((0.16 - np.abs(y - cy) / 1.3) / 0.05) * ((side * x) > 0)
            haze = np.clip(0.5 + 0.35 * _smooth_noise(rng, shape, 6, order=1), 0, 1)
            fine = _smooth_noise(rng, shape, 1.0 / 0.012 * (min(h, w) / h), order=1)
            tex = np.clip(0.5 + 0.5 * fine, 0, 1)
            fill = np.maximum(fill, rng.uniform(0.3, 0.5) * region * (0.55 * haze + 0.45 * tex))
    if "pleural_thickening" in f:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.6 else [-1, 1]
        for side in sides:
            m_lat, m_top, _, _ = margins[side]
            hemi = ((side * x) > 0)
            tmod = np.clip(1 + 0.6 * _smooth_noise(rng, shape, 14, order=1), 0.25, 2.2)
            thk = rng.uniform(0.014, 0.028) * tmod
            if rng.random() < 0.6:  # lateral band
                y0 = rng.uniform(0.2, 0.4)
                y1 = rng.uniform(0.5, 0.68)
                band = _sig((thk - m_lat) / e) * _sig((y - y0) / 0.02) * _sig((y1 - y) / 0.02)
            else:                   # apical cap
                band = _sig((thk * 1.3 - m_top) / e) * _sig((0.3 - y) / 0.03)
            band = band * hemi * _sig((m_lat + 0.012) / e) * _sig((m_top + 0.012) / e)
            fill = np.maximum(fill, band)
            extra += rng.uniform(0.06, 0.1) * band
    if "calcification" in f:
        for (cx, cy) in lung_points(int(rng.integers(2, 7)), P["y_apex"] + 0.04, P["dome_r"] - 0.03):
            R = rng.uniform(0.005, 0.0095)
            d = np.hypot(x - cx, y - cy)
            extra += rng.uniform(0.5, 0.85) * np.sqrt(np.clip(1 - (d / R) ** 2, 0, 1)) \
                + 0.2 * _sig((R - d) / max(ctx.px * 0.5, 0.001))

    # ---------------- lung markings (vessels) from the hila
    acc = np.zeros(shape, np.float32)
    for side in (-1, 1):
        hx, hy = side * (P["med_w"] + 0.025) + ms, 0.45
        for k in range(int(rng.integers(7, 11))):
            a = math.atan2(rng.uniform(-0.9, 0.9), side * 1.0)
            a = a + rng.normal(0, 0.15)
            if k < 3:
                a = math.atan2(-rng.uniform(0.6, 1.3), side * rng.uniform(0.2, 0.8))  # upward
            _draw_tree(rng, acc, ctx, (hx + rng.normal(0, 0.01), hy + rng.normal(0, 0.03)), a,
                       rng.uniform(0.06, 0.09), 1, 4, 1.0, spread=rng.uniform(0.3, 0.55))
    sig_v = max(0.8, 0.0035 * h * P["scale"])
    acc = ndi.gaussian_filter(acc, sig_v)
    acc = acc / (np.percentile(acc[acc > 0], 99) + 1e-6) if np.any(acc > 0) else acc
    vessels = np.clip(acc, 0, 1.5) * 0.06 * P["vessel_amp"]
    # hilar shadows
    for side in (-1, 1):
        hx, hy = side * (P["med_w"] + 0.03) + ms, 0.45
        vessels += 0.10 * np.exp(-(((x - hx) / 0.03) ** 2 + ((y - hy) / 0.05) ** 2))

    fill = np.clip(fill, 0, 1)
    air = P["lung_air"] * depth * Lm
    A = A - air * (1 - fill) + vessels * Lm * mark_mask * (1 - 0.6 * fill) - lucent * Lm + extra * body

    # ---------------- mediastinum, heart, trachea, spine
    hr, hl = _heart_extent(P, y)
    heart = _sig((x - ms + hr) / e) * _sig((hl - (x - ms)) / e) * _sig((y - P["heart_top"]) / e) \
        * _sig((np.maximum(_dome(P, x, -1), _dome(P, x, 1)) + 0.02 - y) / 0.01)
    A += 0.07 * heart
    trachea = _sig((0.017 - np.abs(x - ms * 0.5)) / e) * _sig((0.37 - y) / 0.01) * _sig((y - 0.02) / 0.01)
    A -= 0.16 * trachea * body
    spine_w = 0.034
    sx = x - ms * 0.2
    spine = _sig((spine_w - np.abs(sx)) / e)
    period = rng.uniform(0.036, 0.042)
    phase = rng.uniform(0, 1)
    ph = ((y / period + phase) % 1.0)
    endplate = np.exp(-((ph - 0.5) / 0.06) ** 2)
    pedicle = np.exp(-(((np.abs(sx) - 0.022) / 0.006) ** 2 + ((ph - 0.25) / 0.12) ** 2))
    spine_tex = 0.08 + 0.03 * endplate + 0.04 * pedicle - 0.02 * np.exp(-((ph - 0.9) / 0.08) ** 2)
    A += spine * spine_tex * _sig((y - 0.03) / 0.01)

    # ---------------- ribs
    ribs = np.zeros(shape, np.float32)
    y_first = P["y_apex"] + rng.uniform(0.0, 0.02)
    spacing = (P["dome_r"] - 0.04 - y_first) / P["n_ribs"]
    for side in (-1, 1):
        ax_ = side * (x - ms * 0.2)
        for i in range(P["n_ribs"] + 1):
            y0 = y_first + i * spacing * (0.9 + 0.1 * i / P["n_ribs"]) + rng.normal(0, 0.003)
            wdt = 0.012 + 0.004 * i / P["n_ribs"]
            rows = np.flatnonzero(((y > y0 - 0.09) & (y < y0 + 0.25)).any(axis=1))
            if rows.size == 0:
                continue
            r0, r1 = rows[0], rows[-1] + 1
            xs, ys = ax_[r0:r1], y[r0:r1]
            wl = float(P["wt"] + 0.02)
            t = np.clip(xs / wl, 0, 1.2)
            steep = 0.08 + 0.07 * i / P["n_ribs"]
            fpost = y0 - 0.025 * np.sin(np.pi * np.clip(t, 0, 1) * 0.8) + steep * np.clip(t, 0, None) ** 2.2
            d = (ys - fpost) / wdt
            prof = _sig((1 - np.abs(d)) / 0.12) * (0.5 + 0.5 * np.abs(d) ** 4)
            prof *= _sig((xs - 0.025) / e) * _sig((1.08 - t) / 0.02)
            # anterior rib: from the lateral wall running medially downwards
            ya = y0 - 0.025 * np.sin(np.pi * 0.8) + steep
            fant = ya + (0.13 + 0.03 * i / P["n_ribs"]) * np.clip(1 - t, 0, None) ** 1.1
            da = (ys - fant) / (wdt * 0.85)
            prof_a = 0.55 * _sig((1 - np.abs(da)) / 0.15) * (0.6 + 0.4 * np.abs(da) ** 4)
            prof_a *= _sig((t - 0.35) / 0.04) * _sig((1.05 - t) / 0.02)
            if i >= P["n_ribs"] - 3:
                prof_a *= 0.0  # lowest anterior ribs below the diaphragm region
            ribs[r0:r1] = np.maximum(ribs[r0:r1], prof) + prof_a * 0.7
    A += P["rib_amp"] * ribs * body

    # clavicles
    for side in (-1, 1):
        ymed, ylat = rng.uniform(0.16, 0.2), rng.uniform(0.10, 0.14)
        xm, xl = 0.035, 0.30
        t = np.clip((side * x - xm) / (xl - xm), -0.1, 1.1)
        yc = ymed + (ylat - ymed) * t + 0.015 * np.sin(2 * np.pi * t)
        d = (y - yc) / 0.012
        clav = _sig((1 - np.abs(d)) / 0.12) * (0.6 + 0.4 * np.abs(d) ** 4) * _sig(t / 0.02) * _sig((1 - t) / 0.02)
        A += 0.2 * clav
    # abdomen below diaphragm is dense; gastric bubble
    if P["gastric"]:
        gx = 0.13 + rng.normal(0, 0.02)
        gy = _dome(P, gx, 1) + rng.uniform(0.03, 0.05)
        d = ((x - gx) / rng.uniform(0.04, 0.06)) ** 2 + ((y - gy) / 0.025) ** 2
        A -= 0.12 * _sig((1 - d) * 5) * _sig((y - gy + 0.008) / 0.004)

    return A.astype(np.float32), ctx


def _geometry(P, ctx):
    ms = P["med_shift"]
    ym = P["y_wide"] - 0.005
    hr, hl = _heart_extent(P, np.float32(ym))
    hr, hl = float(hr), float(hl)
    yw = P["y_wide"]
    lat = float(_lat(P, np.float32(yw)))
    hR = ctx.to_image(ms - hr, ym)
    hL = ctx.to_image(ms + hl, ym)
    tR = ctx.to_image(-lat, yw)
    tL = ctx.to_image(lat, yw)
    # right cardiovascular junction: _heart_extent's right profile r*(1-(1-t)^2)^0.7 meets
    # the mediastinal half-width med_w (the right lung's medial margin is their maximum)
    W = P["ctr"] * 2 * P["wt"]
    r = P["heart_frac_r"] * W
    q = min(1.0, (P["med_w"] / r) ** (1 / 0.7)) if r > 0 else 1.0
    t = 1.0 - math.sqrt(1.0 - q)
    top = ctx.to_image(ms - P["med_w"], P["heart_top"] + t * (ym - P["heart_top"]))
    # apex: the left border (full width below ym) meets the left hemidiaphragm
    xa = ms + hl
    apex = ctx.to_image(xa, float(_dome(P, xa, 1)))
    points = {"heart_right": hR, "heart_left": hL, "thorax_right": tR, "thorax_left": tL,
              "heart_top": top, "heart_bottom": apex}
    return {
        "heart_right_border": hR,
        "heart_left_border": hL,
        "thorax_right_inner": tR,
        "thorax_left_inner": tL,
        "heart_right_x": hR[0],
        "heart_left_x": hL[0],
        "thorax_right_x": tR[0],
        "thorax_left_x": tL[0],
        "heart_y": 0.5 * (hR[1] + hL[1]),
        "thorax_y": 0.5 * (tR[1] + tL[1]),
        "ctr": (hr + hl) / (2 * lat),
        "landmarks": [{"class": k, "x": points[k][0], "y": points[k][1]} for k in LANDMARKS],
    }


def generate_cxr(seed, height=512, width=512, findings=None, **overrides):
    """Generate one synthetic frontal chest radiograph.

    seed      int (deterministic)
    findings  None -> random mixture; a list of label keys -> exactly those findings.
    overrides any key of sample_params (e.g. ctr=0.62, rot_deg=0).
    Returns (img float32 [0,1] HxW MONOCHROME2 display sense, truth dict).
    """
    rng = np.random.default_rng(seed)
    P = sample_params(rng, findings)
    P.update(overrides)
    if "ctr" in overrides:
        is_cm = P["ctr"] > 0.5
        if is_cm and "cardiomegaly" not in P["findings"]:
            P["findings"].append("cardiomegaly")
        if not is_cm and "cardiomegaly" in P["findings"]:
            P["findings"].remove("cardiomegaly")
    # render at a capped working resolution
    s = min(1.0, MAX_RENDER / max(height, width))
    rh, rw = max(32, int(round(height * s))), max(32, int(round(width * s)))
    A, ctx = _render(rh, rw, P, rng)
    # detector / display chain
    blur_px = P["blur"] * rh
    if blur_px > 0.3:
        A = ndi.gaussian_filter(A, blur_px)
    if P["unsharp"] > 0:
        low = ndi.gaussian_filter(A, 0.03 * rh)
        A = A + P["unsharp"] * 0.5 * (A - low)
    Amin = 0.0
    T = np.exp(-P["mu"] * (A - Amin))                      # transmitted fraction
    img = 1.0 - T                                           # display: dense = bright
    img = np.clip(img, 0, None) ** P["gamma"]
    if (rh, rw) != (height, width):
        img = _resize(img.astype(np.float32), height, width, order=1)
        T = _resize(T.astype(np.float32), height, width, order=1)
    # quantum noise: relative noise grows where few photons arrive (dense regions)
    nz = rng.standard_normal((height, width)).astype(np.float32)
    nz = ndi.gaussian_filter(nz, 0.6) * 1.6
    img = img + P["noise"] * nz / np.sqrt(np.clip(T, 0.05, 1.0)) * 0.5
    if P["marker"]:
        mh, mw = int(0.035 * height), int(0.025 * width)
        r0 = int(rng.uniform(0.04, 0.12) * height)
        c0 = int((0.06 if rng.random() < 0.5 else 0.9) * width)
        img[r0:r0 + mh, c0:c0 + mw] = np.maximum(img[r0:r0 + mh, c0:c0 + mw], 0.95)
    img = np.clip(img, 0, None)
    hi = np.percentile(img, 99.9)
    img = np.clip(img / (hi + 1e-6), 0, 1).astype(np.float32)
    labels = {k: int(k in P["findings"]) for k in LABELS}
    geom = _geometry(P, ctx)
    params = {k: v for k, v in P.items() if k != "findings"}
    return img, {"seed": int(seed), "labels": labels, "findings": sorted(P["findings"]),
                 "geometry": geom, "params": params, "height": height, "width": width}


# ------------------------------------------------------------------------- negatives
def generate_ct_slice(seed, size=512):
    """Grayscale axial CT-like slice (thorax or abdomen level), [0,1]."""
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (xx + 0.5) / w - 0.5 + rng.normal(0, 0.02)
    y = (yy + 0.5) / h - 0.5 + rng.normal(0, 0.02)
    ra, rb = rng.uniform(0.36, 0.46), rng.uniform(0.26, 0.34)
    HU = np.full((h, w), -1000.0, np.float32)
    body = (x / ra) ** 2 + (y / rb) ** 2 < 1
    fat = (x / (ra - 0.025)) ** 2 + (y / (rb - 0.025)) ** 2 < 1
    HU[body] = -100
    HU[fat] = 40
    thorax = rng.random() < 0.6
    if thorax:
        for side in (-1, 1):
            lung = ((x - side * ra * 0.45) / (ra * 0.4)) ** 2 + ((y + 0.01) / (rb * 0.78)) ** 2 < 1
            HU[lung] = -850
            ves = _smooth_noise(rng, (h, w), 30, order=1)
            HU[lung & (ves > 1.6)] = -300
        heart = ((x - 0.05) / (ra * 0.33)) ** 2 + ((y + 0.05) / (rb * 0.45)) ** 2 < 1
        HU[heart] = 45
        aorta = (x + 0.01) ** 2 + (y - rb * 0.45) ** 2 < (0.035) ** 2
        HU[aorta] = 60
    else:
        liver = ((x + 0.12) / (ra * 0.55)) ** 2 + ((y + 0.02) / (rb * 0.7)) ** 2 < 1
        HU[liver] = 60
        for side in (-1, 1):
            kid = ((x - side * 0.12) / 0.05) ** 2 + ((y - rb * 0.4) / 0.07) ** 2 < 1
            HU[kid] = 35
        bowel = _smooth_noise(rng, (h, w), 12, order=1)
        HU[body & ~liver & (bowel > 1.0) & (x > -0.05)] = -600
    # bone ring: ribs as an interrupted ellipse, vertebra posterior, sternum anterior
    r = (x / (ra - 0.04)) ** 2 + (y / (rb - 0.04)) ** 2
    ang = np.arctan2(y, x)
    rib = (np.abs(r - 1) < 0.06) & (np.sin(ang * rng.integers(7, 11)) > 0.2)
    HU[rib & body] = 700
    vert = x ** 2 + (y - rb * 0.65) ** 2 < 0.045 ** 2
    HU[vert] = 400
    HU[(x ** 2 + (y - rb * 0.65) ** 2 < 0.03 ** 2)] = 250
    sp = (np.abs(x) < 0.012) & (np.abs(y - rb * 0.95) < 0.05)
    HU[sp] = 500
    stern = (np.abs(x) < 0.03) & (np.abs(y + rb * 0.9) < 0.012)
    HU[stern & body] = 500
    # table
    HU[(y > rb + 0.06) & (y < rb + 0.075) & (np.abs(x) < 0.45)] = 200
    HU = ndi.gaussian_filter(HU, 0.8) + rng.normal(0, rng.uniform(8, 25), (h, w)).astype(np.float32)
    if rng.random() < 0.3:  # lung window
        c, wd = -600, 1500
    else:                   # soft tissue window
        c, wd = rng.uniform(30, 60), rng.uniform(350, 450)
    img = np.clip((HU - (c - wd / 2)) / wd, 0, 1)
    return img.astype(np.float32)


def generate_ultrasound(seed, height=480, width=640):
    """Grayscale ultrasound sector frame with speckle, [0,1]."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ax, ay = w / 2 + rng.normal(0, w * 0.02), -rng.uniform(0.02, 0.1) * h
    r = np.hypot(xx - ax, yy - ay) / h
    th = np.arctan2(xx - ax, yy - ay)
    half = math.radians(rng.uniform(30, 45))
    r0, r1 = rng.uniform(0.05, 0.15), rng.uniform(0.85, 1.05)
    sector = (np.abs(th) < half) & (r > r0) & (r < r1)
    # tissue echogenicity map
    tissue = 0.45 + 0.2 * _smooth_noise(rng, (h, w), 5, order=1)
    for _ in range(int(rng.integers(1, 4))):  # anechoic cysts / vessels
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.8) * h
        rr = rng.uniform(0.04, 0.12) * h
        m = ((xx - cx) / rr) ** 2 + ((yy - cy) / (rr * rng.uniform(0.5, 1))) ** 2 < 1
        tissue[m] = 0.05
    for _ in range(int(rng.integers(1, 4))):  # bright interfaces
        rr = rng.uniform(0.3, 0.8)
        band = np.exp(-((r - rr - 0.05 * np.sin(th * rng.uniform(2, 6))) / 0.01) ** 2)
        tissue += 0.6 * band
    # speckle: Rayleigh-distributed, elongated laterally
    sp = np.abs(ndi.gaussian_filter(rng.standard_normal((h, w)), (0.8, 2.0))
                + 1j * ndi.gaussian_filter(rng.standard_normal((h, w)), (0.8, 2.0)))
    sp = sp / sp.mean()
    att = np.exp(-rng.uniform(0.3, 1.2) * r)
    img = np.clip(tissue * sp * att * rng.uniform(0.6, 1.0), 0, None)
    img = np.log1p(4 * img) / np.log1p(4 * 2.5)
    img = np.where(sector, np.clip(img, 0, 1), 0.0)
    # overlays: text-like blocks, depth scale
    for _ in range(int(rng.integers(2, 6))):
        r0_, c0_ = int(rng.uniform(0.02, 0.2) * h), int(rng.uniform(0.02, 0.8) * w)
        bh, bw = int(0.02 * h) + 1, int(rng.uniform(0.05, 0.15) * w)
        blk = rng.random((bh, bw)) < 0.5
        img[r0_:r0_ + bh, c0_:c0_ + bw][blk[:img[r0_:r0_ + bh, c0_:c0_ + bw].shape[0],
                                            :img[r0_:r0_ + bh, c0_:c0_ + bw].shape[1]]] = 0.9
    col = int(w * 0.95)
    for k in range(1, 10):
        img[int(k * h / 10), col:col + 6] = 0.8
    return img.astype(np.float32)


def generate_photo(seed, height=480, width=640):
    """Colour 'photograph'-like image (sky, ground, shapes, texture), HxWx3 in [0,1]."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = yy / h, xx / w
    horizon = rng.uniform(0.35, 0.7) + 0.05 * np.sin(xn * rng.uniform(2, 8) + rng.uniform(0, 6))
    sky_top = rng.uniform(0.3, 0.7, 3) * np.array([0.5, 0.7, 1.0])
    sky_bot = np.clip(sky_top + rng.uniform(0.1, 0.35), 0, 1)
    ground = rng.uniform(0.15, 0.6, 3) * np.array(rng.choice([[0.6, 0.9, 0.4], [0.9, 0.7, 0.5], [0.5, 0.5, 0.5]]))
    img = np.zeros((h, w, 3), np.float32)
    t = np.clip(yn / np.maximum(horizon, 1e-3), 0, 1)[..., None]
    sky = sky_top * (1 - t) + sky_bot * t
    gmask = (yn > horizon)[..., None]
    tex = _smooth_noise(rng, (h, w), 40, order=1)[..., None]
    gr = ground * (0.8 + 0.25 * (yn[..., None] - 0.5)) + 0.06 * tex
    img = np.where(gmask, gr, sky)
    for _ in range(int(rng.integers(3, 9))):
        col = rng.uniform(0, 1, 3)
        cx, cy = rng.uniform(0, 1), rng.uniform(0.2, 1)
        kind = rng.random()
        if kind < 0.4:
            rr = rng.uniform(0.03, 0.15)
            m = ((xn - cx) / rr) ** 2 + ((yn - cy) / (rr * w / h)) ** 2 < 1
        elif kind < 0.8:
            bw_, bh_ = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.4)
            m = (np.abs(xn - cx) < bw_ / 2) & (np.abs(yn - cy) < bh_ / 2)
        else:
            bl = _smooth_noise(rng, (h, w), 4, order=1)
            m = bl > 1.2
        shade = (0.75 + 0.25 * (1 - yn))[..., None]
        img = np.where(m[..., None], col * shade, img)
    img = img + 0.03 * rng.standard_normal((h, w, 1)).astype(np.float32)
    img = ndi.gaussian_filter(img, (0.7, 0.7, 0))
    return np.clip(img, 0, 1).astype(np.float32)


def generate_limb_xray(seed, height=512, width=400):
    """A non-chest radiograph: forearm/leg-like long bones, [0,1] MONOCHROME2."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = (xx + 0.5) / w - 0.5, (yy + 0.5) / h
    ang = rng.normal(0, 0.15)
    xr = x * math.cos(ang) - (y - 0.5) * math.sin(ang)
    soft_w = rng.uniform(0.22, 0.35)
    A = 0.35 * _sig((soft_w - np.abs(xr)) / 0.01) * np.sqrt(np.clip(1 - (xr / soft_w) ** 2, 0, 1))
    nb = int(rng.integers(1, 3))
    for k in range(nb):
        bx = (k - (nb - 1) / 2) * rng.uniform(0.12, 0.18)
        bwid = rng.uniform(0.045, 0.08) * (1 + 0.4 * np.exp(-((y - 0.05) / 0.12) ** 2) + 0.4 * np.exp(-((y - 0.95) / 0.12) ** 2))
        d = np.abs(xr - bx) / bwid
        cortex = _sig((1 - d) / 0.03) * (0.35 + 0.65 * np.clip(d, 0, 1) ** 3)
        A += 0.55 * cortex
    T = np.exp(-2.0 * A)
    img = 1 - T + 0.01 * rng.standard_normal((h, w))
    return np.clip(img / img.max(), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------- CLI
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--finding", action="append", default=None,
                    help="force this finding (repeatable); 'none' for a normal study")
    ap.add_argument("--size", default="512x512", help="ROWSxCOLS")
    ap.add_argument("--negatives", action="store_true",
                    help="also write a CT slice, an ultrasound frame, a photo and a limb radiograph")
    a = ap.parse_args(argv)
    rows, cols = (int(v) for v in a.size.lower().split("x"))
    os.makedirs(a.out, exist_ok=True)
    findings = None
    if a.finding is not None:
        findings = [] if a.finding == ["none"] else a.finding
    truth = []
    for i in range(a.n):
        seed = a.seed * 100003 + i
        img, gt = generate_cxr(seed, rows, cols, findings=findings)
        name = f"cxr_{i:04d}.png"
        write_png(os.path.join(a.out, name), img)
        gt["file"] = name
        truth.append(gt)
    if a.negatives:
        write_png(os.path.join(a.out, "neg_ct.png"), generate_ct_slice(a.seed, 512))
        write_png(os.path.join(a.out, "neg_us.png"), generate_ultrasound(a.seed, 480, 640))
        write_png(os.path.join(a.out, "neg_photo.png"),
                  np.clip(np.round(generate_photo(a.seed, 480, 640) * 255), 0, 255).astype(np.uint8))
        write_png(os.path.join(a.out, "neg_limb.png"), generate_limb_xray(a.seed))
    with open(os.path.join(a.out, "ground_truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    print(f"wrote {a.n} phantoms to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
