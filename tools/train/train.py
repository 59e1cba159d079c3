#!/usr/bin/env python3
"""Train the radstream demo chest X-ray ensemble (5 members) and the gate model.

DEMO ONLY: trained on synthetic phantoms from tools/phantom/phantom.py. Not a clinical
device, not for diagnostic use.

Steps (each is a sub-command; `all` runs them in order):

    python3 tools/train/train.py gen    --cache /tmp/radstream-cache   # phantoms -> .npy
    python3 tools/train/train.py train  --cache /tmp/radstream-cache --out models/cxr-demo
    python3 tools/train/train.py gate   --cache /tmp/radstream-cache --out models/cxr-demo
    python3 tools/train/train.py eval   --cache /tmp/radstream-cache --out models/cxr-demo
    python3 tools/train/train.py all    ...

Preprocessing contract (identical to the Rust runtime):
    source -> float [0,1] display sense (MONOCHROME2; bright = dense)
           -> percentile window 0.5 % / 99.5 % (or the VOI window of the file)
           -> resize to 256x256 (bilinear or area, aspect NOT preserved)
           -> x = (v - 0.5) / 0.25, tensor 1x1x256x256 float32 NCHW, input name "image"
Outputs: "logits" (N x 11 for members, N x 1 for the gate); apply sigmoid.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from multiprocessing import Pool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "phantom"))
import phantom as ph  # noqa: E402

SIZE = 256
RENDER = 320
LABELS = ph.LABELS
MEAN, STD = 0.5, 0.25
N_MEMBERS = 5


# ---------------------------------------------------------------------- preprocessing
def preprocess(img, mode="bilinear"):
    """[0,1] display-sense image (any size) -> 256x256 float32 in [0,1] (before normalisation)."""
    v = ph.percentile_window(img.astype(np.float32), 0.5, 99.5)
    if mode == "area":
        return ph.area_resize(v, SIZE, SIZE).astype(np.float32)
    return ph._resize(v, SIZE, SIZE, order=1).astype(np.float32)


def _gen_cxr(args):
    seed, findings = args
    rng = np.random.default_rng(seed + 7)
    aspect = float(rng.choice([0.83, 1.0, 1.0, 1.2]))
    img, gt = ph.generate_cxr(seed, RENDER, int(round(RENDER * aspect)), findings=findings)
    v = preprocess(img, "area" if seed % 2 else "bilinear")
    y = np.array([gt["labels"][k] for k in LABELS], np.uint8)
    g = gt["geometry"]
    geo = np.array([g["heart_right_x"], g["heart_left_x"], g["thorax_right_x"], g["thorax_left_x"],
                    g["heart_y"], g["thorax_y"], g["ctr"]], np.float32)
    return v.astype(np.float16), y, geo


def _gen_neg(args):
    seed, kind = args
    rng = np.random.default_rng(seed)
    h = int(rng.integers(256, 400))
    w = int(h * rng.uniform(0.8, 1.35))
    if kind == 0:
        img = ph.generate_ct_slice(seed, h)
    elif kind == 1:
        img = ph.generate_ultrasound(seed, h, w)
    elif kind == 2:
        img = ph.to_gray(ph.generate_photo(seed, h, w))
    else:
        img = ph.generate_limb_xray(seed, h, w)
    return preprocess(img, "area" if seed % 2 else "bilinear").astype(np.float16)


def cmd_gen(a):
    os.makedirs(a.cache, exist_ok=True)
    splits = {"train": (a.n_train, 1_000_000), "val": (a.n_val, 2_000_000), "test": (a.n_test, 3_000_000)}
    with Pool(a.workers) as pool:
        for name, (n, base) in splits.items():
            t0 = time.time()
            res = pool.map(_gen_cxr, [(base + i, None) for i in range(n)], chunksize=16)
            X = np.stack([r[0] for r in res])
            Y = np.stack([r[1] for r in res])
            G = np.stack([r[2] for r in res])
            np.save(os.path.join(a.cache, f"{name}_x.npy"), X)
            np.save(os.path.join(a.cache, f"{name}_y.npy"), Y)
            np.save(os.path.join(a.cache, f"{name}_geo.npy"), G)
            print(f"{name}: {X.shape} prevalence {Y.mean(0).round(3).tolist()} ({time.time() - t0:.0f}s)",
                  flush=True)
        for name, (n, base) in {"negtrain": (a.n_neg, 4_000_000), "negtest": (a.n_neg_test, 5_000_000)}.items():
            args = [(base + i, i % 4) for i in range(n)]
            X = np.stack(pool.map(_gen_neg, args, chunksize=16))
            np.save(os.path.join(a.cache, f"{name}_x.npy"), X)
            np.save(os.path.join(a.cache, f"{name}_kind.npy"), np.array([k for _, k in args], np.uint8))
            print(f"{name}: {X.shape}", flush=True)
        # targeted check set: pure cardiomegaly vs clean
        res = pool.map(_gen_cxr, [(6_000_000 + i, ["cardiomegaly"] if i % 2 else []) for i in range(200)])
        np.save(os.path.join(a.cache, "check_x.npy"), np.stack([r[0] for r in res]))
        np.save(os.path.join(a.cache, "check_y.npy"), np.stack([r[1] for r in res]))


# ------------------------------------------------------------------------- the models
def build_member(torch_nn, width=1.0, n_out=len(LABELS)):
    nn = torch_nn

    def cbr(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    c = [int(round(v * width)) for v in (32, 48, 64)]
    # patchify stem (8x8, stride 8): 256 -> 32x32.  Cheap enough for 2 CPU cores, and an
    # 8x8 linear patch filter still sees 1-2 px structures (pleural line, calcified foci).
    layers = [nn.Conv2d(1, c[0], 8, 8, 0, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True)]
    layers += cbr(c[0], c[0], 1)         # 32
    layers += cbr(c[0], c[0], 1)
    layers += cbr(c[0], c[1], 2)         # 16
    layers += cbr(c[1], c[1], 1)
    layers += cbr(c[1], c[2], 2)         # 8
    layers += cbr(c[2], c[2], 1)
    c_out = c[2]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.drop = nn.Dropout(0.1)
            self.head = nn.Linear(2 * c_out, n_out)

        def forward(self, x):
            f = self.features(x)
            g = torch_nn.functional.adaptive_avg_pool2d(f, 1).flatten(1)
            m = torch_nn.functional.adaptive_max_pool2d(f, 1).flatten(1)
            return self.head(self.drop(torch_cat([g, m])))

    import torch
    torch_cat = lambda t: torch.cat(t, 1)  # noqa: E731
    return Net()


def _augment(torch, xb, gen):
    """Mild augmentation on [0,1] images (B,1,H,W): gamma, contrast, shift, noise, blur."""
    B = xb.shape[0]
    g = torch.exp(torch.randn(B, 1, 1, 1, generator=gen) * 0.15)
    xb = xb.clamp(0, 1) ** g
    c = 1 + torch.randn(B, 1, 1, 1, generator=gen) * 0.06
    b = torch.randn(B, 1, 1, 1, generator=gen) * 0.03
    xb = (xb - 0.5) * c + 0.5 + b
    # random translation up to 8 px via roll (edges are mostly background)
    dx, dy = [int(v) for v in torch.randint(-8, 9, (2,), generator=gen)]
    xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    xb = xb + torch.randn(xb.shape, generator=gen) * (torch.rand(B, 1, 1, 1, generator=gen) * 0.02)
    return xb


def _to_input(torch, x01):
    return (x01 - MEAN) / STD


def _train_net(torch, net, X, Y, epochs, bs, lr, seed, pos_weight=None, log=""):
    nn = torch.nn
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    n = X.shape[0]
    steps = epochs * (n // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    step = 0
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for k in range(n // bs):
            idx = perm[k * bs:(k + 1) * bs]
            xb = torch.from_numpy(X[idx.numpy()].astype(np.float32)).unsqueeze(1)
            yb = torch.from_numpy(Y[idx.numpy()].astype(np.float32))
            xb = _to_input(torch, _augment(torch, xb, gen))
            out = net(xb)
            loss = lossf(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tot += float(loss.detach())
        print(f"{log} epoch {ep + 1}/{epochs} loss {tot / (n // bs):.4f} ({time.time() - t0:.0f}s)", flush=True)
    net.eval()
    return net


def _predict(torch, net, X, bs=128):
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], bs):
            xb = _to_input(torch, torch.from_numpy(X[i:i + bs].astype(np.float32)).unsqueeze(1))
            out.append(torch.sigmoid(net(xb)).numpy())
    return np.concatenate(out)


def _export(torch, net, path, output="logits", tol=1e-3):
    """Exports `net` to ONNX (opset 17, dynamic batch), checks it and compares onnxruntime's
    output with torch's on random input (max |diff| < `tol`)."""
    import onnx
    import onnxruntime as ort
    net.eval()
    dummy = torch.randn(2, 1, SIZE, SIZE)
    torch.onnx.export(net, dummy, path, opset_version=17, input_names=["image"], output_names=[output],
                      dynamic_axes={"image": {0: "batch"}, output: {0: "batch"}}, dynamo=False)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, SIZE, SIZE)
    with torch.no_grad():
        ref = net(x).numpy()
    got = sess.run([output], {"image": x.numpy()})[0]
    err = float(np.abs(ref - got).max())
    assert err < tol, f"onnxruntime mismatch {err}"
    return err, os.path.getsize(path)


