"""Python onnxruntime throughput on one model: the ceiling the Rust engine is compared with.

    ort_ceiling.py MODEL.onnx --size 256 --channels 1 --batch 8 --seconds 5 --threads 1

Prints one line: `ceiling batch=B images_per_s=X p50_ms=Y`. Each ensemble member is a separate
model; the caller sums per-member times.
"""

import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).normal(0, 1, (a.batch, a.channels, a.size, a.size)).astype(np.float32)
    sess.run(None, {name: x})
    times = []
    end = time.perf_counter() + a.seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    p50 = float(np.median(times))
    print(f"ceiling batch={a.batch} images_per_s={a.batch / p50:.2f} p50_ms={p50 * 1000:.3f}")


if __name__ == "__main__":
    main()
