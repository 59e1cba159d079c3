#!/usr/bin/env python3
"""Train the radstream demo landmark ensemble `ctr-demo` (cardiothoracic ratio).

DEMO ONLY: trained and evaluated on synthetic phantoms from tools/phantom/phantom.py, whose
ground-truth geometry gives the landmarks. Not a clinical device, not for diagnostic use.

Sub-commands (`all` runs gen, train, eval, manifest in order):

    .venv-train/bin/python tools/train/train_landmarks.py gen      --cache /tmp/radstream-lm
    .venv-train/bin/python tools/train/train_landmarks.py train    --cache /tmp/radstream-lm
    .venv-train/bin/python tools/train/train_landmarks.py eval     --cache /tmp/radstream-lm
    .venv-train/bin/python tools/train/train_landmarks.py manifest --cache /tmp/radstream-lm

Preprocessing is the classifier's (tools/train/train.py `preprocess`, the Rust runtime's
contract): percentile window 0.5 / 99.5 %, resize to 256 x 256 (aspect not kept, so the
normalised coordinates do not change), x = (v - 0.5) / 0.25, input "image" N x 1 x 256 x 256.

Output "landmarks": N x 12 = (x, y) of heart_right, heart_left, thorax_right, thorax_left,
heart_top, heart_bottom (phantom.LANDMARKS order), normalised 0..1, x right, y down. Each
member is a small conv net whose head is a soft-argmax over a 32 x 32 heat map per landmark,
so its outputs are coordinates already (manifest activation `identity`).

Members are trained on bootstrap samples of the training set (one fold per member, seeds
1000 + m). The gate is the classifier's (models/cxr-demo/gate.onnx), copied.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from multiprocessing import Pool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "phantom"))
sys.path.insert(0, HERE)
import phantom as ph  # noqa: E402
from train import MEAN, STD, SIZE, preprocess  # noqa: E402  (the classifier's contract)
from train import _export, _sha256, ort_run, ort_session  # noqa: E402

RENDER = 320
LANDMARKS = ph.LANDMARKS
K = len(LANDMARKS)
HEAT = 32  # heat-map side: one cell = 8 input pixels
DISPLAY = {
    "heart_right": "Right border of the cardiac silhouette at its widest (patient right, image left)",
    "heart_left": "Left border of the cardiac silhouette at its widest (patient left, image right)",
    "thorax_right": "Inner margin of the right hemithorax at its widest level",
    "thorax_left": "Inner margin of the left hemithorax at its widest level",
    "heart_top": "Right cardiovascular junction: upper end of the cardiac long axis",
    "heart_bottom": "Cardiac apex at the left hemidiaphragm: lower end of the long axis",
}
SPLITS = {"train": 7_000_000, "val": 8_000_000, "test": 9_000_000}


# ------------------------------------------------------------------------------ data
def _findings(seed):
    """A third of the phantoms have cardiomegaly (plus random others); the rest the
    generator's own mixture (about 12 % cardiomegaly)."""
    rng = np.random.default_rng(seed + 11)
    if rng.random() < 0.3:
        return ["cardiomegaly"] + [k for k in ph.LABELS if k != "cardiomegaly" and rng.random() < 0.1]
    return None


def _gen(args):
    seed, findings = args
    rng = np.random.default_rng(seed + 7)
    aspect = float(rng.choice([0.83, 1.0, 1.0, 1.2]))
    img, gt = ph.generate_cxr(seed, RENDER, int(round(RENDER * aspect)), findings=findings)
    v = preprocess(img, "area" if seed % 2 else "bilinear")
    g = gt["geometry"]
    pts = np.array([[p["x"], p["y"]] for p in g["landmarks"]], np.float32)
    return v.astype(np.float16), pts, np.float32(g["ctr"]), np.uint8(gt["labels"]["cardiomegaly"])


def _save_split(a, pool, name, args):
    t0 = time.time()
    res = pool.map(_gen, args, chunksize=8)
    X = np.stack([r[0] for r in res])
    P = np.stack([r[1] for r in res])
    C = np.array([r[2] for r in res], np.float32)
    Y = np.array([r[3] for r in res], np.uint8)
    np.savez(os.path.join(a.cache, f"{name}.npz"), x=X, pts=P, ctr=C, cm=Y,
             seeds=np.array([s for s, _ in args], np.int64))
    print(f"{name}: {X.shape} cardiomegaly {Y.mean():.3f} ctr {C.min():.3f}..{C.max():.3f} "
          f"({time.time() - t0:.0f}s)", flush=True)


