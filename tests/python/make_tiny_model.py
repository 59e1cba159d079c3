"""Write a tiny ONNX ensemble (members + gate) and its model.toml into a folder.

Used by the Rust tests (tests/e2e/inference.rs) at run time; nothing here is committed.

    make_tiny_model.py OUT_DIR [--id tiny] [--members 3] [--labels 3] [--size 32]
                       [--gate accept|reject|none] [--channels 1] [--fixed-batch] [--accept-any]
"""

import argparse
import hashlib
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(seed, n_out, size, channels, out_name, fixed_batch, bias=None, zero_weights=False):
    rng = np.random.default_rng(seed)
    batch = 1 if fixed_batch else "N"
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, size, size])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, n_out])
    w1 = rng.normal(0, 0.5, (4, channels, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (4,)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (n_out, 4)).astype(np.float32)
    b2 = rng.normal(0, 0.2, (n_out,)).astype(np.float32)
    if zero_weights:
        w2[:] = 0
    if bias is not None:
        b2[:] = bias
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "w2", "b2"], [out_name], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--id", default="tiny")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--labels", type=int, default=3)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--gate", choices=["accept", "reject", "none"], default="accept")
    ap.add_argument("--fixed-batch", action="store_true")
    ap.add_argument("--accept-any", action="store_true", help="empty applicability lists")
    a = ap.parse_args()
    out = pathlib.Path(a.out) / a.id
    out.mkdir(parents=True, exist_ok=True)

    def save(model, name):
        path = out / name
        onnx.save(model, str(path))
        return hashlib.sha256(path.read_bytes()).hexdigest()

    members = []
    for i in range(a.members):
        m = conv_net(100 + i, a.labels, a.size, a.channels, "logits", a.fixed_batch)
        members.append((f"member{i}.onnx", save(m, f"member{i}.onnx")))
    gate = None
    if a.gate != "none":
        bias = 6.0 if a.gate == "accept" else -6.0
        g = conv_net(7, 1, a.size, a.channels, "gate_logit", a.fixed_batch, bias=bias, zero_weights=True)
        gate = ("gate.onnx", save(g, "gate.onnx"))

    lines = [
        f'id = "{a.id}"',
        'version = "0.0.1"',
        'name = "tiny test ensemble"',
        'manufacturer = "radstream tests"',
        'task = "multilabel-classification"',
        'intended_use = "unit tests only"',
        "not_for_clinical_use = true",
        "[input]",
        'name = "image"',
        f"width = {a.size}",
        f"height = {a.size}",
        f"channels = {a.channels}",
        'layout = "NCHW"',
        'windowing = "voi-or-percentile"',
        "percentile_low = 0.5",
        "percentile_high = 99.5",
        "mean = 0.5",
        "std = 0.25",
        'frames = "first"',
        "[output]",
        'name = "logits"',
        'activation = "sigmoid"',
        "[ensemble]",
        'combination = "mean"',
    ]
    for f, h in members:
        lines += ["[[ensemble.members]]", f'file = "{f}"', f'sha256 = "{h}"']
    if gate:
        lines += ["[gate]", f'file = "{gate[0]}"', f'sha256 = "{gate[1]}"', "threshold = 0.5"]
    lines += [
        "[uncertainty]",
        'spread = "std"',
        "optimal_below = 0.005",
        "good_below = 0.008",
        "review_entropy_above = 0.6",
        "[applicability]",
        'modalities = []' if a.accept_any else 'modalities = ["CR", "DX", "MR"]',
        "body_parts = []",
        "view_positions = []",
        "photometric = []" if a.accept_any else 'photometric = ["MONOCHROME1", "MONOCHROME2"]',
    ]
    for j in range(a.labels):
        lines += [
            "[[labels]]",
            f'key = "finding{j}"',
            f'name = "Finding {j}"',
            f'snomed = "{1000 + j}"',
            f'display = "Finding {j}"',
            "threshold = 0.5",
        ]
    (out / "model.toml").write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
