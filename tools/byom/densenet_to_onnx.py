#!/usr/bin/env python3
"""Export a DenseNet-121-sized model to ONNX for radstream benchmarks ("bring your own model").

The weights are RANDOM (no download, no model hub): the file is only useful to measure the
runtime cost of a real-sized model (about 8 M parameters, ~2.9 GFLOPs at 224x224) and to
exercise the manifest/label-mapping path.  For a real model (e.g. a TorchXRayVision
DenseNet-121) load its weights into the same architecture and export the same way.

    .venv-train/bin/python tools/byom/densenet_to_onnx.py /tmp/densenet121.onnx
    .venv-train/bin/python tools/byom/densenet_to_onnx.py /tmp/dn1.onnx --channels 1 --size 224 \
        --labels 18

Contract of the exported file: input "image" N x C x S x S float32 (dynamic batch),
output "logits" N x L.  Nothing is written into the repository unless you ask for it.
"""
import argparse
import os
import sys

import numpy as np
import torch


def build(channels, n_labels):
    try:
        import torchvision
        net = torchvision.models.densenet121(weights=None, num_classes=n_labels)
        if channels != 3:
            net.features.conv0 = torch.nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return net, "torchvision.models.densenet121"
    except ImportError:
        sys.exit("torchvision is required: pip install torchvision (see tools/train/requirements.txt)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="output .onnx path (not committed)")
    ap.add_argument("--channels", type=int, default=1, choices=[1, 3])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--labels", type=int, default=18, help="outputs (TorchXRayVision 'all' has 18)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    net, what = build(a.channels, a.labels)
    net.eval()
    x = torch.randn(1, a.channels, a.size, a.size)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.onnx.export(net, x, a.out, opset_version=17, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    import onnx
    onnx.checker.check_model(onnx.load(a.out))
    try:
        import onnxruntime as ort
        s = ort.InferenceSession(a.out, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = net(x).numpy()
        got = s.run(["logits"], {"image": x.numpy()})[0]
        err = float(np.abs(ref - got).max())
    except ImportError:
        err = float("nan")
    n_par = sum(p.numel() for p in net.parameters())
    print(f"{what}: {n_par / 1e6:.2f} M params, input image 1x{a.channels}x{a.size}x{a.size} -> logits "
          f"{a.labels}; wrote {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB); ort max|diff| {err:.2e}")


if __name__ == "__main__":
    main()
