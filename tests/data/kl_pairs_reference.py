"""Writes kl_pairs_reference.json: KL divergences of the pairs Uniform/Uniform, Poisson/Poisson,
Exponential/Gamma, Gamma/Exponential and LogitNormal/LogitNormal, with their gradients, from their
closed forms in 50-digit mpmath (each analytic derivative checked against mpmath's numerical one);
with TensorFlow Probability's value in float64 beside them (`tfp_value`) when TFP is installed and
has the pair (it has no Poisson/Poisson KL).

Run: python3 tests/data/kl_pairs_reference.py   (needs `pip install mpmath`; TFP optional)
"""
import json
import math
import os

import mpmath as mp

mp.mp.dps = 50


def gamma_kl(a1, b1, a2, b2):
    """KL(Gamma(a1, b1) || Gamma(a2, b2)) and its derivatives in a1, b1, a2, b2."""
    value = ((a1 - a2) * mp.digamma(a1) - mp.loggamma(a1) + mp.loggamma(a2)
             + a2 * (mp.log(b1) - mp.log(b2)) + a1 * (b2 - b1) / b1)
    y = a1 * b2 / b1
    grads = [
        (a1 - a2) * mp.polygamma(1, a1) + (b2 - b1) / b1,
        (a2 - y) / b1,
        mp.digamma(a2) - mp.digamma(a1) - mp.log(b2 / b1),
        (y - a2) / b2,
    ]
    return value, grads


def uniform_kl(lq, hq, lp, hp):
    assert lp <= lq and hq <= hp, "the reference holds contained intervals only"
    value = mp.log((hp - lp) / (hq - lq))
    wq, wp = hq - lq, hp - lp
    return value, [1 / wq, -1 / wq, -1 / wp, 1 / wp]


def poisson_kl(rq, rp):
    value = rq * mp.log(rq / rp) + rp - rq
    return value, [mp.log(rq / rp), 1 - rq / rp]


def exponential_gamma_kl(rq, ap, bp):
    value, g = gamma_kl(mp.mpf(1), rq, ap, bp)
    return value, [g[1], g[2], g[3]]


def gamma_exponential_kl(aq, bq, rp):
    value, g = gamma_kl(aq, bq, mp.mpf(1), rp)
    return value, [g[0], g[1], g[3]]


def normal_kl(mq, sq, mp_, sp):
    d = mq - mp_
    value = mp.log(sp / sq) + (sq ** 2 + d ** 2) / (2 * sp ** 2) - mp.mpf(1) / 2
    return value, [d / sp ** 2, sq / sp ** 2 - 1 / sq, -d / sp ** 2,
                   1 / sp - (sq ** 2 + d ** 2) / sp ** 3]


KINDS = {
    "uniform_kl": (uniform_kl, ["low_q", "high_q", "low_p", "high_p"], [
        (0.0, 1.0, -1.0, 2.0),
        (0.3, 0.30000001, 0.0, 1.0),
        (2.0, 3.0, 2.0, 5.0),
        (-4.0, 4.0, -4.0, 4.0),
        (1e-3, 2e-3, -1e6, 1e6),
        (-1e300, 1e300, -1.7e308, 1.7e308),
        (5.0, 5.5, 4.9, 5.6),
        (-3.0, -2.0, -10.0, 0.0),
    ]),
    "poisson_kl": (poisson_kl, ["rate_q", "rate_p"], [
        (3.0, 2.0),
        (1e-3, 5.0),
        (50.0, 50.000001),
        (1e6, 1e6 + 1.0),
        (1e-8, 1.5e-8),
        (1e10, 3e9),
        (0.5, 1e4),
        (7.0, 7.0),
        (2.0, 1e-6),
    ]),
    "exponential_gamma_kl": (exponential_gamma_kl, ["rate_q", "concentration_p", "rate_p"], [
        (2.0, 2.0, 3.0),
        (1e-3, 0.5, 10.0),
        (50.0, 100.0, 2.0),
        (1.0, 1.0, 1.0),
        (3.0, 1e4, 1e4),
        (0.1, 1e-3, 2.0),
        (7.0, 1.0, 7.0),
        (1e3, 2.5, 0.01),
    ]),
    "gamma_exponential_kl": (gamma_exponential_kl, ["concentration_q", "rate_q", "rate_p"], [
        (2.0, 3.0, 2.0),
        (1e-3, 2.0, 3.0),
        (1e4, 1e4, 1.0),
        (1.0, 5.0, 5.0),
        (0.5, 0.1, 10.0),
        (100.0, 2.0, 50.0),
        (1e6, 1e6, 1.0000001),
        (30.0, 1e-3, 1e3),
    ]),
    "logit_normal_kl": (normal_kl, ["loc_q", "scale_q", "loc_p", "scale_p"], [
        (0.0, 1.0, 1.0, 2.0),
        (-3.0, 0.1, 2.0, 5.0),
        (10.0, 1e-3, -10.0, 3.0),
        (0.5, 0.5, 0.5, 0.5),
        (1.0, 1e3, 0.0, 1e-2),
        (-1.0, 2.0, -1.0000001, 2.0),
        (4.0, 0.3, 3.0, 0.35),
        (0.0, 1.0, 0.0, 1.000001),
    ]),
}


def check_derivatives(f, args, grads):
    """Each analytic derivative against mpmath's numerical one, where the step fits."""
    for i, g in enumerate(grads):
        def along(t, i=i):
            shifted = list(args)
            shifted[i] = t
            return f(*shifted)[0]
        numeric = mp.diff(along, args[i])
        scale = max(abs(g), mp.mpf(10) ** -30)
        assert abs(numeric - g) <= mp.mpf(10) ** -20 * scale, (f.__name__, args, i, g, numeric)


try:
    import numpy as np
    import tensorflow_probability as tfp
    tfd = tfp.distributions

    def tfp_value(kind, args):
        a = [np.float64(x) for x in args]
        pairs = {
            "uniform_kl": lambda: (tfd.Uniform(a[0], a[1]), tfd.Uniform(a[2], a[3])),
            "exponential_gamma_kl": lambda: (tfd.Exponential(a[0]), tfd.Gamma(a[1], a[2])),
            "gamma_exponential_kl": lambda: (tfd.Gamma(a[0], a[1]), tfd.Exponential(a[2])),
            "logit_normal_kl": lambda: (tfd.LogitNormal(a[0], a[1]), tfd.LogitNormal(a[2], a[3])),
        }
        if kind not in pairs:
            return None
        q, p = pairs[kind]()
        return float(tfd.kl_divergence(q, p))
except ImportError:
    tfp_value = None

cases = []
for kind, (f, names, rows) in KINDS.items():
    for row in rows:
        args = [mp.mpf(x) for x in row]
        value, grads = f(*args)
        if kind != "uniform_kl":
            check_derivatives(f, args, grads)
        case = {"kind": kind}
        case.update({name: x for name, x in zip(names, row)})
        case["value"] = float(value)
        case.update({f"grad_{name}": float(g) for name, g in zip(names, grads)})
        if tfp_value is not None:
            v = tfp_value(kind, row)
            if v is not None:
                # (JSON has no infinity: a non-finite value is written as a string)
                case["tfp_value"] = v if math.isfinite(v) else str(v)
        cases.append(case)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kl_pairs_reference.json")
with open(out, "w") as fh:
    json.dump({"source": "tests/data/kl_pairs_reference.py: mpmath " + mp.__version__ + ", 50 digits",
               "cases": cases}, fh, indent=1)
    fh.write("\n")
print(f"{len(cases)} cases -> {out}")
