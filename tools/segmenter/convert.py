#!/usr/bin/env python3
"""Fetches the pinned cheXwhatsApp sdist from PyPI, converts its lung-segmentation U-Net to
ONNX without torch, and checks the ONNX model against an independent numpy forward pass.

    tools/segmenter/convert.py OUT_DIR [--sdist FILE] [--check-image FILE.png ...]

Writes OUT_DIR/model.onnx and OUT_DIR/conversion.json (source and output sha256, per check
input the largest difference of the lung probability and the share of mask pixels that differ)
only when every check input is within tolerance; exits non-zero otherwise. The sdist is
verified against its pinned sha256 before anything in it is read, and the weights are read by a
restricted unpickler (tools/segmenter/torch_legacy.py) that runs no code from the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lung_unet  # noqa: E402
import torch_legacy  # noqa: E402

PACKAGE = "cheXwhatsApp"
VERSION = "0.1.5"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
SDIST_SHA256 = "645e7ca4fbd184319ac6d1bb3ef4a39803357cec6233faa64a5297f8c022ba9d"
MEMBER = f"{PACKAGE}-{VERSION}/{PACKAGE}/lung_segmentation.pt"
LICENCE_MEMBER = f"{PACKAGE}-{VERSION}/LICENCE.txt"
# ONNX Runtime and the numpy pass sum in different orders, in float32 and float64.
MAX_ABS_DIFF = 1e-4
MAX_MASK_DISAGREEMENT = 1e-4


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dest_dir: Path) -> Path:
    """The sdist, downloaded from PyPI's simple index unless already there (fetch_sdist.sh:
    `pip download` of an sdist would run the package's setup.py)."""
    script = Path(__file__).resolve().parent / "fetch_sdist.sh"
    out = subprocess.run([str(script), str(dest_dir)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def check_inputs(images):
    """Named 512 x 512 inputs scaled as the package does (grey / 255 - 0.5)."""
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    rng = np.random.default_rng(20261206)
    pattern = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.05 * rng.standard_normal((512, 512))
    out = [("synthetic-pattern", (np.round(pattern.clip(0, 1) * 255) / 255 - 0.5).astype(np.float32))]
    for p in images:
        from PIL import Image

        grey = Image.open(p).convert("L").resize((512, 512), Image.BILINEAR)
        out.append((Path(p).name, (np.asarray(grey, dtype=np.float32) / 255.0 - 0.5)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--sdist", type=Path, help="the downloaded sdist (default: fetch into OUT_DIR/.download)")
    ap.add_argument("--check-image", action="append", default=[], help="extra check input (PNG/JPEG)")
    args = ap.parse_args()

    sdist = args.sdist or fetch(args.out_dir / ".download")
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        print(f"convert: {sdist}: sha256 {digest}, expected {SDIST_SHA256}", file=sys.stderr)
        return 1
    with tarfile.open(sdist, "r:gz") as tar:
        weights = tar.extractfile(MEMBER).read()
        licence = tar.extractfile(LICENCE_MEMBER).read().decode("utf-8", "replace")
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        tmp.write(weights)
        tmp.flush()
        net = torch_legacy.load(tmp.name, lung_unet.MODULE_CLASSES)
    n_params = int(sum(a.size for k, a in net.named_tensors().items() if not k.endswith("num_batches_tracked")))
    model = lung_unet.build_onnx(net)
    blob = model.SerializeToString()

    import onnxruntime as ort

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    checks, ok = [], True
    for name, image in check_inputs(args.check_image):
        onnx_p = session.run(None, {"image": image[None, None]})[0][0, 0]
        ref_p = lung_unet.reference_forward(net, image)
        diff = float(np.abs(onnx_p - ref_p).max())
        disagree = float(((onnx_p > 0.5) != (ref_p > 0.5)).mean())
        lung = float((ref_p > 0.5).mean())
        passed = diff <= MAX_ABS_DIFF and disagree <= MAX_MASK_DISAGREEMENT
        ok &= passed
        checks.append({"input": name, "max_abs_diff": diff, "mask_disagreement": disagree,
                       "lung_fraction": lung, "passed": passed})
        print(f"convert: {name}: max |onnx - reference| = {diff:.2e}, masks differ in "
              f"{disagree:.2e} of pixels, lung {lung:.1%}: {'ok' if passed else 'FAILED'}")
    if not ok:
        print(f"convert: the ONNX model differs from the reference (tolerance {MAX_ABS_DIFF}, "
              f"{MAX_MASK_DISAGREEMENT}); nothing written", file=sys.stderr)
        return 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "model.onnx"
    tmp_path = onnx_path.with_suffix(".onnx.tmp")
    tmp_path.write_bytes(blob)
    os.replace(tmp_path, onnx_path)
    report = {
        "source": {"package": PACKAGE, "version": VERSION, "sdist": SDIST, "sdist_sha256": SDIST_SHA256,
                   "member": MEMBER, "licence_declared": "MIT (setup.py classifier; LICENCE.txt)",
                   "licence_text": licence},
        "parameters": n_params,
        "onnx": {"file": "model.onnx", "sha256": hashlib.sha256(blob).hexdigest(), "opset": 17},
        "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "mask_disagreement": MAX_MASK_DISAGREEMENT},
        "checks": checks,
    }
    (args.out_dir / "conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"convert: wrote {onnx_path} ({n_params} parameters, sha256 {report['onnx']['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
