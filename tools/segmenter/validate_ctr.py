#!/usr/bin/env python3
"""Validates the cardiothoracic ratio read from the lung segmenter's fields
(`radstream segment`, `LungFields::ctr`) on generated phantoms, against their ground truth and
against the landmark model `ctr-demo` (`radstream infer --model ctr-demo`) on the same images.

    .venv/bin/python tools/segmenter/validate_ctr.py [--bin target/debug/radstream] [--models-dir models] \\
        [--n 30] [--seed 4242] [--out WORK_DIR] [--real FILE.dcm ...] [--no-ctr-demo]

The models folder must hold `lung-seg/` with its model.onnx (scripts/setup.sh makes it) and
`ctr-demo/`. ONNX Runtime is found as the node finds it (ORT_DYLIB_PATH, or the onnxruntime
package of python3). --real defaults to the two real chests scripts/setup.sh --test fetches
(NEMA RG1_J2KI.dcm and GDCM's gdcm-CR-MONO1-10-chest.dcm in ~/.cache/radstream/testdata/real)
when they are there.

Phantoms (tools/phantom/phantom.py, 512 x 512, 8-bit PNG): --n normal ones (no finding, true
CTR spread evenly over 0.36-0.50) and --n cardiomegaly ones (only that finding, 0.58-0.70),
each rotated by an angle spread evenly over -6..+6 degrees (shuffled against the CTR) and
otherwise drawn by the generator from its seed. Prints per class the mean absolute error,
the largest error and the bias (mean signed error) of the segmenter's CTR and of ctr-demo's
against the truth, how often each falls on the truth's side of 0.5, and how often the lung
fields were found plausible; then the values on each --real file (no ground truth there).
Writes the per-image values to WORK_DIR/ctr_validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "phantom"))
import phantom  # noqa: E402

SIZE = 512
NORMAL = (0.36, 0.50)
CARDIOMEGALY = (0.58, 0.70)
MAX_ROTATION_DEG = 6.0
REAL_CHESTS = ("RG1_J2KI.dcm", "gdcm-CR-MONO1-10-chest.dcm")


def generate(out: Path, n: int, seed: int) -> list[dict]:
    """Writes the phantoms and returns one record per image with its truth."""
    records = []
    for cls, (lo, hi), findings in (
        ("normal", NORMAL, []),
        ("cardiomegaly", CARDIOMEGALY, ["cardiomegaly"]),
    ):
        ctrs = np.linspace(lo, hi, n)
        rotations = np.linspace(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n)
        np.random.default_rng(seed).shuffle(rotations)
        for i in range(n):
            s = seed + (0 if cls == "normal" else 500_000) + i
            img, truth = phantom.generate_cxr(
                s, SIZE, SIZE, findings=list(findings),
                ctr=float(ctrs[i]), rot_deg=float(rotations[i]))
            path = out / f"{cls}_{i:03d}.png"
            phantom.write_png(str(path), img)
            records.append({
                "file": str(path), "class": cls, "seed": s,
                "rot_deg": float(rotations[i]), "truth": truth["geometry"]["ctr"],
                "truth_widths": widths(truth["geometry"]),
            })
    return records


def widths(g: dict) -> tuple[float, float]:
    """The truth's cardiac and thoracic widths, as fractions of the image width."""
    return g["heart_left_x"] - g["heart_right_x"], g["thorax_left_x"] - g["thorax_right_x"]


def run_cli(binary: str, args: list[str], files: list[str], env: dict) -> dict[str, dict]:
    """One radstream call over all files; its JSON lines by file."""
    proc = subprocess.run([binary, *args, *files], capture_output=True, text=True, env=env)
    results = {}
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        results[d["file"]] = d["result"]
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        print(f"warning: {' '.join(args)} exited {proc.returncode}:\n{tail}", file=sys.stderr)
    return results


def lung_values(result: dict | None) -> dict:
    lungs = (result or {}).get("lungs") or {}
    ctr = lungs.get("ctr") or {}
    return {
        "ctr": ctr.get("ratio"),
        "widths": [ctr.get("cardiac_width"), ctr.get("thoracic_width")] if ctr else None,
        "plausible": lungs.get("plausible"),
        "reasons": lungs.get("implausible_reasons"),
        "points": {p["class"]: [round(p["x"], 4), round(p["y"], 4)]
                   for p in lungs.get("ctr_points") or []},
    }


def demo_ctr(result: dict | None) -> float | None:
    m = (result or {}).get("measurement") or {}
    return m.get("ratio")


