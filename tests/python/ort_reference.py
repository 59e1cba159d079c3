"""Run an ONNX model with Python onnxruntime on a raw little-endian f32 tensor.

    ort_reference.py MODEL.onnx INPUT.f32 N,C,H,W OUTPUT.f32

Writes the first output, flattened, as raw little-endian f32.
"""

import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, shape, out = sys.argv[1:5]
    shape = tuple(int(s) for s in shape.split(","))
    x = np.fromfile(inp, dtype="<f4").reshape(shape)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    y = sess.run(None, {name: x})[0]
    np.asarray(y, dtype="<f4").ravel().tofile(out)


if __name__ == "__main__":
    main()
