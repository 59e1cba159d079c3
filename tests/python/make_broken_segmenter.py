"""Write a segmentation model that loads and warms up (on zeros) but fails on any real image
(its Reshape cannot hold an input whose maximum is above zero), to test that one model's
failure leaves the others' outputs.

    make_broken_segmenter.py MODELS_DIR [--id broken-seg]
"""

import argparse
import hashlib
import pathlib

import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--id", default="broken-seg")
a = ap.parse_args()
out = pathlib.Path(a.out) / a.id
out.mkdir(parents=True, exist_ok=True)
x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])
y = helper.make_tensor_value_info("lung", TensorProto.FLOAT, ["N", 1, 16, 16])
consts = [
    numpy_helper.from_array(np.array([-1, 1, 16], dtype=np.int64), "head"),
    numpy_helper.from_array(np.array(16, dtype=np.int64), "sixteen"),
    numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
]
nodes = [
    # last = 16 - (max(image) > 0): 16 on the warm-up's zeros, 15 on a real image.
    helper.make_node("ReduceMax", ["image"], ["max"], keepdims=0),
    helper.make_node("Greater", ["max", "zero"], ["positive"]),
    helper.make_node("Cast", ["positive"], ["one_if_positive"], to=TensorProto.INT64),
    helper.make_node("Sub", ["sixteen", "one_if_positive"], ["last"]),
    helper.make_node("Unsqueeze", ["last", "axis0"], ["last1"]),
    helper.make_node("Concat", ["head", "last1"], ["shape"], axis=0),
    helper.make_node("Reshape", ["image", "shape"], ["lung"]),
]
graph = helper.make_graph(nodes, "broken", [x], [y], consts)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
path = out / "model.onnx"
onnx.save(model, str(path))
digest = hashlib.sha256(path.read_bytes()).hexdigest()
(out / "model.toml").write_text(f'''id = "{a.id}"
version = "0.0.1"
name = "a segmentation model that always fails (test)"
manufacturer = "radstream tests"
task = "segmentation"
intended_use = "Tests only."
not_for_clinical_use = true
[input]
name = "image"
width = 16
height = 16
channels = 1
layout = "NCHW"
windowing = "percentile"
percentile_low = 0.5
percentile_high = 99.5
mean = 0.5
std = 1.0
frames = "first"
[output]
name = "lung"
activation = "identity"
[ensemble]
combination = "mean"
[[ensemble.members]]
file = "model.onnx"
sha256 = "{digest}"
[segmentation]
kind = "lung-fields"
threshold = 0.5
''')
