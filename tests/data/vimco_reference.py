"""Writes vimco_reference.json: for vectors of log weights f (K draws), the K-sample bound
L = ln (1/K) sum_k e^(f_k) and, for each draw k, the swap-one-out bound L_-k (f_k replaced by the
mean of the other draws' log weights), from 50-digit mpmath; with TensorFlow Probability's
`tfp.stats.log_soomean_exp` (the same two quantities in float64) beside them when TFP is
installed.

Run: python3 tests/data/vimco_reference.py   (needs `pip install mpmath`; TFP optional)
"""
import json
import os
import random

import mpmath as mp

mp.mp.dps = 50
rng = random.Random(0)
vectors = [
    [0.1, -0.3, 0.7],
    [30.0, -30.0],
    [5.0, 5.0, 5.0, 5.0],
    [0.0, -50.0, -100.0],
    [-1000.0, -1000.5, -2000.0, -1001.0],
    [1e8, 1e8 + 1.0, 1e8 - 2.0],
    [-1e5, 0.0, 1e5],
    [1.0, 1e-12, -1e-12, 2e-12, 0.0],
    [rng.gauss(0.0, 3.0) for _ in range(8)],
    [rng.gauss(-700.0, 40.0) for _ in range(16)],
    [rng.gauss(-300.0, 200.0) for _ in range(64)],
]


def log_mean_exp(xs):
    return mp.log(mp.fsum(mp.exp(x) for x in xs) / len(xs))


try:
    import numpy as np
    import tensorflow_probability as tfp

    def tfp_values(f):
        soo, mean = tfp.stats.log_soomean_exp(np.array(f, dtype=np.float64), axis=0)
        return float(mean), [float(v) for v in soo]
except ImportError:
    tfp_values = None

cases = []
for f in vectors:
    xs = [mp.mpf(v) for v in f]
    k = len(xs)
    swapped = []
    for i in range(k):
        others = xs[:i] + xs[i + 1:]
        mean = mp.fsum(others) / (k - 1)
        swapped.append(float(log_mean_exp(others + [mean])))
    case = {"log_weights": f, "bound": float(log_mean_exp(xs)), "swap_one_out": swapped}
    if tfp_values is not None:
        case["tfp_bound"], case["tfp_swap_one_out"] = tfp_values(f)
    cases.append(case)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vimco_reference.json")
with open(out, "w") as fh:
    json.dump({"generator": "mpmath, 50 digits (tfp_*: TFP's log_soomean_exp)", "cases": cases},
              fh, indent=1)
print(f"{len(cases)} cases -> {out}")
