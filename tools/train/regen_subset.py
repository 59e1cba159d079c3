#!/usr/bin/env python3
"""Re-render the cached phantoms that carry one label after a generator fix (same seeds).

    .venv-train/bin/python tools/train/regen_subset.py --cache /tmp/radstream-cache --label pleural_effusion
"""
import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as T  # noqa: E402

BASES = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/radstream-cache")
    ap.add_argument("--label", required=True)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    j = T.LABELS.index(a.label)
    with Pool(a.workers) as pool:
        for split, base in BASES.items():
            X = np.load(os.path.join(a.cache, f"{split}_x.npy"))
            Y = np.load(os.path.join(a.cache, f"{split}_y.npy"))
            G = np.load(os.path.join(a.cache, f"{split}_geo.npy"))
            idx = np.flatnonzero(Y[:, j] == 1)
            res = pool.map(T._gen_cxr, [(base + int(i), None) for i in idx], chunksize=8)
            for i, (x, y, g) in zip(idx, res):
                assert (y == Y[i]).all()
                X[i], G[i] = x, g
            np.save(os.path.join(a.cache, f"{split}_x.npy"), X)
            np.save(os.path.join(a.cache, f"{split}_geo.npy"), G)
            print(split, "re-rendered", len(idx), flush=True)


if __name__ == "__main__":
    main()