def _load(cache, name):
    return np.load(os.path.join(cache, f"{name}_x.npy"), mmap_mode=None), \
        np.load(os.path.join(cache, f"{name}_y.npy"))


def cmd_train(a):
    import torch
    torch.set_num_threads(a.threads)
    X, Y = _load(a.cache, "train")
    os.makedirs(a.out, exist_ok=True)
    n = X.shape[0]
    prev = Y.mean(0).clip(0.02, 0.98)
    pw = torch.tensor(np.clip((1 - prev) / prev, 1, 4) ** 0.5, dtype=torch.float32)
    members = range(N_MEMBERS) if a.member is None else [int(m) for m in a.member.split(",")]
    for m in members:
        torch.manual_seed(1000 + m)
        rs = np.random.default_rng(1000 + m)
        idx = rs.integers(0, n, size=int(n * a.frac))  # bootstrap fold
        net = build_member(torch.nn)
        ckpt = os.path.join(a.cache, f"member{m}.pt")
        if a.resume and os.path.exists(ckpt):  # continue training on the same bootstrap fold
            net.load_state_dict(torch.load(ckpt))
        _train_net(torch, net, X[idx], Y[idx], a.epochs, a.bs, a.lr, 1000 + m + (7 if a.resume else 0), pw,
                   log=f"member{m}")
        path = os.path.join(a.out, f"member{m}.onnx")
        err, size = _export(torch, net, path)
        torch.save(net.state_dict(), os.path.join(a.cache, f"member{m}.pt"))
        print(f"member{m}: exported {path} size {size} B, ort max|diff| {err:.2e}", flush=True)