def cmd_gen(a):
    os.makedirs(a.cache, exist_ok=True)
    sizes = {"train": a.n_train, "val": a.n_val, "test": a.n_test}
    with Pool(a.workers) as pool:
        for name, base in SPLITS.items():
            _save_split(a, pool, name, [(base + i, _findings(base + i)) for i in range(sizes[name])])
        # targeted check set: half pure cardiomegaly, half normal
        args = [(9_500_000 + i, ["cardiomegaly"] if i % 2 else []) for i in range(a.n_check)]
        _save_split(a, pool, "check", args)


def _load(a, name):
    d = np.load(os.path.join(a.cache, f"{name}.npz"))
    return {k: d[k] for k in d.files}


# --------------------------------------------------------------------------- the net
def build_member(torch):
    nn = torch.nn

    def cbr(i, o, s=1, k=3):
        return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))

    class Net(nn.Module):
        """8x8 patch stem to 32x32, an encoder down to 8x8, the 32, 16 and 8 features fused
        at 32x32, one heat map per landmark, soft-argmax to (x, y) in [0, 1]."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 24, 8, 8, 0, bias=False), nn.BatchNorm2d(24),
                                      nn.ReLU(inplace=True))            # 32
            self.e32 = cbr(24, 32)
            self.e16 = nn.Sequential(cbr(32, 48, 2), cbr(48, 48))       # 16
            self.e8 = nn.Sequential(cbr(48, 64, 2), cbr(64, 64), cbr(64, 64))  # 8
            self.fuse = cbr(32 + 48 + 64, 32, 1, 1)
            self.heat = nn.Conv2d(32, K, 3, 1, 1)
            c = (torch.arange(HEAT, dtype=torch.float32) + 0.5) / HEAT
            self.register_buffer("cx", c.repeat(HEAT))                  # column of each cell
            self.register_buffer("cy", c.repeat_interleave(HEAT))       # row of each cell

        def forward(self, x):
            f32 = self.e32(self.stem(x))
            f16 = self.e16(f32)
            f8 = self.e8(f16)
            up = nn.functional.interpolate
            f = torch.cat([f32, up(f16, scale_factor=2.0, mode="bilinear", align_corners=False),
                           up(f8, scale_factor=4.0, mode="bilinear", align_corners=False)], 1)
            h = self.heat(self.fuse(f)).flatten(2)              # N, K, 1024
            p = torch.softmax(h, dim=2)
            xs = (p * self.cx).sum(2)
            ys = (p * self.cy).sum(2)
            return torch.stack([xs, ys], 2).flatten(1)          # N, 2K: x0, y0, x1, y1, ...

    return Net()


def _augment(torch, xb, pts, gen):
    """Intensity (gamma, contrast, offset, noise) and translation up to 12 px; the landmarks
    move with the image."""
    B = xb.shape[0]
    g = torch.exp(torch.randn(B, 1, 1, 1, generator=gen) * 0.15)
    xb = xb.clamp(0, 1) ** g
    c = 1 + torch.randn(B, 1, 1, 1, generator=gen) * 0.06
    b = torch.randn(B, 1, 1, 1, generator=gen) * 0.03
    xb = (xb - 0.5) * c + 0.5 + b
    dx, dy = [int(v) for v in torch.randint(-12, 13, (2,), generator=gen)]
    xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    pts = pts.clone()
    pts[:, :, 0] += dx / SIZE
    pts[:, :, 1] += dy / SIZE
    xb = xb + torch.randn(xb.shape, generator=gen) * (torch.rand(B, 1, 1, 1, generator=gen) * 0.02)
    return xb, pts


def _train_member(torch, net, X, P, a, seed, log):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    n = X.shape[0]
    steps = a.epochs * (n // a.bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.15)
    # x errors move the CTR, y errors only the drawing: weight x twice
    w = torch.tensor([2.0, 1.0]).repeat(K)
    t0 = time.time()
    for ep in range(a.epochs):
        net.train()
        perm = torch.randperm(n, generator=gen).numpy()
        tot = 0.0
        for k in range(n // a.bs):
            idx = np.sort(perm[k * a.bs:(k + 1) * a.bs])
            xb = torch.from_numpy(X[idx].astype(np.float32)).unsqueeze(1)
            pb = torch.from_numpy(P[idx])
            xb, pb = _augment(torch, xb, pb, gen)
            out = net((xb - MEAN) / STD)
            loss = (torch.nn.functional.smooth_l1_loss(out, pb.flatten(1), reduction="none", beta=0.01)
                    * w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        print(f"{log} epoch {ep + 1}/{a.epochs} loss {tot / (n // a.bs):.5f} ({time.time() - t0:.0f}s)",
              flush=True)
    net.eval()
    return net


def cmd_train(a):
    import torch
    torch.set_num_threads(a.threads)
    d = _load(a, "train")
    X, P = d["x"], d["pts"]
    if a.n_use:
        X, P = X[:a.n_use], P[:a.n_use]
    os.makedirs(a.out, exist_ok=True)
    n = X.shape[0]
    members = range(a.members) if a.member is None else [int(m) for m in a.member.split(",")]
    for m in members:
        torch.manual_seed(1000 + m)
        idx = np.sort(np.random.default_rng(1000 + m).integers(0, n, size=n))  # bootstrap fold
        net = build_member(torch)
        t0 = time.time()
        _train_member(torch, net, X[idx], P[idx], a, 1000 + m, f"member{m}")
        path = os.path.join(a.out, f"member{m}.onnx")
        err, size = _export(torch, net, path, output="landmarks", tol=1e-4)
        torch.save(net.state_dict(), os.path.join(a.cache, f"member{m}.pt"))
        print(f"member{m}: {time.time() - t0:.0f}s, exported {path} ({size} B), "
              f"onnxruntime max|diff| {err:.1e}", flush=True)
    gate_src = os.path.join(ROOT, "models", "cxr-demo", "gate.onnx")
    shutil.copyfile(gate_src, os.path.join(a.out, "gate.onnx"))
    print(f"gate: copied {gate_src}", flush=True)


# ---------------------------------------------------------------------------- eval
def _member_points(a, X):
    """M x N x K x 2 member predictions (onnxruntime, the exported files)."""
    files = [os.path.join(a.out, f"member{m}.onnx") for m in range(a.members)]
    return np.stack([ort_run(ort_session(f), X, "landmarks").reshape(len(X), K, 2) for f in files])


def spread_of(Pm):
    """The Rust definition: per landmark the RMS over members of the distance from the
    ensemble mean, then the mean over landmarks (normalised units)."""
    mean = Pm.mean(0)
    d2 = ((Pm - mean) ** 2).sum(-1)           # M, N, K
    return np.sqrt(d2.mean(0)).mean(-1)       # N


def ctr_of(P):
    """CTR from points N x K x 2 (x only), as src/measurement/ctr.rs; NaN when impossible."""
    i = {k: j for j, k in enumerate(LANDMARKS)}
    cw = P[:, i["heart_left"], 0] - P[:, i["heart_right"], 0]
    tw = P[:, i["thorax_left"], 0] - P[:, i["thorax_right"], 0]
    ok = (cw > 0) & (tw > 0)
    return np.where(ok, cw / np.where(tw > 0, tw, 1), np.nan)


def _errors(Pm, d):
    mean = Pm.mean(0)
    err = np.sqrt(((mean - d["pts"]) ** 2).sum(-1))    # N, K, normalised Euclidean
    ctr = ctr_of(mean)
    return mean, err, ctr, np.abs(ctr - d["ctr"])


def _r(v, n=4):
    return round(float(v), n)


def cmd_eval(a):
    rep = {"landmarks": LANDMARKS, "input_px": SIZE}
    dv, dt, dc = _load(a, "val"), _load(a, "test"), _load(a, "check")
    Pv, Pt, Pc = _member_points(a, dv["x"]), _member_points(a, dt["x"]), _member_points(a, dc["x"])
    _, ev, _, cev = _errors(Pv, dv)
    mt, et, ctr_t, cet = _errors(Pt, dt)
    rep["n_val"], rep["n_test"], rep["n_check"] = len(dv["x"]), len(dt["x"]), len(dc["x"])
    rep["test"] = {
        "mean_error_norm": _r(et.mean(), 5),
        "mean_error_px256": _r(et.mean() * SIZE, 2),
        "median_error_px256": _r(np.median(et) * SIZE, 2),
        "p95_error_px256": _r(np.quantile(et, 0.95) * SIZE, 2),
        "mean_abs_x_error_px256": _r(np.abs(mt[..., 0] - dt["pts"][..., 0]).mean() * SIZE, 2),
        "mean_abs_y_error_px256": _r(np.abs(mt[..., 1] - dt["pts"][..., 1]).mean() * SIZE, 2),
        "per_landmark_mean_error_px256": {k: _r(et[:, j].mean() * SIZE, 2) for j, k in enumerate(LANDMARKS)},
        "per_landmark_mean_abs_x_px256": {
            k: _r(np.abs(mt[:, j, 0] - dt["pts"][:, j, 0]).mean() * SIZE, 2) for j, k in enumerate(LANDMARKS)},
        "member_mean_error_px256": [_r(np.sqrt(((Pt[m] - dt["pts"]) ** 2).sum(-1)).mean() * SIZE, 2)
                                    for m in range(len(Pt))],
        "ctr_mae": _r(np.nanmean(cet)),
        "ctr_p95_abs_error": _r(np.nanquantile(cet, 0.95)),
        "ctr_not_computable": int(np.isnan(ctr_t).sum()),
        "ctr_bias": _r(np.nanmean(ctr_t - dt["ctr"])),
        "ctr_side_of_0.5_agreement": _r(np.mean((ctr_t >= 0.5) == (dt["ctr"] >= 0.5))),
    }
    # targeted check set: pure cardiomegaly (true CTR 0.58..0.70) vs normal (0.36..0.50)
    mc, _, ctr_c, cec = _errors(Pc, dc)
    cm = dc["cm"] == 1
    assert (dc["ctr"][cm] > 0.5).all() and (dc["ctr"][~cm] < 0.5).all(), "phantom CTR vs label"
    rep["check"] = {
        "n_cardiomegaly": int(cm.sum()), "n_normal": int((~cm).sum()),
        "cardiomegaly_ctr_gt_0.5_rate": _r(np.mean(ctr_c[cm] > 0.5)),
        "normal_ctr_lt_0.5_rate": _r(np.mean(ctr_c[~cm] < 0.5)),
        "cardiomegaly_min_ctr": _r(np.nanmin(ctr_c[cm])),
        "normal_max_ctr": _r(np.nanmax(ctr_c[~cm])),
        "ctr_mae": _r(np.nanmean(cec)),
    }
    # spread vs error, and the tiers
    sv, st = spread_of(Pv), spread_of(Pt)
    rep["spread_quantiles_test"] = {q: _r(np.quantile(st, q / 100), 5) for q in (10, 25, 50, 75, 90, 95, 99)}
    rep["spread_error_spearman_test"] = _r(_spearman(st, et.mean(1)), 3)
    rep["spread_ctr_error_spearman_test"] = _r(_spearman(st, np.nan_to_num(cet, nan=1.0)), 3)
    order = np.argsort(st)
    rep["error_by_spread_quintile_test"] = [
        {"spread_max": _r(st[q].max(), 5), "mean_error_px256": _r(et[q].mean() * SIZE, 2),
         "ctr_mae": _r(np.nanmean(cet[q]))}
        for q in np.array_split(order, 5)]

    def tiers(s, opt, good):
        return np.where(s < opt, 0, np.where(s < good, 1, 2))

    def tier_table(s, e, ce, opt, good):
        t = tiers(s, opt, good)
        return {nm: {"fraction": _r((t == k).mean()),
                     "mean_error_px256": _r(e[t == k].mean() * SIZE, 2) if (t == k).any() else None,
                     "ctr_mae": _r(np.nanmean(ce[t == k])) if (t == k).any() else None}
                for k, nm in enumerate(["optimal", "good", "review"])}

    rep["radanalyzer_thresholds_test"] = tier_table(st, et.mean(1), cet, 0.005, 0.008)
    # calibration on the validation set: optimal = the val median spread, good = the val 90th
    # percentile, review above (the same rule as the classifier's, tools/train/train.py)
    cal = {"optimal_below": _r(np.quantile(sv, 0.5), 4), "good_below": _r(np.quantile(sv, 0.9), 4)}
    rep["calibrated_thresholds"] = cal
    rep["calibrated_thresholds_test"] = tier_table(st, et.mean(1), cet, cal["optimal_below"], cal["good_below"])
    rep["val"] = {"mean_error_px256": _r(ev.mean() * SIZE, 2), "ctr_mae": _r(np.nanmean(cev))}
    gate = os.path.join(a.out, "gate.onnx")
    if os.path.exists(gate):
        z = np.concatenate([ort_run(ort_session(gate), d["x"], "logits")[:, 0] for d in (dt, dc)])
        rep["gate_accepts_test_and_check_phantoms"] = _r(np.mean(1 / (1 + np.exp(-z)) >= 0.5))
    with open(os.path.join(a.cache, "eval_landmarks.json"), "w") as f:
        json.dump(rep, f, indent=1)
    print(json.dumps(rep, indent=1))


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return np.corrcoef(ra, rb)[0, 1]


# ------------------------------------------------------------------------ manifest
def cmd_manifest(a):
    with open(os.path.join(a.cache, "eval_landmarks.json")) as f:
        ev = json.load(f)
    cal = ev["calibrated_thresholds"]
    L = []
    w = L.append
    w("# radstream model manifest -- DEMO ONLY.")
    w("# Trained on synthetic phantoms (tools/phantom/phantom.py) by tools/train/train_landmarks.py.")
    w("# Not a clinical device, not for diagnostic use.  See models/README.md.")
    w('id = "ctr-demo"')
    w(f'version = "{a.version}"')
    w('name = "radstream demo cardiothoracic ratio landmark ensemble"')
    w('manufacturer = "radstream"')
    w('task = "landmark-regression"')
    w('intended_use = "Demonstration of landmark measurement (cardiothoracic ratio) on synthetic '
      'chest radiograph phantoms."')
    w("not_for_clinical_use = true")
    w("")
    w("[input]                 # the classifier's contract (models/cxr-demo)")
    w(f'name = "image"          # float32 N x 1 x {SIZE} x {SIZE}')
    w(f"width = {SIZE}")
    w(f"height = {SIZE}")
    w("channels = 1")
    w('layout = "NCHW"')
    w('windowing = "voi-or-percentile"')
    w("percentile_low = 0.5")
    w("percentile_high = 99.5")
    w(f"mean = {MEAN}")
    w(f"std = {STD}")
    w('frames = "first"')
    w("")
    w("[output]")
    w(f'name = "landmarks"      # N x {2 * K}: x0, y0, x1, y1, ... in [[landmarks]] order')
    w('activation = "identity"  # soft-argmax head: the values are coordinates in 0..1')
    w('layout = "xy"')
    w("")
    w("[ensemble]")
    w('combination = "mean"    # mean of the member points')
    for m in range(a.members):
        fn = f"member{m}.onnx"
        w("[[ensemble.members]]")
        w(f'file = "{fn}"')
        w(f'sha256 = "{_sha256(os.path.join(a.out, fn))}"')
    w("")
    w("[gate]")
    w('file = "gate.onnx"       # a copy of models/cxr-demo/gate.onnx')
    w(f'sha256 = "{_sha256(os.path.join(a.out, "gate.onnx"))}"')
    w('threshold = 0.5          # sigmoid(logit) below this -> "not_a_valid_radiograph"')
    w("")
    w("[uncertainty]")
    w('spread = "landmark-rms"  # mean over landmarks of the RMS member distance from the mean (normalised)')
    w(f"optimal_below = {cal['optimal_below']}   # validation median (RadAnalyzer: 0.005)")
    w(f"good_below = {cal['good_below']}      # validation 90th percentile (RadAnalyzer: 0.008); else review")
    w("")
    w("[applicability]")
    w('modalities = ["CR", "DX"]')
    w('body_parts = ["CHEST", ""]')
    w('view_positions = ["PA", "AP", ""]')
    w('photometric = ["MONOCHROME1", "MONOCHROME2"]')
    w("")
    w("[measurement]")
    w('kind = "cardiothoracic-ratio"   # (heart_left.x - heart_right.x) / (thorax_left.x - thorax_right.x)')
    w("normal_below = 0.5")
    for k in LANDMARKS:
        w("")
        w("[[landmarks]]             # order = output order" if k == LANDMARKS[0] else "[[landmarks]]")
        w(f'class = "{k}"')
        w(f'display = "{DISPLAY[k]}"')
    path = os.path.join(a.out, "model.toml")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["gen", "train", "eval", "manifest", "all"])
    ap.add_argument("--cache", default="/tmp/radstream-lm")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "ctr-demo"))
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=600)
    ap.add_argument("--n-check", type=int, default=200)
    ap.add_argument("--n-use", type=int, default=0, help="train on the first N only (0: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--member", default=None, help="comma list of member indices to train")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--version", default="0.1.0")
    a = ap.parse_args(argv)
    if a.cmd in ("gen", "all"):
        cmd_gen(a)
    if a.cmd in ("train", "all"):
        cmd_train(a)
    if a.cmd in ("eval", "all"):
        cmd_eval(a)
    if a.cmd in ("manifest", "all"):
        cmd_manifest(a)


if __name__ == "__main__":
    main()
