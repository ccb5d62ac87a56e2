"""Fits the polynomial of `fastmath::ln` (src/kernels/fastmath.rs):

    ln(1 + f) = f + f^2 (f P(f) - 1/2)    for f in [sqrt(1/2) - 1, sqrt(2) - 1],

P of degree 8, minimizing the largest relative error of the sum by iteratively reweighted least
squares (Lawson's algorithm) on 4000 Chebyshev points, in double precision. Prints P's
coefficients rounded to f32, as the Rust constant `LN1P` holds them, and the fit's largest
relative error before any rounding of the evaluation.

    .venv-torch/bin/python examples/fit_ln_polynomial.py      # any Python with NumPy

Not part of the build or of CI.
"""
import numpy as np

DEGREE = 8
lo, hi = np.sqrt(0.5) - 1, np.sqrt(2) - 1
n = 4000
f = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
f = f[np.abs(f) > 1e-4]  # P is well defined at 0; the points there carry no weight anyway
target = (np.log1p(f) - f + f * f / 2) / f**3  # what P must equal
weight = f**2 / np.abs(np.log1p(f))  # P's error, times this, is the sum's relative error
vander = np.vander(f, DEGREE + 1, increasing=True)
lawson = np.ones_like(f)
for _ in range(60):
    w = weight * lawson
    coef, *_ = np.linalg.lstsq(vander * w[:, None], target * w, rcond=None)
    err = np.abs((vander @ coef - target) * weight)
    lawson = lawson * np.sqrt(err / err.max()) + 1e-12
    lawson /= lawson.max()
print("LN1P =", [np.format_float_positional(np.float32(c)) for c in coef])
print(f"largest relative error of the sum before rounding: {err.max():.2e}")