def cmd_gate(a):
    import torch
    torch.set_num_threads(a.threads)
    Xp, _ = _load(a.cache, "train")
    Xn = np.load(os.path.join(a.cache, "negtrain_x.npy"))
    rs = np.random.default_rng(7)
    pos = Xp[rs.choice(Xp.shape[0], size=min(Xp.shape[0], Xn.shape[0] * 2), replace=False)]
    X = np.concatenate([pos, Xn])
    Y = np.concatenate([np.ones((pos.shape[0], 1), np.uint8), np.zeros((Xn.shape[0], 1), np.uint8)])
    torch.manual_seed(77)
    net = build_member(torch.nn, width=0.5, n_out=1)
    _train_net(torch, net, X, Y, a.gate_epochs, a.bs, a.lr, 77, log="gate")
    path = os.path.join(a.out, "gate.onnx")
    err, size = _export(torch, net, path)
    print(f"gate: exported {path} size {size} B, ort max|diff| {err:.2e}", flush=True)


# ----------------------------------------------------------------------------- eval
def auc(y, s):
    y = np.asarray(y).astype(bool)
    npos, nneg = y.sum(), (~y).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ss = np.asarray(s)[order]
    # average ranks for ties
    i = 0
    r = np.arange(1, len(s) + 1, dtype=np.float64)
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        r[i:j + 1] = (i + j + 2) / 2.0
        i = j + 1
    ranks[order] = r
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def youden(y, s):
    best, thr = -1, 0.5
    for t in np.unique(np.round(s, 4)):
        tpr = ((s >= t) & (y == 1)).sum() / max(1, (y == 1).sum())
        fpr = ((s >= t) & (y == 0)).sum() / max(1, (y == 0).sum())
        if tpr - fpr > best:
            best, thr = tpr - fpr, float(t)
    return thr, best


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_run(sess, X, name, bs=64):
    """Output `name` for 0..1 images `X` (N x H x W), normalised as the manifest says."""
    out = []
    for i in range(0, X.shape[0], bs):
        xb = ((X[i:i + bs].astype(np.float32) - MEAN) / STD)[:, None]
        out.append(sess.run([name], {"image": xb})[0])
    return np.concatenate(out)