def summary(name: str, pairs: list[tuple[float, float | None]]) -> str:
    got = [(t, v) for t, v in pairs if v is not None]
    if not got:
        return f"  {name:<14} none computed of {len(pairs)}"
    err = np.array([v - t for t, v in got])
    same_side = sum((v > 0.5) == (t > 0.5) for t, v in got)
    return (f"  {name:<14} n={len(got)}/{len(pairs)}  MAE {np.abs(err).mean():.4f}  "
            f"max {np.abs(err).max():.4f}  bias {err.mean():+.4f}  "
            f"same side of 0.5 {same_side}/{len(got)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug" / "radstream"))
    ap.add_argument("--models-dir", default=str(ROOT / "models"),
                    help="sets RADSTREAM_INFERENCE__MODELS_DIR")
    ap.add_argument("--n", type=int, default=30, help="phantoms per class")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--out", help="work folder (default: a temporary one)")
    ap.add_argument("--real", nargs="*", default=None,
                    help="real chest images (no truth); default: the two from setup, if there")
    ap.add_argument("--no-ctr-demo", action="store_true")
    a = ap.parse_args(argv)

    if a.real is None:
        cache = Path(os.environ.get("RADSTREAM_CACHE", Path.home() / ".cache" / "radstream"))
        a.real = [str(p) for p in (cache / "testdata" / "real" / REAL_CHESTS[0],
                                   cache / "testdata" / "real" / REAL_CHESTS[1]) if p.is_file()]
    env = dict(os.environ)
    env["RADSTREAM_INFERENCE__MODELS_DIR"] = a.models_dir
    env["RADSTREAM_INFERENCE__MODELS"] = '["lung-seg","ctr-demo"]'
    env.setdefault("RADSTREAM_LOG__LEVEL", "warn")
    out = Path(a.out or tempfile.mkdtemp(prefix="radstream-ctr-"))
    out.mkdir(parents=True, exist_ok=True)

    records = generate(out, a.n, a.seed)
    files = [r["file"] for r in records] + list(a.real)
    seg = run_cli(a.bin, ["segment", "--model", "lung-seg"], files, env)
    demo = {} if a.no_ctr_demo else run_cli(a.bin, ["infer", "--model", "ctr-demo"], files, env)

    for r in records:
        r["segmenter"] = lung_values(seg.get(r["file"]))
        r["ctr_demo"] = demo_ctr(demo.get(r["file"]))

    print(f"{len(records)} phantoms ({a.n} per class, seed {a.seed}, {SIZE} px, "
          f"rotation -{MAX_ROTATION_DEG:g}..+{MAX_ROTATION_DEG:g} deg); CTR error vs truth:")
    for cls in ("normal", "cardiomegaly", None):
        rs = [r for r in records if cls is None or r["class"] == cls]
        plausible = sum(bool(r["segmenter"]["plausible"]) for r in rs)
        print(f"{cls or 'all'} ({len(rs)}, lung fields plausible {plausible}/{len(rs)}):")
        print(summary("segmenter", [(r["truth"], r["segmenter"]["ctr"]) for r in rs]))
        if not a.no_ctr_demo:
            print(summary("ctr-demo", [(r["truth"], r["ctr_demo"]) for r in rs]))
            both = [(r["ctr_demo"], r["segmenter"]["ctr"]) for r in rs
                    if r["ctr_demo"] is not None]
            print(summary("seg - demo", both))
        got = [r for r in rs if r["segmenter"]["widths"]]
        if got:
            d = np.array([np.subtract(r["segmenter"]["widths"], r["truth_widths"]) for r in got])
            print(f"  segmenter width errors (fraction of the image width, mean signed): "
                  f"cardiac {d[:, 0].mean():+.4f}, thoracic {d[:, 1].mean():+.4f}")

    real = []
    if a.real:
        print("real images (no ground truth):")
    for f in a.real:
        v = lung_values(seg.get(f))
        d = demo_ctr(demo.get(f))
        real.append({"file": f, "segmenter": v, "ctr_demo": d})
        ctr = "none" if v["ctr"] is None else f"{v['ctr']:.3f}"
        status = (demo.get(f) or {}).get("status") or {}
        dc = f"{d:.3f}" if d is not None else f"none ({status.get('reason') or status.get('kind')})"
        print(f"  {Path(f).name}: segmenter CTR {ctr} (plausible {v['plausible']}"
              f"{'' if v['plausible'] else ': ' + '; '.join(v['reasons'] or [])}), "
              f"ctr-demo {dc}")

    with open(out / "ctr_validation.json", "w") as fh:
        json.dump({"seed": a.seed, "n_per_class": a.n, "phantoms": records, "real": real},
                  fh, indent=1)
    print(f"per-image values: {out / 'ctr_validation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
