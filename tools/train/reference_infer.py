#!/usr/bin/env python3
"""Reference (Python) implementation of the radstream preprocessing contract + ensemble.

Runs in the test venv (numpy, scipy, pydicom, onnxruntime; no torch).  Use it to produce
golden outputs for the Rust runtime:

    python3 tools/train/reference_infer.py fixtures/dicom/cr_cardiomegaly/001.dcm fixtures/images/*.png
    python3 tools/train/reference_infer.py --json fixtures/expected_outputs.json fixtures/dicom/*/*.dcm ...

Contract (models/cxr-demo/model.toml):
  DICOM: stored -> modality LUT (RescaleSlope/Intercept) -> VOI: first WindowCenter/Width
         (DICOM PS3.3 C.11.2.1.2 LINEAR) if present, else 0.5/99.5 percentile window
         -> [0,1]; MONOCHROME1 inverted (v = 1 - v) -> first frame.
  PNG/JPEG (8/16-bit gray; colour -> BT.601 luma): v = value / max -> percentile window.
  -> bilinear resize to 256x256 (half-pixel centres, aspect not preserved)
  -> x = (v - 0.5) / 0.25 -> members (mean of sigmoid) and gate (sigmoid).
"""
import argparse
import json
import os
import sys
import tomllib
import zlib

import numpy as np
from scipy import ndimage as ndi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def percentile_window(v, lo=0.5, hi=99.5):
    a, b = np.percentile(v, [lo, hi])
    if b <= a:
        b = a + 1e-6
    return np.clip((v - a) / (b - a), 0, 1).astype(np.float32)


def load_dicom(path):
    import pydicom
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    if getattr(ds, "NumberOfFrames", 1) and int(getattr(ds, "NumberOfFrames", 1)) > 1:
        px = px[0]
    if px.ndim == 3:  # colour: luma
        px = 0.299 * px[..., 0] + 0.587 * px[..., 1] + 0.114 * px[..., 2]
    x = px.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c = ds.WindowCenter
        w = ds.WindowWidth
        c = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
        w = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
        v = np.clip((x - (c - 0.5)) / max(w - 1, 1e-6) + 0.5, 0, 1).astype(np.float32)
        how = "voi"
    else:
        v = percentile_window(x)
        how = "percentile"
    if ds.PhotometricInterpretation == "MONOCHROME1":
        v = 1.0 - v
    return v, how


def _read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            hdr = body
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = int.from_bytes(hdr[0:4], "big"), int.from_bytes(hdr[4:8], "big")
    depth, ctype = hdr[8], hdr[9]
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = ch * depth // 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.uint8)
    prev = np.zeros(w * bpp, np.int32)
    for r in range(h):
        ft, line = raw[r, 0], raw[r, 1:].astype(np.int32)
        cur = np.zeros_like(line)
        if ft == 0:
            cur = line
        elif ft == 2:
            cur = (line + prev) & 255
        else:
            for i in range(len(line)):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if ft == 1:
                    cur[i] = (line[i] + a) & 255
                elif ft == 3:
                    cur[i] = (line[i] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (line[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
        out[r] = cur
        prev = cur
    if depth == 16:
        arr = out.view(">u2").reshape(h, w, ch).astype(np.float32) / 65535.0
    else:
        arr = out.reshape(h, w, ch).astype(np.float32) / 255.0
    return arr


def load_image(path):
    try:
        from PIL import Image  # JPEG needs Pillow; PNG falls back to the built-in reader
        im = Image.open(path)
        a = np.asarray(im).astype(np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        if a.ndim == 2:
            a = a[..., None]
    except ImportError:
        a = _read_png(path)
    if a.shape[2] >= 3:
        g = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    else:
        g = a[..., 0]
    return percentile_window(g), "percentile"


def resize_bilinear(v, h=256, w=256):
    """Half-pixel-centre bilinear (no antialias), edge clamped."""
    H, W = v.shape
    ys = (np.arange(h) + 0.5) * H / h - 0.5
    xs = (np.arange(w) + 0.5) * W / w - 0.5
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    return ndi.map_coordinates(v, [Y, X], order=1, mode="nearest").astype(np.float32)


def run(paths, model_dir):
    import onnxruntime as ort
    with open(os.path.join(model_dir, "model.toml"), "rb") as f:
        man = tomllib.load(f)
    inp = man["input"]
    sess = [ort.InferenceSession(os.path.join(model_dir, m["file"]), providers=["CPUExecutionProvider"])
            for m in man["ensemble"]["members"]]
    gate = ort.InferenceSession(os.path.join(model_dir, man["gate"]["file"]), providers=["CPUExecutionProvider"])
    keys = [lab["key"] for lab in man["labels"]]
    thr = {lab["key"]: lab["threshold"] for lab in man["labels"]}
    out = {}
    for p in paths:
        v, how = load_dicom(p) if p.lower().endswith(".dcm") else load_image(p)
        v = resize_bilinear(v, inp["height"], inp["width"])
        x = ((v - inp["mean"]) / inp["std"])[None, None].astype(np.float32)
        probs = np.stack([1 / (1 + np.exp(-s.run(["logits"], {"image": x})[0][0])) for s in sess])
        ens = probs.mean(0)
        spread = float(probs.std(0).max())
        g = float(1 / (1 + np.exp(-gate.run(["logits"], {"image": x})[0][0, 0])))
        eps = 1e-7
        ent = float(-(ens * np.log(ens + eps) + (1 - ens) * np.log(1 - ens + eps)).mean())
        u = man["uncertainty"]
        tier = "optimal" if spread < u["optimal_below"] else ("good" if spread < u["good_below"] else "review")
        out[os.path.relpath(p, ROOT) if os.path.isabs(p) or os.path.exists(p) else p] = {
            "windowing": how, "gate_prob": round(g, 5), "gate_pass": g >= man["gate"]["threshold"],
            "probs": {k: round(float(ens[i]), 5) for i, k in enumerate(keys)},
            "positive": [k for i, k in enumerate(keys) if ens[i] >= thr[k]],
            "spread_max_std": round(spread, 5), "tier": tier, "mean_entropy": round(ent, 5),
            "should_review": tier == "review" or ent > u["review_entropy_above"],
            "input_mean": round(float(x.mean()), 5), "input_std": round(float(x.std()), 5)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "cxr-demo"))
    ap.add_argument("--json", default=None, help="write results here")
    a = ap.parse_args()
    res = run(a.paths, a.model_dir)
    s = json.dumps(res, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(s + "\n")
    print(s)


if __name__ == "__main__":
    sys.exit(main())