def _ort_predict(path, X, bs=64):
    z = ort_run(ort_session(path), X, "logits", bs)
    return 1 / (1 + np.exp(-z))


def cmd_eval(a):
    res = {}
    members = [os.path.join(a.out, f"member{m}.onnx") for m in range(N_MEMBERS)]
    for split in ("val", "test"):
        X, Y = _load(a.cache, split)
        P = np.stack([_ort_predict(p, X) for p in members])  # M,N,L
        res[split] = (X, Y, P)
    Xv, Yv, Pv = res["val"]
    Xt, Yt, Pt = res["test"]
    ens_v, ens_t = Pv.mean(0), Pt.mean(0)
    report = {"labels": LABELS, "n_val": int(Xv.shape[0]), "n_test": int(Xt.shape[0]),
              "test_prevalence": Yt.mean(0).round(4).tolist(), "auc": {}, "thresholds": {}}
    for j, k in enumerate(LABELS):
        thr, J = youden(Yv[:, j], ens_v[:, j])
        report["thresholds"][k] = round(thr, 4)
        tp = ((ens_t[:, j] >= thr) & (Yt[:, j] == 1)).sum()
        tn = ((ens_t[:, j] < thr) & (Yt[:, j] == 0)).sum()
        report["auc"][k] = {
            "members": [round(auc(Yt[:, j], Pt[m, :, j]), 4) for m in range(N_MEMBERS)],
            "ensemble": round(auc(Yt[:, j], ens_t[:, j]), 4),
            "sens_at_thr": round(float(tp / max(1, Yt[:, j].sum())), 4),
            "spec_at_thr": round(float(tn / max(1, (1 - Yt[:, j]).sum())), 4),
        }
    # member spread (std over members, max over labels) -> uncertainty tiers
    spread_t = Pt.std(0).max(1)
    correct = ((ens_t >= np.array([report["thresholds"][k] for k in LABELS])) == (Yt == 1)).all(1)
    report["spread_quantiles_test"] = {q: round(float(np.quantile(spread_t, q / 100)), 5)
                                       for q in (10, 25, 50, 75, 90, 95, 99)}
    for t in (0.005, 0.008, 0.02, 0.05):
        sel = spread_t < t
        report.setdefault("spread_tiers", {})[str(t)] = {
            "fraction_below": round(float(sel.mean()), 4),
            "exact_match_acc_below": round(float(correct[sel].mean()) if sel.any() else float("nan"), 4),
            "exact_match_acc_above": round(float(correct[~sel].mean()) if (~sel).any() else float("nan"), 4)}
    eps = 1e-7
    ent = -(ens_t * np.log(ens_t + eps) + (1 - ens_t) * np.log(1 - ens_t + eps)).mean(1)
    # calibrated tiers from the validation set: optimal = spread below the val median,
    # good = below the val 80th percentile, review above; entropy review above val q95
    spread_v = Pv.std(0).max(1)
    ent_v = -(ens_v * np.log(ens_v + eps) + (1 - ens_v) * np.log(1 - ens_v + eps)).mean(1)
    cal = {"optimal_below": round(float(np.quantile(spread_v, 0.5)), 4),
           "good_below": round(float(np.quantile(spread_v, 0.8)), 4),
           "review_entropy_above": round(float(np.quantile(ent_v, 0.95)), 4)}
    report["calibrated_tiers"] = cal
    tiers = np.where(spread_t < cal["optimal_below"], 0, np.where(spread_t < cal["good_below"], 1, 2))
    report["calibrated_tiers_test"] = {
        nm: {"fraction": round(float((tiers == k).mean()), 4),
             "exact_match_acc": round(float(correct[tiers == k].mean()) if (tiers == k).any() else float("nan"), 4)}
        for k, nm in enumerate(["optimal", "good", "review"])}
    report["entropy_review_fraction_test"] = round(float((ent > cal["review_entropy_above"]).mean()), 4)
    report["radanalyzer_tiers_test"] = {
        "optimal(<0.005)": round(float((spread_t < 0.005).mean()), 4),
        "good(<0.008)": round(float(((spread_t >= 0.005) & (spread_t < 0.008)).mean()), 4),
        "review": round(float((spread_t >= 0.008).mean()), 4)}
    report["entropy_quantiles_test"] = {q: round(float(np.quantile(ent, q / 100)), 4) for q in (50, 90, 95, 99)}
    report["exact_match_acc_test"] = round(float(correct.mean()), 4)
    # targeted cardiomegaly check
    Xc = np.load(os.path.join(a.cache, "check_x.npy"))
    Yc = np.load(os.path.join(a.cache, "check_y.npy"))
    Pc = np.stack([_ort_predict(p, Xc) for p in members]).mean(0)
    j = LABELS.index("cardiomegaly")
    cm = Yc[:, j] == 1
    report["check_cardiomegaly"] = {
        "cardiomegaly_phantoms_min_prob": round(float(Pc[cm, j].min()), 4),
        "cardiomegaly_phantoms_mean_prob": round(float(Pc[cm, j].mean()), 4),
        "frac_cardiomegaly_ge_0.8": round(float((Pc[cm, j] >= 0.8).mean()), 4),
        "clean_phantoms_max_prob_cardiomegaly": round(float(Pc[~cm, j].max()), 4),
        "clean_phantoms_max_prob_any_label": round(float(Pc[~cm].max()), 4),
        "frac_clean_all_labels_lt_0.5": round(float((Pc[~cm] < 0.5).all(1).mean()), 4),
    }
    # gate
    gate = os.path.join(a.out, "gate.onnx")
    if os.path.exists(gate):
        gp = _ort_predict(gate, Xt)[:, 0]
        Xn = np.load(os.path.join(a.cache, "negtest_x.npy"))
        kn = np.load(os.path.join(a.cache, "negtest_kind.npy"))
        gn = _ort_predict(gate, Xn)[:, 0]
        names = ["ct_slice", "ultrasound", "photo_gray", "limb_radiograph"]
        report["gate"] = {"threshold": 0.5, "chest_phantoms_accepted": round(float((gp >= 0.5).mean()), 4),
                          "n_chest": int(len(gp))}
        for k, nm in enumerate(names):
            report["gate"][f"{nm}_rejected"] = round(float((gn[kn == k] < 0.5).mean()), 4)
            report["gate"][f"n_{nm}"] = int((kn == k).sum())
    with open(os.path.join(a.cache, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


# ------------------------------------------------------------------------- manifest
LABEL_META = [
    # key, LeapAI condition name (verbatim), (scheme, code), display, in pydicom's PS3.16
    # dictionary. Where PS3.16 codes a finding (DCM 112121 Infiltrate) its code is used.
    ("tuberculosis", "Tuberculosis", ("SCT", "154283005"), "Pulmonary tuberculosis", False),
    ("cardiomegaly", "Cardiomegaly", ("SCT", "287272002"), "Cardiomegaly", True),
    ("pleural_thickening", "Pleural Thickening", ("SCT", "78381009"), "Pleural thickening", False),
    ("pleural_effusion", "Pleural Effusion", ("SCT", "60046008"), "Pleural effusion", True),
    ("pneumothorax", "Pneumothorax", ("SCT", "36118008"), "Pneumothorax", True),
    ("consolidation", "Consolidation", ("SCT", "95436008"), "Consolidation", False),
    ("atelectasis", "Atelectasis", ("SCT", "46621007"), "Atelectasis", False),
    ("nodule_mass", "Nodule/Mass", ("SCT", "27925004"), "Nodule", True),
    ("fibrosis", "Fibrosis", ("SCT", "112674009"), "Fibrosis", True),
    ("infiltration", "Infiltration", ("DCM", "112121"), "Infiltrate", True),
    ("calcification", "Calcification", ("SCT", "18115005"), "Pathologic calcification", True),
]


def _sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def cmd_manifest(a):
    with open(os.path.join(a.cache, "eval.json")) as f:
        ev = json.load(f)
    thr = ev["thresholds"]
    assert [m[0] for m in LABEL_META] == LABELS
    L = []
    w = L.append
    w("# radstream model manifest -- DEMO ONLY.")
    w("# Trained on synthetic phantoms (tools/phantom/phantom.py) by tools/train/train.py.")
    w("# Not a clinical device, not for diagnostic use.  See models/README.md.")
    w('id = "cxr-demo"')
    w('version = "0.1.0"')
    w('name = "radstream demo chest X-ray ensemble"')
    w('manufacturer = "radstream"')
    w('task = "multilabel-classification"')
    w('intended_use = "Demonstration of the radstream pipeline on synthetic chest radiograph phantoms."')
    w("not_for_clinical_use = true")
    w("")
    w("[input]")
    w('name = "image"          # ONNX input name, float32 N x 1 x 256 x 256')
    w(f"width = {SIZE}")
    w(f"height = {SIZE}")
    w("channels = 1")
    w('layout = "NCHW"')
    w('windowing = "voi-or-percentile"   # VOI LUT/window from the file if present, else percentile window')
    w("percentile_low = 0.5")
    w("percentile_high = 99.5")
    w(f"mean = {MEAN}                # x = (v - mean) / std, v in [0,1] display sense (MONOCHROME2)")
    w(f"std = {STD}")
    w('frames = "first"        # or "all"')
    w("")
    w("[output]")
    w('name = "logits"         # N x 11, order = [[labels]] order')
    w('activation = "sigmoid"')
    w("")
    w("[ensemble]")
    w('combination = "mean"    # mean of member sigmoid probabilities')
    for m in range(N_MEMBERS):
        fn = f"member{m}.onnx"
        w("[[ensemble.members]]")
        w(f'file = "{fn}"')
        w(f'sha256 = "{_sha256(os.path.join(a.out, fn))}"')
    w("")
    w("[gate]")
    w('file = "gate.onnx"       # same input contract, output "logits" N x 1')
    w(f'sha256 = "{_sha256(os.path.join(a.out, "gate.onnx"))}"')
    w('threshold = 0.5          # sigmoid(logit) below this -> "not a valid radiograph"')
    w("")
    w("[uncertainty]")
    w('spread = "std"           # std of member probabilities, max over labels')
    w(f"optimal_below = {a.optimal_below}")
    w(f"good_below = {a.good_below}       # otherwise \"review\"")
    # The calibration measures entropy in nats; the node compares in bits (postprocess.rs).
    bits = round(a.review_entropy / math.log(2), 3)
    w(f"review_entropy_above = {bits}   # bits ({a.review_entropy} nats): should_review when mean predictive entropy per label exceeds")
    w("")
    w("[applicability]")
    w('modalities = ["CR", "DX"]')
    w('body_parts = ["CHEST", ""]        # "" = empty/absent accepted')
    w('view_positions = ["PA", "AP", ""]')
    w('photometric = ["MONOCHROME1", "MONOCHROME2"]')
    for key, name, (scheme, code), disp, ok in LABEL_META:
        w("")
        w("[[labels]]               # order = output index order" if key == LABELS[0] else "[[labels]]")
        w(f'key = "{key}"')
        w(f'name = "{name}"')
        if scheme != "SCT":
            w(f'scheme = "{scheme}"')
        w(f'code = "{code}"' + ("" if ok else "     # no PS3.16 concept (pydicom's dictionary)"))
        w(f'display = "{disp}"')
        w(f"threshold = {thr[key]}        # Youden J on the validation set (ensemble mean)")
    path = os.path.join(a.out, "model.toml")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "train", "gate", "eval", "manifest", "all"])
    ap.add_argument("--cache", default="/tmp/radstream-cache")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "cxr-demo"))
    ap.add_argument("--n-train", type=int, default=7000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=1200)
    ap.add_argument("--n-neg", type=int, default=1600)
    ap.add_argument("--n-neg-test", type=int, default=800)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--gate-epochs", type=int, default=2)
    ap.add_argument("--frac", type=float, default=1.0, help="bootstrap sample size / train size")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--optimal-below", type=float, default=0.005)
    ap.add_argument("--good-below", type=float, default=0.008)
    ap.add_argument("--review-entropy", type=float, default=0.6,
                    help="calibrated review threshold in nats (written to the manifest in bits)")
    ap.add_argument("--resume", action="store_true", help="continue from the cached member checkpoints")
    ap.add_argument("--member", default=None, help="comma list of member indices (default all)")
    a = ap.parse_args(argv)
    if a.cmd in ("gen", "all"):
        cmd_gen(a)
    if a.cmd in ("train", "all"):
        cmd_train(a)
    if a.cmd in ("gate", "all"):
        cmd_gate(a)
    if a.cmd in ("eval", "all"):
        cmd_eval(a)
    if a.cmd in ("manifest", "all"):
        cmd_manifest(a)


if __name__ == "__main__":
    main()
