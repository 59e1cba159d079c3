#!/usr/bin/env python3
"""Build a DenseNet-121 ONNX graph with the `onnx` package alone (no torch), for benchmarks.

Same architecture as torchvision's densenet121 (Huang et al. 2017): 7x7/2 stem conv + 3x3/2
max pool, dense blocks of 6/12/24/16 layers (growth rate 32, bottleneck 4 x 32 = 128
channels: BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, outputs concatenated), transitions halving channels
(BN-ReLU-Conv1x1-AvgPool2x2/2), final BN-ReLU, global average pool and a linear layer. That is
120 convolutions + 1 linear layer, about 7.0 M parameters with 1 input channel and 18 outputs
(TorchXRayVision's "all" label set) and about 2.9 GMAC per 224x224 image.

The weights are RANDOM (fixed seed, He-normal convolutions, BatchNorm at its fresh state,
as torchvision initialises): the file only serves to time a clinical-size model. It is checked
with onnx.checker (full check, with shape inference) and run once with onnxruntime.

    .venv/bin/python tools/byom/make_densenet_onnx.py bench/out/densenet121.onnx
    .venv/bin/python tools/byom/make_densenet_onnx.py OUT.onnx --channels 3 --size 224 --labels 18

Contract (as bench/inference.sh and the "bring your own model" manifest expect): input "image"
N x C x S x S float32 (dynamic batch N), output "logits" N x L (apply a sigmoid per label).
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GROWTH = 32
BLOCKS = (6, 12, 24, 16)
BN_SIZE = 4
INIT_FEATURES = 64
OPSET = 17


class Graph:
    """Accumulates nodes and initialisers; counts parameters and multiply-accumulates."""

    def __init__(self, seed, size):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.params = 0
        self.macs = 0
        self.convs = 0
        self.hw = size  # spatial size of the current feature map
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x, c_in, c_out, k, stride=1, pad=0):
        fan_in = c_in * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (c_out, c_in, k, k))
        self.params += w.size
        self.convs += 1
        out_hw = (self.hw + 2 * pad - k) // stride + 1
        self.macs += c_out * c_in * k * k * out_hw * out_hw
        self.hw = out_hw
        y = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const("w", w)], [y], kernel_shape=[k, k], strides=[stride, stride],
            pads=[pad] * 4))
        return y

    def bn_relu(self, x, c):
        self.params += 2 * c  # scale and bias are trained parameters; mean/var are buffers
        ins = [x, self.const("bn_scale", np.ones(c)), self.const("bn_bias", np.zeros(c)),
               self.const("bn_mean", np.zeros(c)), self.const("bn_var", np.ones(c))]
        b, r = self.name("bn"), self.name("relu")
        self.nodes.append(helper.make_node("BatchNormalization", ins, [b], epsilon=1e-5))
        self.nodes.append(helper.make_node("Relu", [b], [r]))
        return r

    def pool(self, op, x, k, stride, pad=0):
        self.hw = (self.hw + 2 * pad - k) // stride + 1
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, [x], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[pad] * 4))
        return y


def build(channels, size, labels, seed):
    g = Graph(seed, size)
    x = g.conv("image", channels, INIT_FEATURES, 7, stride=2, pad=3)
    x = g.bn_relu(x, INIT_FEATURES)
    x = g.pool("MaxPool", x, 3, 2, pad=1)
    c = INIT_FEATURES
    for i, layers in enumerate(BLOCKS):
        for _ in range(layers):
            y = g.bn_relu(x, c)
            y = g.conv(y, c, BN_SIZE * GROWTH, 1)
            y = g.bn_relu(y, BN_SIZE * GROWTH)
            hw = g.hw
            y = g.conv(y, BN_SIZE * GROWTH, GROWTH, 3, pad=1)
            assert g.hw == hw
            cat = g.name("concat")
            g.nodes.append(helper.make_node("Concat", [x, y], [cat], axis=1))
            x, c = cat, c + GROWTH
        if i < len(BLOCKS) - 1:
            x = g.bn_relu(x, c)
            x = g.conv(x, c, c // 2, 1)
            x = g.pool("AveragePool", x, 2, 2)
            c //= 2
    x = g.bn_relu(x, c)
    gap, flat = g.name("gap"), g.name("flatten")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], [gap]))
    g.nodes.append(helper.make_node("Flatten", [gap], [flat], axis=1))
    bound = 1.0 / np.sqrt(c)
    w = g.rng.uniform(-bound, bound, (c, labels))
    b = np.zeros(labels)
    g.params += w.size + b.size
    g.macs += c * labels
    g.nodes.append(helper.make_node("Gemm", [flat, g.const("fc_w", w), g.const("fc_b", b)], ["logits"]))
    graph = helper.make_graph(
        g.nodes, "densenet121",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", labels])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="radstream tools/byom/make_densenet_onnx.py")
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    return model, g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output .onnx path (not committed: about 28 MB)")
    ap.add_argument("--channels", type=int, default=1, choices=[1, 3])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--labels", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.size < 32:
        ap.error("--size must be at least 32 (five halvings)")
    model, g = build(a.channels, a.size, a.labels, a.seed)
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    onnx.save(model, tmp)

    import onnxruntime as ort
    sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(a.seed).normal(0, 1, (2, a.channels, a.size, a.size)).astype(np.float32)
    (logits,) = sess.run(["logits"], {"image": x})
    if logits.shape != (2, a.labels) or not np.isfinite(logits).all():
        raise SystemExit(f"onnxruntime gave {logits.shape}, finite={np.isfinite(logits).all()}")
    if np.allclose(logits[0], logits[1]):
        raise SystemExit("two different inputs gave the same logits: the graph ignores its input")
    os.replace(tmp, a.out)
    print(f"DenseNet-121 ({g.convs} convolutions + 1 linear): {g.params / 1e6:.2f} M parameters, "
          f"{g.macs / 1e9:.2f} GMAC per image; input image Nx{a.channels}x{a.size}x{a.size} -> logits "
          f"Nx{a.labels}; checked (onnx.checker, onnxruntime {ort.__version__}); wrote {a.out} "
          f"({os.path.getsize(a.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
