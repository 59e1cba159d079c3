"""The lung-segmentation U-Net of the PyPI package cheXwhatsApp 0.1.5, without torch.

`PretrainedUNet` (cheXwhatsApp/lung_segmentation.py): a 1x1 convolution to three channels, the
VGG-11 convolutions as encoder (max-pool between stages), a centre block and five decoder
blocks (conv-BN-ReLU twice) fed by bilinear 2x upsampling (align_corners=False) concatenated
with the encoder stage of the same size, and a 1x1 convolution to two classes (background,
lung). Input: 1 x 512 x 512 grey values / 255 - 0.5.

Two independent renderings of that network from the same weights:
- `build_onnx`: the ONNX graph the node runs (BatchNormalization in inference mode, Resize in
  linear mode with half-pixel coordinates, Softmax; the output is the lung probability);
- `reference_forward`: a plain numpy forward pass written from the PyTorch definitions
  (convolution as a sum of shifted matrix products, batch norm from the running statistics,
  bilinear upsampling from PyTorch's coordinate formula), the check the conversion is held to.
"""

from __future__ import annotations

import numpy as np

from torch_legacy import Module

MODULE_CLASSES = {
    "lung_segmentation.PretrainedUNet",
    "lung_segmentation.Block",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
}

ENCODER = ["conv1", "conv2", "conv3", "conv3s", "conv4", "conv4s", "conv5", "conv5s"]
# Encoder convolutions after which a stage ends (its output is a skip connection).
STAGE_ENDS = {"conv1": "enc1", "conv2": "enc2", "conv3s": "enc3", "conv4s": "enc4", "conv5s": "enc5"}
# Convolutions preceded by a 2x2 max-pool.
POOLED = {"conv2", "conv3", "conv4", "conv5"}
DECODER = [("dec5", "enc5"), ("dec4", "enc4"), ("dec3", "enc3"), ("dec2", "enc2"), ("dec1", "enc1")]
INPUT_SIZE = 512


