"""The cases of `examples/large_parameters.rs` from mpmath (the reference), PyTorch and TFP.

usage: python examples/large_parameters.py

Prints one tab-separated line per case and source (`mpmath`, `torch`, `tfp`) for each of the
three that the interpreter can import, so run it under each peer's environment. mpmath works at
80 significant digits, 700 for df = 1e300, where ln Γ(df/2) has 302 digits before the point.
Not part of the build or of CI; `docs/accuracy.md` has the figures.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
MAX = 1.7976931348623157e308

CASES = [
    "StudentT(1e10).log_prob(1)",
    "StudentT(1e10).entropy",
    "StudentT(1e300).log_prob(0.5)",
    "StudentT(1e10) dlogp/ddf",
    "Gamma(1e10,1e10).log_prob(1.00001)",
    "Gamma(1e10,1e10).entropy",
    "Beta(1e8,3e8).entropy",
    "KL Gamma(1e6,1)||Gamma(1e6+10,1)",
    "KL Gamma(1e10,2)||Gamma(1e10+1e3,2)",
    "KL Beta(1e6,2e6)||Beta(1e6+10,2e6)",
    "KL N(0,1)||N(1e-5,1+1e-6)",
    "Poisson(1e8).log_prob(1e8+1e4)",
    "Uniform(-MAX,MAX).log_prob(0)",
    "KL Gamma(1e12,1e12)||Gamma(1,1)",
    "KL Beta(1e8,1e8)||Beta(1,1)",
    "KL Beta(1e-10,3)||Beta(1e-10,1)",
    "KL Dir(1e-6,2e-6,3)||Dir(1e-6,2e-6,2.5)",
    "Dir(3,1e10,1).entropy",
    "Dir(1e10,1,2).log_prob(1-3e-10,1e-10,2e-10)",
    "Dir(0.5,3,1e30).log_prob(1e-30,3e-30,1)",
]

# the concentrations and the point of the last two cases
DIRICHLET_LOG_PROBS = [
    ([1e10, 1.0, 2.0], [1 - 3e-10, 1e-10, 2e-10]),
    ([0.5, 3.0, 1e30], [1e-30, 3e-30, 1.0]),
]


def mpmath_values():
    import mpmath as mp

    mp.mp.dps = 80
    f = mp.mpf
    lg, psi = mp.loggamma, mp.digamma

    def t_lp(nu, x):
        return lg((nu + 1) / 2) - lg(nu / 2) - mp.log(mp.pi * nu) / 2 - (nu + 1) / 2 * mp.log1p(x * x / nu)

    def t_h(nu):
        return (nu + 1) / 2 * (psi((nu + 1) / 2) - psi(nu / 2)) + mp.log(nu) / 2 + lg(nu / 2) + lg(f(1) / 2) - lg((nu + 1) / 2)

    def g_lp(a, b, x):
        return a * mp.log(b) + (a - 1) * mp.log(x) - b * x - lg(a)

    def lbeta(a, b):
        return lg(a) + lg(b) - lg(a + b)

    def kl_gamma(a1, b1, a2, b2):
        return (a1 - a2) * psi(a1) - lg(a1) + lg(a2) + a2 * (mp.log(b1) - mp.log(b2)) + a1 * (b2 - b1) / b1

    def kl_beta(a1, b1, a2, b2):
        s = a1 + b1
        return lbeta(a2, b2) - lbeta(a1, b1) + (a1 - a2) * psi(a1) + (b1 - b2) * psi(b1) + (a2 - a1 + b2 - b1) * psi(s)

    v = {}
    v[CASES[0]] = t_lp(f(1e10), f(1))
    v[CASES[1]] = t_h(f(1e10))
    v[CASES[3]] = mp.diff(lambda n: t_lp(n, f(1)), f(1e10))
    a = f(1e10)
    v[CASES[4]] = g_lp(a, a, f(1.00001))
    v[CASES[5]] = a - mp.log(a) + lg(a) + (1 - a) * psi(a)
    a, b = f(1e8), f(3e8)
    v[CASES[6]] = lbeta(a, b) - (a - 1) * psi(a) - (b - 1) * psi(b) + (a + b - 2) * psi(a + b)
    v[CASES[7]] = kl_gamma(f(1e6), f(1), f(1e6 + 10), f(1))
    v[CASES[8]] = kl_gamma(f(1e10), f(2), f(1e10 + 1e3), f(2))
    v[CASES[9]] = kl_beta(f(1e6), f(2e6), f(1e6 + 10), f(2e6))
    m, s = f(1e-5), f(1.0 + 1e-6)
    v[CASES[10]] = mp.log(s) + (1 + m * m) / (2 * s * s) - f(1) / 2
    k, r = f(1e8 + 1e4), f(1e8)
    v[CASES[11]] = k * mp.log(r) - r - lg(k + 1)
    v[CASES[12]] = -mp.log(2 * f(MAX))
    v[CASES[13]] = kl_gamma(f(1e12), f(1e12), f(1), f(1))
    v[CASES[14]] = kl_beta(f(1e8), f(1e8), f(1), f(1))
    v[CASES[15]] = kl_beta(f(1e-10), f(3), f(1e-10), f(1))
    q, p = [f(1e-6), f(2e-6), f(3)], [f(1e-6), f(2e-6), f(2.5)]
    q0, p0 = sum(q), sum(p)
    v[CASES[16]] = lg(q0) - lg(p0) + sum(lg(y) - lg(x) + (x - y) * (psi(x) - psi(q0)) for x, y in zip(q, p))
    a = [f(3), f(1e10), f(1)]
    a0 = sum(a)
    v[CASES[17]] = sum(lg(x) - (x - 1) * psi(x) for x in a) - lg(a0) + (a0 - 3) * psi(a0)
    for case, (a, x) in zip(CASES[18:], DIRICHLET_LOG_PROBS):
        a, x = [f(v) for v in a], [f(v) for v in x]
        v[case] = lg(sum(a)) + sum((c - 1) * mp.log(y) - lg(c) for c, y in zip(a, x))
    mp.mp.dps = 700
    v[CASES[2]] = t_lp(f(1e300), f(0.5))
    return {k: float(x) for k, x in v.items()}


def torch_values():
    import torch

    D = torch.distributions
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    v = {}
    v[CASES[0]] = D.StudentT(t(1e10)).log_prob(t(1.0))
    v[CASES[1]] = D.StudentT(t(1e10)).entropy()
    v[CASES[2]] = D.StudentT(t(1e300)).log_prob(t(0.5))
    df = t(1e10).requires_grad_()
    D.StudentT(df).log_prob(t(1.0)).backward()
    v[CASES[3]] = df.grad
    v[CASES[4]] = D.Gamma(t(1e10), t(1e10)).log_prob(t(1.00001))
    v[CASES[5]] = D.Gamma(t(1e10), t(1e10)).entropy()
    v[CASES[6]] = D.Beta(t(1e8), t(3e8)).entropy()
    kl = D.kl_divergence
    v[CASES[7]] = kl(D.Gamma(t(1e6), t(1.0)), D.Gamma(t(1e6 + 10), t(1.0)))
    v[CASES[8]] = kl(D.Gamma(t(1e10), t(2.0)), D.Gamma(t(1e10 + 1e3), t(2.0)))
    v[CASES[9]] = kl(D.Beta(t(1e6), t(2e6)), D.Beta(t(1e6 + 10), t(2e6)))
    v[CASES[10]] = kl(D.Normal(t(0.0), t(1.0)), D.Normal(t(1e-5), t(1.0 + 1e-6)))
    v[CASES[11]] = D.Poisson(t(1e8)).log_prob(t(1e8 + 1e4))
    v[CASES[12]] = D.Uniform(t(-MAX), t(MAX)).log_prob(t(0.0))
    v[CASES[13]] = kl(D.Gamma(t(1e12), t(1e12)), D.Gamma(t(1.0), t(1.0)))
    v[CASES[14]] = kl(D.Beta(t(1e8), t(1e8)), D.Beta(t(1.0), t(1.0)))
    v[CASES[15]] = kl(D.Beta(t(1e-10), t(3.0)), D.Beta(t(1e-10), t(1.0)))
    v[CASES[16]] = kl(D.Dirichlet(t([1e-6, 2e-6, 3.0])), D.Dirichlet(t([1e-6, 2e-6, 2.5])))
    v[CASES[17]] = D.Dirichlet(t([3.0, 1e10, 1.0])).entropy()
    for case, (a, x) in zip(CASES[18:], DIRICHLET_LOG_PROBS):
        v[case] = D.Dirichlet(t(a)).log_prob(t(x))
    return {k: float(x) for k, x in v.items()}


def tfp_values():
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    c = lambda x: tf.constant(x, tf.float64)
    t = lambda df: tfd.StudentT(df, c(0.0), c(1.0))
    v = {}
    v[CASES[0]] = t(c(1e10)).log_prob(c(1.0))
    v[CASES[1]] = t(c(1e10)).entropy()
    v[CASES[2]] = t(c(1e300)).log_prob(c(0.5))
    df = tf.Variable(c(1e10))
    with tf.GradientTape() as g:
        lp = t(df).log_prob(c(1.0))
    v[CASES[3]] = g.gradient(lp, df)
    v[CASES[4]] = tfd.Gamma(c(1e10), c(1e10)).log_prob(c(1.00001))
    v[CASES[5]] = tfd.Gamma(c(1e10), c(1e10)).entropy()
    v[CASES[6]] = tfd.Beta(c(1e8), c(3e8)).entropy()
    kl = tfd.kl_divergence
    v[CASES[7]] = kl(tfd.Gamma(c(1e6), c(1.0)), tfd.Gamma(c(1e6 + 10), c(1.0)))
    v[CASES[8]] = kl(tfd.Gamma(c(1e10), c(2.0)), tfd.Gamma(c(1e10 + 1e3), c(2.0)))
    v[CASES[9]] = kl(tfd.Beta(c(1e6), c(2e6)), tfd.Beta(c(1e6 + 10), c(2e6)))
    v[CASES[10]] = kl(tfd.Normal(c(0.0), c(1.0)), tfd.Normal(c(1e-5), c(1.0 + 1e-6)))
    v[CASES[11]] = tfd.Poisson(c(1e8)).log_prob(c(1e8 + 1e4))
    v[CASES[12]] = tfd.Uniform(c(-MAX), c(MAX)).log_prob(c(0.0))
    v[CASES[13]] = kl(tfd.Gamma(c(1e12), c(1e12)), tfd.Gamma(c(1.0), c(1.0)))
    v[CASES[14]] = kl(tfd.Beta(c(1e8), c(1e8)), tfd.Beta(c(1.0), c(1.0)))
    v[CASES[15]] = kl(tfd.Beta(c(1e-10), c(3.0)), tfd.Beta(c(1e-10), c(1.0)))
    v[CASES[16]] = kl(tfd.Dirichlet(c([1e-6, 2e-6, 3.0])), tfd.Dirichlet(c([1e-6, 2e-6, 2.5])))
    v[CASES[17]] = tfd.Dirichlet(c([3.0, 1e10, 1.0])).entropy()
    for case, (a, x) in zip(CASES[18:], DIRICHLET_LOG_PROBS):
        v[case] = tfd.Dirichlet(c(a)).log_prob(c(x))
    return {k: float(x.numpy()) for k, x in v.items()}


def main():
    for source, values in (("mpmath", mpmath_values), ("torch", torch_values), ("tfp", tfp_values)):
        try:
            got = values()
        except ImportError:
            continue
        for case in CASES:
            print(f"{source}\t{case}\t{got[case]!r}")


if __name__ == "__main__":
    main()
