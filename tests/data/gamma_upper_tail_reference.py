"""Writes gamma_upper_tail_reference.json: dx/da of Gamma(a, 1) draws x at fixed CDF value
(implicit reparameterization) on the upper branch x >= a + 1, where bayesgrad evaluates Q(a, x)'s
continued fraction, from 50-digit mpmath: dx/da = (dQ/da) / p(x; a), with dQ/da by mpmath's
numerical differentiation of the regularized upper incomplete gamma function.

Run: python3 tests/data/gamma_upper_tail_reference.py   (needs `pip install mpmath`)
"""
import json
import os

import mpmath as mp

mp.mp.dps = 50
cases = []
for a in [0.003, 0.1, 0.9, 1.0, 2.0, 2.5, 7.0, 30.0, 1e3, 1e4, 1e5]:
    for k in [0.0, 0.3, 1.0, 3.0, 10.0]:
        x = a + 1.0 + k * max(1.0, a**0.5)
        A, X = mp.mpf(a), mp.mpf(x)
        dq = mp.diff(lambda s: mp.gammainc(s, X, mp.inf, regularized=True), A)
        p = mp.exp((A - 1) * mp.log(X) - X - mp.loggamma(A))
        cases.append({"a": a, "x": x, "dx_da": float(dq / p)})
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gamma_upper_tail_reference.json")
with open(out, "w") as f:
    json.dump({"generator": "mpmath, 50 digits", "cases": cases}, f, indent=1)
print(f"{len(cases)} cases -> {out}")