def check_structure(net: Module):
    """Refuses a file whose network is not the one this module renders."""
    if net.kind != "lung_segmentation.PretrainedUNet":
        raise ValueError(f"root module is {net.kind}")
    a = net.attrs
    if (a.get("in_channels"), a.get("out_channels"), a.get("batch_norm"), a.get("upscale_mode")) != (
        1,
        2,
        True,
        "bilinear",
    ):
        raise ValueError(f"unexpected U-Net settings {a}")
    for name in ["init_conv", *ENCODER, "out"]:
        conv = net.children[name]
        k = conv.attrs["kernel_size"]
        pad = (k[0] // 2, k[1] // 2)
        if conv.attrs["stride"] != (1, 1) or conv.attrs["padding"] != pad or conv.attrs["groups"] != 1:
            raise ValueError(f"{name}: unexpected convolution settings")
    for name in ["center"] + [d for d, _ in DECODER]:
        block = net.children[name]
        if set(block.children) != {"conv1", "conv2", "bn1", "bn2"}:
            raise ValueError(f"{name}: unexpected block layout")


# ---------------------------------------------------------------------------------------------
# ONNX


def build_onnx(net: Module, opset: int = 17):
    """The ONNX model: input `image` N x 1 x 512 x 512, output `lung` N x 1 x 512 x 512."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_structure(net)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def conv(x, module: Module, name):
        w = const(f"{name}.weight", module.parameters["weight"])
        b = const(f"{name}.bias", module.parameters["bias"])
        k = module.attrs["kernel_size"]
        p = module.attrs["padding"]
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"{name}.out"], kernel_shape=list(k), pads=[p[0], p[1], p[0], p[1]]
            )
        )
        return f"{name}.out"

    def bn(x, module: Module, name):
        ins = [x] + [
            const(f"{name}.{t}", module.parameters[t] if t in module.parameters else module.buffers[t])
            for t in ("weight", "bias", "running_mean", "running_var")
        ]
        nodes.append(
            helper.make_node("BatchNormalization", ins, [f"{name}.out"], epsilon=float(module.attrs["eps"]))
        )
        return f"{name}.out"

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    def pool(x):
        nodes.append(helper.make_node("MaxPool", [x], [f"{x}.pool"], kernel_shape=[2, 2], strides=[2, 2]))
        return f"{x}.pool"

    def block(x, module: Module, name):
        x = relu(bn(conv(x, module.children["conv1"], f"{name}.conv1"), module.children["bn1"], f"{name}.bn1"))
        return relu(bn(conv(x, module.children["conv2"], f"{name}.conv2"), module.children["bn2"], f"{name}.bn2"))

    scales = const("up.scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))

    def up(x):
        nodes.append(
            helper.make_node(
                "Resize",
                [x, "", scales],
                [f"{x}.up"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            )
        )
        return f"{x}.up"

    x = relu(conv("image", net.children["init_conv"], "init_conv"))
    skips = {}
    for name in ENCODER:
        if name in POOLED:
            x = pool(x)
        x = relu(conv(x, net.children[name], name))
        if name in STAGE_ENDS:
            skips[STAGE_ENDS[name]] = x
    x = block(pool(x), net.children["center"], "center")
    for name, skip in DECODER:
        cat = f"{name}.cat"
        nodes.append(helper.make_node("Concat", [up(x), skips[skip]], [cat], axis=1))
        x = block(cat, net.children[name], name)
    logits = conv(x, net.children["out"], "out")
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    nodes.append(
        helper.make_node(
            "Slice",
            ["probabilities", const("lung.start", [1]), const("lung.end", [2]), const("lung.axis", [1])],
            ["lung"],
        )
    )
    graph = helper.make_graph(
        nodes,
        "cheXwhatsApp-lung-unet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("lung", TensorProto.FLOAT, ["N", 1, INPUT_SIZE, INPUT_SIZE])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="radstream")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------
# Reference forward pass (numpy, float64 accumulation)


def _conv(x, module: Module):
    """`torch.nn.functional.conv2d` with stride 1 and 'same' zero padding, batch of one."""
    w = module.parameters["weight"].astype(np.float64)
    b = module.parameters["bias"].astype(np.float64)
    cout, cin, kh, kw = w.shape
    _, h, wd = x.shape
    ph, pw = kh // 2, kw // 2
    padded = np.zeros((cin, h + 2 * ph, wd + 2 * pw))
    padded[:, ph : ph + h, pw : pw + wd] = x
    out = np.zeros((cout, h * wd))
    for dy in range(kh):
        for dx in range(kw):
            patch = padded[:, dy : dy + h, dx : dx + wd].reshape(cin, -1)
            out += w[:, :, dy, dx] @ patch
    return (out + b[:, None]).reshape(cout, h, wd)


def _bn(x, module: Module):
    g = module.parameters["weight"].astype(np.float64)[:, None, None]
    b = module.parameters["bias"].astype(np.float64)[:, None, None]
    m = module.buffers["running_mean"].astype(np.float64)[:, None, None]
    v = module.buffers["running_var"].astype(np.float64)[:, None, None]
    return (x - m) / np.sqrt(v + module.attrs["eps"]) * g + b


def _relu(x):
    return np.maximum(x, 0.0)


def _pool(x):
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def _upsample_axis(x, axis):
    """Bilinear 2x along one axis as PyTorch computes it with align_corners=False:
    source = (dst + 0.5) / 2 - 0.5, clamped at 0, neighbours clamped at the edge."""
    n = x.shape[axis]
    dst = np.arange(2 * n)
    src = np.maximum((dst + 0.5) / 2.0 - 0.5, 0.0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    shape = [1] * x.ndim
    shape[axis] = 2 * n
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _up(x):
    return _upsample_axis(_upsample_axis(x, 1), 2)


def _block(x, module: Module):
    c = module.children
    x = _relu(_bn(_conv(x, c["conv1"]), c["bn1"]))
    return _relu(_bn(_conv(x, c["conv2"]), c["bn2"]))


def reference_forward(net: Module, image):
    """Lung probability (H x W) of one 512 x 512 input already scaled to /255 - 0.5."""
    check_structure(net)
    c = net.children
    x = _relu(_conv(image[None].astype(np.float64), c["init_conv"]))
    skips = {}
    for name in ENCODER:
        if name in POOLED:
            x = _pool(x)
        x = _relu(_conv(x, c[name]))
        if name in STAGE_ENDS:
            skips[STAGE_ENDS[name]] = x
    x = _block(_pool(x), c["center"])
    for name, skip in DECODER:
        x = _block(np.concatenate([_up(x), skips[skip]], axis=0), c[name])
    logits = _conv(x, c["out"])
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e[1] / e.sum(axis=0)
