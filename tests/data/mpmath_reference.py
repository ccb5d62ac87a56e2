"""Writes mpmath_reference.json: reference values in the format of TFP's files, for what those files
do not hold: the KL divergences of Uniform/Uniform, Poisson/Poisson, Exponential/Gamma,
Gamma/Exponential, LogitNormal/LogitNormal, Normal/Laplace, Kumaraswamy/Beta, Beta/Beta (where one's
concentrations are far below the other's larger one) and Binomial/Binomial (a sum over the
counts, its derivatives mpmath's), the Student-t log-density far in its tails and at degrees of
freedom up to 1e305, the Cauchy, HalfCauchy and HalfNormal log-densities, entropies and KLs, the
Pareto log-density, entropy, KL, mean and variance, the Kumaraswamy log-density, entropy, mean and
variance, the von Mises log-density, entropy, circular variance and KL and the implicit derivatives
of its draws, and the NegativeBinomial and Binomial log-masses, each with its gradients, from closed
forms in 50-digit mpmath. The first group's derivatives are written out and checked against mpmath's
numerical ones (Kumaraswamy/Beta's, whose E[ln(1 - x)] is a quadrature, checked against the series
of that integral, against central differences); the second group's are mpmath's numerical
derivatives, and its entropies and KLs are checked against mpmath's quadrature of their integrals.
TensorFlow Probability's float64 value stands beside each case (`tfp_value`) when TFP is installed
and has it.

Run: python3 tests/data/mpmath_reference.py   (needs `pip install mpmath`; TFP optional)
"""
import json
import math
import os
import sys

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


def beta_kl(a1, b1, a2, b2):
    """KL(Beta(a1, b1) || Beta(a2, b2)) and its derivatives in a1, b1, a2, b2, in 800 digits: at
    concentrations of 1e-100 beside 1e10 its terms, of 1e200 and more, cancel to far less."""
    with mp.workdps(max(800, mp.mp.dps)):
        lbeta = lambda a, b: mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)
        s1, s2 = a1 + b1, a2 + b2
        value = (lbeta(a2, b2) - lbeta(a1, b1) + (a1 - a2) * mp.digamma(a1)
                 + (b1 - b2) * mp.digamma(b1) + (s2 - s1) * mp.digamma(s1))
        grads = [
            (a1 - a2) * mp.polygamma(1, a1) + (s2 - s1) * mp.polygamma(1, s1),
            (b1 - b2) * mp.polygamma(1, b1) + (s2 - s1) * mp.polygamma(1, s1),
            mp.digamma(a2) - mp.digamma(s2) - mp.digamma(a1) + mp.digamma(s1),
            mp.digamma(b2) - mp.digamma(s2) - mp.digamma(b1) + mp.digamma(s1),
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


def student_t_log_prob(nu, loc, s, x):
    """The Student-t log-density and its derivatives in df, loc, scale and x, at 600 digits: at df =
    1e300 its ln-gamma terms, about 3.5e302 each, differ by about 345."""
    with mp.workdps(600):
        z = (x - loc) / s
        q = z * z / nu
        h = (nu + 1) / 2
        value = (mp.loggamma(h) - mp.loggamma(nu / 2) - mp.log(nu * mp.pi) / 2 - mp.log(s)
                 - h * mp.log1p(q))
        dloc = (nu + 1) * z / (s * (nu + z * z))
        grads = [
            (mp.digamma(h) - mp.digamma(nu / 2)) / 2 - 1 / (2 * nu) - mp.log1p(q) / 2
            + (nu + 1) * z * z / (2 * nu * (nu + z * z)),
            dloc,
            -1 / s + dloc * z,
            -dloc,
        ]
    return +value, [+g for g in grads]


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
    # far in the tails, at degrees of freedom from 1e-300 to 1e305: |x - loc| / scale past 1e150
    # (or past 1e150 sqrt(df)) takes the far form of ln(1 + z²/df)
    "student_t_log_prob": (student_t_log_prob, ["df", "loc", "scale", "x"], [
        (1e300, 0.0, 1.0, 1e300),
        (1e300, -3.0, 1.0, 1e200),
        (1e300, 0.5, 2.0, 1e10),
        (1e305, 2.0, 3.0, -1e200),
        (1e200, 1.0, 1e-100, 2.0),
        (1e150, 0.0, 1e-150, 1e10),
        (3.5, 0.0, 1.0, 1e200),
        (1e-300, 0.0, 1.0, 1e200),
    ]),
}



# The second group: a value function, its gradients from mpmath's numerical derivatives.
LN_PI = mp.log(mp.pi)


def cauchy_log_prob(loc, scale, x):
    z = (x - loc) / scale
    return -LN_PI - mp.log(scale) - mp.log1p(z * z)


def cauchy_entropy(scale):
    return mp.log(4 * mp.pi * scale)


def cauchy_kl(mq, sq, mp_, sp):
    return mp.log(((sq + sp) ** 2 + (mq - mp_) ** 2) / (4 * sq * sp))


def half_cauchy_log_prob(scale, x):
    return mp.log(2) + cauchy_log_prob(0, scale, x)


def half_cauchy_entropy(scale):
    return mp.log(2 * mp.pi * scale)


def half_cauchy_kl(sq, sp):
    return cauchy_kl(0, sq, 0, sp)


def half_normal_log_prob(scale, x):
    return mp.log(2) - mp.log(scale) - mp.log(2 * mp.pi) / 2 - (x / scale) ** 2 / 2


def half_normal_entropy(scale):
    return mp.log(scale) + mp.log(mp.pi / 2) / 2 + mp.mpf(1) / 2


def half_normal_kl(sq, sp):
    return mp.log(sp / sq) + sq ** 2 / (2 * sp ** 2) - mp.mpf(1) / 2


def negative_binomial_log_prob(r, logits, k):
    return (mp.loggamma(k + r) - mp.loggamma(r) - mp.loggamma(k + 1)
            - r * mp.log1p(mp.exp(logits)) - k * mp.log1p(mp.exp(-logits)))


def binomial_log_prob(n, logits, k):
    return (mp.loggamma(n + 1) - mp.loggamma(k + 1) - mp.loggamma(n - k + 1)
            - k * mp.log1p(mp.exp(-logits)) - (n - k) * mp.log1p(mp.exp(logits)))


EULER = mp.euler


def gumbel_log_prob(loc, scale, x):
    z = (x - loc) / scale
    return -mp.log(scale) - (z + mp.exp(-z))


def gumbel_entropy(scale):
    return mp.log(scale) + EULER + 1


def gumbel_kl(mq, sq, mp_, sp):
    r, d = sq / sp, (mq - mp_) / sp
    return -mp.log(r) + EULER * (r - 1) + mp.exp(-d) * mp.gamma(1 + r) - 1 + d


def weibull_log_prob(k, lam, x):
    t = mp.log(x / lam)
    return mp.log(k) - mp.log(lam) + (k - 1) * t - mp.exp(k * t)


def weibull_entropy(k, lam):
    return EULER * (1 - 1 / k) + mp.log(lam / k) + 1


def weibull_kl(kq, lq, kp, lp):
    # E_q[ln q] - E_q[ln p], with E ln x = ln lq - γ/kq and E x^kp = lq^kp Γ(1 + kp/kq)
    e_ln = mp.log(lq) - EULER / kq
    e_ln_q = -weibull_entropy(kq, lq)
    e_ln_p = (mp.log(kp) - mp.log(lp) + (kp - 1) * (e_ln - mp.log(lp))
              - (lq / lp) ** kp * mp.gamma(1 + kp / kq))
    return e_ln_q - e_ln_p


def weibull_mean(k, lam):
    return lam * mp.gamma(1 + 1 / k)


def weibull_variance(k, lam):
    # (the two gammas agree in about 2 log10(k) digits: at k = 1e150, 300 of them)
    with mp.workdps(mp.mp.dps + 2 * max(0, int(mp.log10(k)))):
        value = lam ** 2 * (mp.gamma(1 + 2 / k) - mp.gamma(1 + 1 / k) ** 2)
    return +value


def inverse_gamma_log_prob(a, b, x):
    return a * mp.log(b) - mp.loggamma(a) - (a + 1) * mp.log(x) - b / x


def inverse_gamma_entropy(a, b):
    return a + mp.log(b) + mp.loggamma(a) - (a + 1) * mp.digamma(a)


def inverse_gamma_kl(aq, bq, ap, bp):
    return gamma_kl(aq, bq, ap, bp)[0]


def normal_laplace_kl(mq, sq, mp_, sp):
    d = mq - mp_
    z = d / sq
    mean_abs = sq * mp.sqrt(2 / mp.pi) * mp.exp(-z ** 2 / 2) + d * mp.erf(z / mp.sqrt(2))
    return mp.log(2 * sp / sq) - mp.log(2 * mp.pi) / 2 - mp.mpf(1) / 2 + mean_abs / sp


def pareto_log_prob(a, m, x):
    return mp.log(a) + a * mp.log(m) - (a + 1) * mp.log(x)


def pareto_entropy(a, m):
    return mp.log(m / a) + 1 / a + 1


def pareto_kl(aq, mq, ap, mp_):
    # (for mq >= mp_, which the cases hold: +inf below, where the numerical
    # derivatives at mq = mp_ take the formula on)
    r = aq / ap
    return mp.log(r) + 1 / r - 1 + ap * mp.log(mq / mp_)


def pareto_mean(a, m):
    return a * m / (a - 1)


def pareto_variance(a, m):
    return m ** 2 * a / ((a - 1) ** 2 * (a - 2))


def kumaraswamy_log_prob(a, b, x):
    return mp.log(a) + mp.log(b) + (a - 1) * mp.log(x) + (b - 1) * mp.log(1 - x ** a)


def kumaraswamy_entropy(a, b):
    return (1 - 1 / b) + (1 - 1 / a) * (mp.digamma(b + 1) + EULER) - mp.log(a * b)


def kumaraswamy_mean(a, b):
    return b * mp.beta(1 + 1 / a, b)


def kumaraswamy_variance(a, b):
    return b * mp.beta(1 + 2 / a, b) - kumaraswamy_mean(a, b) ** 2


def kumaraswamy_log_complement(a, b, parts_wanted=(0, 1, 2)):
    """E[ln(1 - x)] under Kumaraswamy(a, b) and its derivatives in a and b, by quadrature over E
    = -ln v (a standard exponential; the draw is x = (1 - e^(-E/b))^(1/a)), each integrand written
    with expm1 and log1p so that it keeps its digits where x is near 0 or 1."""
    def parts(e):
        s = -e / b
        es = mp.exp(s)
        w = -mp.expm1(s)
        t = mp.log1p(-es) / a
        x = mp.exp(t)
        if s == 0 or x == 0:
            # x = 0: each integrand is 0 in the limit
            return [mp.mpf(0)] * 3
        one_less = -mp.expm1(t)
        ratio = x / one_less
        weight = mp.exp(-e)
        log_one_less = mp.log1p(-x) if x < 0.5 else mp.log(one_less)
        return [weight * log_one_less, weight * (t / a) * ratio,
                weight * (-(s / (a * b)) * (es / w) * ratio)]
    # (breaks every half decade: a peak of the integrand far out, as for a small a, is then
    # inside an interval of its own size)
    pts = sorted({mp.mpf(0), mp.inf} | {b * mp.mpf(10) ** (k / 2) for k in range(-8, 5)}
                 | {mp.mpf(10) ** (k / 2) for k in range(-8, 8)})
    # (mpmath's quad stops at an absolute error of 10^-50: each integral is taken again over
    # its first estimate, so that a small one keeps its relative digits too)
    out = []
    for i in parts_wanted:
        scale = abs(mp.quad(lambda e: parts(e)[i], pts, maxdegree=4))
        out.append(scale * mp.quad(lambda e: parts(e)[i] / scale, pts))
    return out


def kumaraswamy_beta_kl(a, b, al, be):
    """KL(Kumaraswamy(a, b) || Beta(al, be)) and its derivatives in a, b, al, be: minus the
    Kumaraswamy entropy, less E[ln p] with E[ln x] = -H_b / a and E[ln(1 - x)] by quadrature."""
    h = mp.digamma(b + 1) + EULER
    l, l_a, l_b = kumaraswamy_log_complement(a, b)
    gap = (a - al) / a
    value = mp.log(a * b) - (b - 1) / b - h * gap - (be - 1) * l + mp.log(mp.beta(al, be))
    grads = [
        1 / a - al * h / a ** 2 - (be - 1) * l_a,
        1 / b - 1 / b ** 2 - mp.polygamma(1, b + 1) * gap - (be - 1) * l_b,
        h / a + mp.digamma(al) - mp.digamma(al + be),
        -l + mp.digamma(be) - mp.digamma(al + be),
    ]
    return value, grads

def von_mises_log_prob(m, k, x):
    return k * mp.cos(x - m) - mp.log(2 * mp.pi * mp.besseli(0, k))


def von_mises_entropy(k):
    return mp.log(2 * mp.pi * mp.besseli(0, k)) - k * mp.besseli(1, k) / mp.besseli(0, k)


def von_mises_variance(k):
    return 1 - mp.besseli(1, k) / mp.besseli(0, k)


def von_mises_kl(m1, k1, m2, k2):
    a1 = mp.besseli(1, k1) / mp.besseli(0, k1)
    return (mp.log(mp.besseli(0, k2)) - mp.log(mp.besseli(0, k1))
            + a1 * (k1 - k2 * mp.cos(m1 - m2)))

def softplus(x):
    return mp.log1p(mp.exp(x))


def geometric_log_prob(logits, k):
    return -k * softplus(logits) - softplus(-logits)


def geometric_entropy(logits):
    return softplus(-logits) + mp.exp(-logits) * softplus(logits)


def geometric_kl(lq, lp):
    return (softplus(-lp) - softplus(-lq)
            + mp.exp(-lq) * (softplus(lp) - softplus(lq)))


def by_quadrature(kind, args):
    """The entropy or KL of a case as the integral that defines it (None for a density)."""
    if not kind.endswith(("entropy", "kl")):
        return None
    if kind in ("von_mises_entropy", "von_mises_kl"):
        # over the angle from the location, broken where a large κ's density is
        m0, k0 = (args[0], args[1]) if kind == "von_mises_kl" else (0, args[0])
        w = 1 / mp.sqrt(k0)
        pts = sorted({-mp.pi, mp.pi} | {z * w for z in (-40, -8, -2, 0, 2, 8, 40) if z * w < mp.pi
                                        and z * w > -mp.pi})
        lq = lambda t: von_mises_log_prob(0, k0, t)
        if kind == "von_mises_entropy":
            return mp.quad(lambda t: -mp.exp(lq(t)) * lq(t), pts)
        lp = lambda t: von_mises_log_prob(args[2], args[3], m0 + t)
        return mp.quad(lambda t: mp.exp(lq(t)) * (lq(t) - lp(t)), pts)
    if kind == "cauchy_entropy":
        f = lambda x: -mp.exp(cauchy_log_prob(0, args[0], x)) * cauchy_log_prob(0, args[0], x)
        return mp.quad(f, [-mp.inf, 0, mp.inf])
    if kind == "cauchy_kl":
        lq = lambda x: cauchy_log_prob(args[0], args[1], x)
        lp = lambda x: cauchy_log_prob(args[2], args[3], x)
        f = lambda x: mp.exp(lq(x)) * (lq(x) - lp(x))
        return mp.quad(f, [-mp.inf, args[0] - args[1], args[0], args[0] + args[1], mp.inf])
    if kind in ("gumbel_entropy", "gumbel_kl"):
        # over the standard variable z of q (x = loc + scale z), whose density
        # is below e^-390 left of -6 and whose tail right of 80 holds e^-80
        loc, scale = (0, args[0]) if kind == "gumbel_entropy" else (args[0], args[1])
        lq = lambda z: gumbel_log_prob(0, 1, z)
        if kind == "gumbel_entropy":
            f = lambda z: -mp.exp(lq(z)) * (lq(z) - mp.log(scale))
        else:
            lp = lambda z: gumbel_log_prob(args[2], args[3], loc + scale * z) + mp.log(scale)
            f = lambda z: mp.exp(lq(z)) * (lq(z) - lp(z))
        return mp.quad(f, [-6, -2, 0, 2, 10, 30, 80])
    if kind in ("weibull_entropy", "weibull_kl", "inverse_gamma_entropy", "inverse_gamma_kl"):
        # over w with x = λ e^(w/k) (Weibull: w = ln E, E ~ Exp(1), density
        # e^(w - e^w)) or x = b e^-w (inverse Gamma: w = ln G, G ~ Gamma(a, 1),
        # density e^(a w - e^w) / Γ(a)), on a finite range outside which q
        # holds less than e^-100
        a0, b0 = args[0], args[1]
        if kind.startswith("weibull"):
            dens = weibull_log_prob
            x_of = lambda w: b0 * mp.exp(w / a0)
            lw = lambda w: w - mp.exp(w)
            pts = [-110, -20, -4, 0, 2, 6]
        else:
            dens = inverse_gamma_log_prob
            x_of = lambda w: b0 * mp.exp(-w)
            lw = lambda w: a0 * w - mp.exp(w) - mp.loggamma(a0)
            c = mp.log(a0)
            if a0 >= 1:
                width = 1 / mp.sqrt(a0)
                pts = [c + width * z for z in (-40, -8, -2, 0, 2, 8, 40)]
            else:
                pts = [-130 / a0, -20 / a0, -2 / a0, 0, 2, 6]
        # ln p_x(x(w)) = ln p_w(w) - ln |dx/dw|: the density of x from w's
        lq = lambda w: dens(a0, b0, x_of(w))
        if kind.endswith("entropy"):
            f = lambda w: -mp.exp(lw(w)) * lq(w)
        else:
            lp = lambda w: dens(args[2], args[3], x_of(w))
            f = lambda w: mp.exp(lw(w)) * (lq(w) - lp(w))
        return mp.quad(f, pts)
    if kind == "normal_laplace_kl":
        mq, sq, mp_, sp = args
        normal = lambda t: -t ** 2 / 2 - mp.log(2 * mp.pi) / 2
        laplace = lambda x: -mp.log(2 * sp) - abs(x - mp_) / sp
        # over t with x = mq + sq t, broken at the Laplace's kink
        f = lambda t: mp.exp(normal(t)) * (normal(t) - mp.log(sq) - laplace(mq + sq * t))
        kink = (mp_ - mq) / sq
        return mp.quad(f, [-mp.inf] + sorted({mp.mpf(-40), kink, mp.mpf(40)}) + [mp.inf])
    if kind == "kumaraswamy_entropy":
        # over u = P(X <= x): 1 - x^a = (1 - u)^(1/b), and the log-density
        # written in u keeps its digits at both ends
        a0, b0 = args
        l1m = lambda u: mp.log1p(-u)
        lq = lambda u: (mp.log(a0) + mp.log(b0) + (a0 - 1) / a0 * mp.log(-mp.expm1(l1m(u) / b0))
                        + (b0 - 1) / b0 * l1m(u))
        return mp.quad(lambda u: -lq(u), [0, 0.5, 1])
    if kind in ("pareto_entropy", "pareto_kl"):
        # over w = α ln(x / m), a standard exponential under q (density e^-w)
        a0, m0 = args[0], args[1]
        x_of = lambda w: m0 * mp.exp(w / a0)
        lq = lambda w: pareto_log_prob(a0, m0, x_of(w))
        if kind == "pareto_entropy":
            f = lambda w: -mp.exp(-w) * lq(w)
        else:
            f = lambda w: mp.exp(-w) * (lq(w) - pareto_log_prob(args[2], args[3], x_of(w)))
        return mp.quad(f, [0, 1, 4, 16, 64, 240])
    if kind in ("geometric_entropy", "geometric_kl"):
        if any(abs(a) > 5 for a in args):
            return None
        lq = lambda k: geometric_log_prob(args[0], k)
        if kind == "geometric_entropy":
            return mp.nsum(lambda k: -mp.exp(lq(k)) * lq(k), [0, mp.inf])
        lp = lambda k: geometric_log_prob(args[1], k)
        return mp.nsum(lambda k: mp.exp(lq(k)) * (lq(k) - lp(k)), [0, mp.inf])
    if kind.startswith("half_"):
        lq = {"half_cauchy": half_cauchy_log_prob, "half_normal": half_normal_log_prob}[
            kind.rsplit("_", 1)[0]]
        if kind.endswith("entropy"):
            f = lambda x: -mp.exp(lq(args[0], x)) * lq(args[0], x)
        else:
            f = lambda x: mp.exp(lq(args[0], x)) * (lq(args[0], x) - lq(args[1], x))
        return mp.quad(f, [0, args[0], mp.inf])
    return None


NUMERIC = {
    "cauchy_log_prob": (cauchy_log_prob, ["loc", "scale", "x"], [
        (0.0, 1.0, 0.5),
        (1.0, 2.0, 1.0),
        (-3.0, 0.01, 5.0),
        (0.0, 1.0, 1e20),
        (0.0, 1.0, -1e200),
        (2.0, 1e3, -7.0),
        (0.5, 3.0, 0.5000001),
        (1e10, 1e-5, 1e10 + 1.0),
    ]),
    "cauchy_entropy": (cauchy_entropy, ["scale"], [(1.0,), (1e-3,), (37.0,), (1e10,)]),
    "cauchy_kl": (cauchy_kl, ["loc_q", "scale_q", "loc_p", "scale_p"], [
        (0.0, 1.0, 1.0, 2.0),
        (-3.0, 0.1, 2.0, 5.0),
        (0.5, 0.5, 0.5, 0.5),
        (1.0, 1.0, 1.0, 1.000001),
        (0.0, 1e-3, 10.0, 1e3),
        (4.0, 2.0, -4.0, 2.0),
        (1e6, 1e6, -1e6, 3e6),
        (0.1, 7.0, 0.0, 0.2),
    ]),
    "half_cauchy_log_prob": (half_cauchy_log_prob, ["scale", "x"], [
        (1.0, 0.0), (1.0, 0.5), (2.0, 10.0), (0.01, 3.0), (1.0, 1e20), (5.0, 1e-8),
        (1e3, 2e3), (1e-3, 1e-3),
    ]),
    "half_cauchy_entropy": (half_cauchy_entropy, ["scale"], [(1.0,), (1e-3,), (37.0,), (1e10,)]),
    "half_cauchy_kl": (half_cauchy_kl, ["scale_q", "scale_p"], [
        (1.0, 2.0), (0.1, 5.0), (0.5, 0.5), (1.0, 1.000001), (1e-3, 1e3), (3.0, 0.2),
        (1e6, 3e6), (7.0, 0.07),
    ]),
    "half_normal_log_prob": (half_normal_log_prob, ["scale", "x"], [
        (1.0, 0.0), (1.0, 0.5), (2.0, 10.0), (0.01, 0.3), (1.0, 30.0), (5.0, 1e-8),
        (1e3, 2e3), (1e-3, 1e-3),
    ]),
    "half_normal_entropy": (half_normal_entropy, ["scale"], [(1.0,), (1e-3,), (37.0,), (1e10,)]),
    "negative_binomial_log_prob": (negative_binomial_log_prob, ["total_count", "logits", "k"], [
        (2.0, 0.0, 1.0),
        (5.5, -1.2, 0.0),
        (0.3, 2.0, 7.0),
        (100.0, 0.5, 160.0),
        (1e4, -3.0, 500.0),
        (1e6, 0.0, 1e6),
        (1e7, 0.1, 1.1e7),
        (0.01, -5.0, 0.0),
        (3.0, 20.0, 1e9),
        (50.0, -30.0, 2.0),
        (1e10, 0.0, 1e10),
        (2.5, 25.0, 1.8e11),
        (1e12, -0.5, 6e11),
        (40.0, 0.3, 1.0),
        # k = 0 at a tiny success probability: ln P(0) = -r softplus(l), far below the
        # rounding of ln Γ(k + r) - ln Γ(r) - ln Γ(k + 1) taken as separate terms
        (0.01, -35.0, 0.0),
        (0.6, -22.0, 0.0),
        (1e6, -30.0, 0.0),
    ]),
    "binomial_log_prob": (binomial_log_prob, ["total_count", "logits", "k"], [
        (4.0, 0.0, 2.0),
        (10.0, 0.3, 0.0),
        (10.0, 0.3, 10.0),
        (1.0, -2.0, 1.0),
        (1e6, 0.2, 5.5e5),
        (1e3, -8.0, 3.0),
        (50.0, 30.0, 50.0),
        (50.0, 30.0, 49.0),
        (0.0, 1.5, 0.0),
        (1e7, -0.1, 4.7e6),
        (1e12, 0.0, 5e11),
        (1e10, -3.0, 4.7e8),
        (1e15, 1.0, 7.31e14),
        (33.0, 2.0, 32.0),
        (1e9, 5.0, 1e9 - 3.0),
        # the ends at a tiny failure or success probability: the slope in n at k = 0 is
        # -softplus(l) alone, the ln C(n, k) terms' slopes cancelling exactly
        (2.0, -21.0, 0.0),
        (10.0, -31.0, 0.0),
        (1e6, 33.0, 1e6),
    ]),
    "half_normal_kl": (half_normal_kl, ["scale_q", "scale_p"], [
        (1.0, 2.0), (0.1, 5.0), (0.5, 0.5), (1.0, 1.000001), (1e-3, 1e3), (3.0, 0.2),
        (1e6, 3e6), (7.0, 0.07),
    ]),
    "gumbel_log_prob": (gumbel_log_prob, ["loc", "scale", "x"], [
        (0.0, 1.0, 0.5),
        (1.0, 2.0, 1.0),
        (-3.0, 0.01, -3.05),
        (0.0, 1.0, -30.0),
        (0.0, 1.0, -700.0),
        (0.0, 1.0, 700.0),
        (2.0, 1e3, -7.0),
        (1e10, 1e-5, 1e10 + 1.0),
    ]),
    "gumbel_entropy": (gumbel_entropy, ["scale"], [(1.0,), (1e-3,), (37.0,), (1e10,)]),
    "gumbel_kl": (gumbel_kl, ["loc_q", "scale_q", "loc_p", "scale_p"], [
        (0.0, 1.0, 1.0, 2.0),
        (-3.0, 0.1, 2.0, 5.0),
        (0.5, 0.5, 0.5, 0.5),
        (1.0, 1.0, 1.0, 1.000001),
        (0.0, 0.3, 1.0, 0.2),
        (4.0, 2.0, -4.0, 2.0),
        (1e6, 1e6, -1e6, 3e6),
        (0.1, 7.0, 0.0, 0.5),
    ]),
    "weibull_log_prob": (weibull_log_prob, ["concentration", "scale", "x"], [
        (1.0, 2.0, 3.0),
        (0.5, 1.0, 0.01),
        (2.0, 1.0, 1.0),
        (5.0, 3.0, 2.9),
        (1e3, 1.0, 1.001),
        (1e6, 2.0, 2.000001),
        (0.1, 1e3, 1e-20),
        (50.0, 1.0, 20.0),
        (0.7, 1e-3, 1e5),
    ]),
    "weibull_entropy": (weibull_entropy, ["concentration", "scale"], [
        (1.0, 1.0), (0.5, 2.0), (10.0, 0.1), (1e3, 1.0), (0.05, 5.0),
    ]),
    "weibull_kl": (weibull_kl, ["concentration_q", "scale_q", "concentration_p", "scale_p"], [
        (1.0, 1.0, 2.0, 3.0),
        (0.5, 2.0, 1.5, 1.0),
        (2.0, 1.0, 2.0, 1.0),
        (10.0, 1.0, 10.00001, 1.0),
        (3.0, 1.0, 0.5, 10.0),
        (1e3, 1.0, 900.0, 1.001),
        (0.2, 5.0, 0.3, 4.0),
    ]),
    "weibull_mean": (weibull_mean, ["concentration", "scale"], [
        (1.0, 2.0), (0.5, 1.0), (1e3, 1.0), (0.1, 1.0), (3.0, 1e-3),
    ]),
    "weibull_variance": (weibull_variance, ["concentration", "scale"], [
        (1.0, 2.0), (0.5, 1.0), (2.0, 1.0), (19.0, 1.0), (21.0, 1.0), (100.0, 3.0),
        (1e4, 1.0), (1e7, 1.0), (1e150, 1e300),
    ]),
    "normal_laplace_kl": (normal_laplace_kl, ["loc_q", "scale_q", "loc_p", "scale_p"], [
        (0.0, 1.0, 0.0, 1.0),
        (0.3, 0.5, -0.2, 2.0),
        (-3.0, 0.1, 1.0, 0.7),
        (1e-3, 1e-3, 0.0, 1e-2),
        (5.0, 4.0, 5.0, 0.25),
        (1e3, 1.0, -1e3, 10.0),
        (0.2, 30.0, 0.1, 0.05),
    ]),
    "pareto_log_prob": (pareto_log_prob, ["concentration", "scale", "x"], [
        (3.0, 2.0, 4.0),
        (0.5, 1.0, 1.0),
        (1.0, 1.0, 1e10),
        (1e3, 1.0, 1.0001),
        (2.5, 1e-3, 7.0),
        (0.1, 5.0, 1e200),
        (50.0, 2.0, 2.5),
        (1e-3, 1.0, 10.0),
    ]),
    "pareto_entropy": (pareto_entropy, ["concentration", "scale"], [
        (3.0, 2.0), (0.5, 1.0), (1e3, 1e-3), (1e-2, 10.0), (1.0, 1.0),
    ]),
    "pareto_kl": (pareto_kl, ["concentration_q", "scale_q", "concentration_p", "scale_p"], [
        (3.0, 2.0, 1.0, 1.0),
        (1.5, 2.0, 1.5, 2.0),
        (2.0, 5.0, 2.00001, 4.0),
        (4.0, 1.0, 4.05, 1.0),
        (4.0, 1.0, 4.1, 1.0),
        (0.5, 1.0, 5.0, 0.1),
        (10.0, 1e3, 0.1, 1.0),
        (1.0, 1.0, 1.0 + 1e-9, 1.0),
    ]),
    "pareto_mean": (pareto_mean, ["concentration", "scale"], [
        (3.0, 2.0), (1.5, 1.0), (1.0000001, 1.0), (1e3, 5.0), (7.0, 1e-3),
    ]),
    "pareto_variance": (pareto_variance, ["concentration", "scale"], [
        (3.0, 2.0), (2.5, 1.0), (2.0000001, 1.0), (1e3, 5.0), (10.0, 1e-3),
        (2.0 + 2 ** -40, 1e-159),
    ]),
    "kumaraswamy_log_prob": (kumaraswamy_log_prob, ["concentration1", "concentration0", "x"], [
        (1.0, 3.0, 0.5),
        (2.0, 5.0, 0.3),
        (0.5, 0.5, 0.01),
        (0.5, 0.5, 0.999),
        (5.0, 2.0, 0.9999),
        (1e3, 1.0, 0.999),
        (0.1, 10.0, 1e-20),
        (3.0, 0.2, 0.7),
        (2.0, 2.0, 1.0 - 1e-12),
        # a tiny a: ∂a's terms of size 1/a cancel to a value near ln x (b + 1) / 2 + b / a
        (1e-21, 7e-28, 0.94),
        (7.7e-18, 4.5e-27, 0.094),
        (1.7e-29, 2.9e-14, 0.99938),
    ]),
    "kumaraswamy_entropy": (kumaraswamy_entropy, ["concentration1", "concentration0"], [
        (1.0, 1.0), (2.0, 5.0), (0.5, 0.5), (10.0, 0.3), (1e3, 1e3),
        # a small b: ψ(b + 1) + γ is about π² b / 6, which 1/a multiplies
        (8.6e-26, 1.16e-16), (1.7e-17, 1.5e-27), (2e-8, 1e-24),
        # (and 1/a² overflows where H / a² does not)
        (1e-160, 1e-30),
    ]),
    "kumaraswamy_mean": (kumaraswamy_mean, ["concentration1", "concentration0"], [
        (1.0, 3.0), (2.0, 5.0), (0.5, 0.5), (10.0, 0.3), (1e3, 1e3), (1e-2, 2.0), (3.0, 1e-3),
        (1e7, 0.5),
    ]),
    "kumaraswamy_variance": (kumaraswamy_variance, ["concentration1", "concentration0"], [
        (1.0, 3.0), (2.0, 5.0), (0.5, 0.5), (10.0, 0.3), (100.0, 100.0), (1e-2, 2.0),
        (3.0, 1e-3), (1e4, 2.0), (1.5e5, 1.5), (2.5e5, 0.2), (1e7, 0.5), (1e10, 3.0),
        (1e15, 2.0),
    ]),
    "inverse_gamma_log_prob": (inverse_gamma_log_prob, ["concentration", "scale", "x"], [
        (3.0, 2.0, 1.0),
        (0.5, 1.0, 0.1),
        (1e3, 1e3, 1.0),
        (1e6, 1e6, 1.001),
        (20.0, 19.0, 1.0),
        (2.0, 1.0, 1e-150),
        (0.1, 1e-300, 1e30),
        (5.0, 3.0, 1e20),
    ]),
    "inverse_gamma_entropy": (inverse_gamma_entropy, ["concentration", "scale"], [
        (1.0, 1.0), (3.0, 2.0), (1e4, 1.0), (0.5, 5.0),
    ]),
    "inverse_gamma_kl": (inverse_gamma_kl, ["concentration_q", "scale_q", "concentration_p",
                                            "scale_p"], [
        (2.0, 1.0, 3.0, 2.0),
        (1e3, 1e3, 1e3, 1000.001),
        (0.5, 0.1, 2.0, 3.0),
        (1.0, 1.0, 1.0, 1.0),
        (40.0, 2.0, 5.0, 0.5),
    ]),
    "geometric_log_prob": (geometric_log_prob, ["logits", "k"], [
        (0.0, 2.0), (-3.0, 10.0), (5.0, 0.0), (-30.0, 1e12), (20.0, 3.0), (-1e3, 5.0),
    ]),
    "geometric_entropy": (geometric_entropy, ["logits"], [
        (0.0,), (-3.0,), (5.0,), (-40.0,), (40.0,), (-700.0,),
    ]),
    "geometric_kl": (geometric_kl, ["logits_q", "logits_p"], [
        (0.0, 1.0), (-3.0, 2.0), (5.0, 5.0), (1.0, 1.000001), (-40.0, -38.0), (30.0, -2.0),
        (-700.0, -690.0), (2.0, -1.5),
    ]),
    "von_mises_log_prob": (von_mises_log_prob, ["loc", "concentration", "x"], [
        (0.0, 1.0, 0.5),
        (0.5, 2.0, 1.0 + 2 * math.pi),
        (-1.0, 1e-3, 2.5),
        (0.3, 30.0, 0.31),
        (0.0, 1e3, 0.05),
        (1.0, 1e6, 1.0 + 1e-4),
        (2.0, 7.0, -3.0),
    ]),
    "von_mises_entropy": (von_mises_entropy, ["concentration"], [
        (1e-3,), (0.5,), (2.0,), (24.0,), (26.0,), (100.0,), (1e5,),
    ]),
    "von_mises_variance": (von_mises_variance, ["concentration"], [
        (1e-3,), (0.5,), (2.0,), (24.0,), (26.0,), (100.0,), (1e5,),
    ]),
    "von_mises_kl": (von_mises_kl, ["loc_q", "concentration_q", "loc_p", "concentration_p"], [
        (0.0, 1.0, 0.5, 2.0),
        (0.3, 30.0, -0.2, 5.0),
        (1.0, 0.01, -2.0, 0.5),
        (0.0, 100.0, 0.1, 100.0),
        (2.0, 3.0, 2.0, 0.2),
        (-1.0, 1e3, 3.0, 1e-2),
    ]),
}

# after the functions it names: KL(Kumaraswamy || Beta), whose E[ln(1 - x)] is a quadrature,
# checked here against the series -Σ_m b B(1 + m/a, b) / m (summed by mpmath's extrapolation)
KINDS["kumaraswamy_beta_kl"] = (kumaraswamy_beta_kl, ["concentration1_q", "concentration0_q",
                                                      "concentration1_p", "concentration0_p"], [
    (2.0, 3.0, 1.0, 5.0),
    (0.5, 0.5, 1.0, 1.0),
    (1.0, 1.0, 2.0, 2.0),
    (5.0, 0.1, 1.0, 3.0),
    (0.1, 2.0, 0.5, 0.5),
    (30.0, 30.0, 20.0, 40.0),
    (1e3, 0.5, 3.0, 0.7),
    (0.05, 0.05, 1.0, 1.0),
    (3.0, 500.0, 2.0, 50.0),
    (100.0, 0.01, 1.0, 1.0),
    (0.02, 1.0, 1.0, 10.0),
    (0.01, 100.0, 1.0, 3.0),
    # a small b, where E[ln(1 - x)] is about -1/b and the KL's terms of that size cancel
    (1.0, 1e-8, 1.0, 1e-8),
    (1.0, 1e-8, 1.0, 1.1e-8),
    (0.7, 1e-7, 0.7, 2e-7),
    (3.0, 1e-5, 2.0, 2e-5),
    (0.5, 1e-8, 0.3, 2e-8),
    # E[ln(1 - x)] far smaller than 1/b (x tiny), beside a large β: the integral itself
    (0.005, 5.0, 1.0, 1e12),
    (0.01, 2.0, 0.5, 1e15),
])


def check_kumaraswamy_beta_derivatives(args, grads):
    """The derivatives of KL(Kumaraswamy || Beta) against central differences of its value (steps
    of 10^-12 relative, the value's quadrature good to 10^-45: 10^-20 or better)."""
    def value(a, b, al, be):
        l = kumaraswamy_log_complement(a, b, parts_wanted=(0,))[0]
        h = mp.digamma(b + 1) + EULER
        return (mp.log(a * b) - (b - 1) / b - h * (a - al) / a - (be - 1) * l
                + mp.log(mp.beta(al, be)))
    for i, g in enumerate(grads):
        step = abs(args[i]) * mp.mpf(10) ** -12
        up, down = list(args), list(args)
        up[i] += step
        down[i] -= step
        numeric = (value(*up) - value(*down)) / (2 * step)
        assert abs(numeric - g) <= mp.mpf(10) ** -15 * max(abs(g), 1), (args, i, g, numeric)


def binomial_kl(n, lq, lp):
    """KL(Binomial(n, lq) || Binomial(n, lp)) as the sum over the counts of q(k) ln(q(k) / p(k)),
    with mpmath's derivatives of that sum in the logits; the total count's gradient is 0 (the
    divergence is defined only where the two counts are equal)."""
    def kl(a, b):
        total = mp.mpf(0)
        for k in range(int(n) + 1):
            lq_k = (mp.log(mp.binomial(n, k)) - k * mp.log1p(mp.exp(-a))
                    - (n - k) * mp.log1p(mp.exp(a)))
            lp_k = (mp.log(mp.binomial(n, k)) - k * mp.log1p(mp.exp(-b))
                    - (n - k) * mp.log1p(mp.exp(b)))
            total += mp.exp(lq_k) * (lq_k - lp_k)
        return total
    return kl(lq, lp), [mp.mpf(0), mp.diff(lambda a: kl(a, lp), lq), mp.diff(lambda b: kl(lq, b), lp)]


# KL(Beta || Beta) where q's concentrations are far below p's larger one, where p's are far
# below q's larger one and below 1, and where q's are far apart beside large ones of p: its
# terms, of 1e200 and more, cancel, so the derivatives are checked at 1000 digits
KINDS["beta_kl"] = (beta_kl, ["concentration1_q", "concentration0_q", "concentration1_p",
                              "concentration0_p"], [
    (1e-100, 1e-60, 1e-30, 1e30),
    (1e-60, 1e-100, 1e-10, 1e100),
    (1e-100, 1e-100, 1e-100, 1e10),
    (1e-10, 1.0, 1e10, 1e30),
    (0.5, 2.0, 3.0, 5000.0),
    (2.0, 3e3, 1e-30, 1e-100),
    (1e10, 1e-30, 1e-100, 1e-60),
    (3.0, 1e5, 0.1, 1e-30),
    (1e5, 1e-30, 1e100, 1e30),
])


KINDS["binomial_kl"] = (binomial_kl, ["total_count", "logits_q", "logits_p"], [
    (1.0, 0.3, -0.4),
    (5.0, 0.0, 2.0),
    (20.0, -3.0, 1.5),
    (50.0, 4.0, 3.9),
    (100.0, -0.7, -0.7000001),
    (7.0, 12.0, -12.0),
])

for row in KINDS["kumaraswamy_beta_kl"][2]:
    a, b = mp.mpf(row[0]), mp.mpf(row[1])
    if b >= 2:
        series = -mp.nsum(lambda m: b * mp.beta(1 + m / a, b) / m, [1, mp.inf])
        quad = kumaraswamy_log_complement(a, b)[0]
        assert abs(series - quad) <= mp.mpf(10) ** -25 * abs(series), (row, series, quad)

def check_derivatives(f, args, grads, relative_step=None):
    """Each analytic derivative against mpmath's numerical one, where the step fits (or with a step
    of `relative_step` times each argument, or times 1 where it is 0)."""
    for i, g in enumerate(grads):
        def along(t, i=i):
            shifted = list(args)
            shifted[i] = t
            return f(*shifted)[0]
        step = {}
        if relative_step is not None:
            step = {"h": (abs(args[i]) if args[i] != 0 else 1) * relative_step}
        numeric = mp.diff(along, args[i], **step)
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
        single = {
            "cauchy_log_prob": lambda: tfd.Cauchy(a[0], a[1]).log_prob(a[2]),
            "cauchy_entropy": lambda: tfd.Cauchy(np.float64(0), a[0]).entropy(),
            "half_cauchy_log_prob": lambda: tfd.HalfCauchy(np.float64(0), a[0]).log_prob(a[1]),
            "half_cauchy_entropy": lambda: tfd.HalfCauchy(np.float64(0), a[0]).entropy(),
            "half_normal_log_prob": lambda: tfd.HalfNormal(a[0]).log_prob(a[1]),
            "half_normal_entropy": lambda: tfd.HalfNormal(a[0]).entropy(),
            "half_normal_kl": lambda: tfd.kl_divergence(tfd.HalfNormal(a[0]), tfd.HalfNormal(a[1])),
            "binomial_log_prob": lambda: tfd.Binomial(a[0], logits=a[1]).log_prob(a[2]),
            "negative_binomial_log_prob":
                lambda: tfd.NegativeBinomial(a[0], logits=a[1]).log_prob(a[2]),
            "gumbel_log_prob": lambda: tfd.Gumbel(a[0], a[1]).log_prob(a[2]),
            "gumbel_entropy": lambda: tfd.Gumbel(np.float64(0), a[0]).entropy(),
            "gumbel_kl": lambda: tfd.kl_divergence(tfd.Gumbel(a[0], a[1]), tfd.Gumbel(a[2], a[3])),
            "weibull_log_prob": lambda: tfd.Weibull(a[0], a[1]).log_prob(a[2]),
            "weibull_entropy": lambda: tfd.Weibull(a[0], a[1]).entropy(),
            "weibull_kl":
                lambda: tfd.kl_divergence(tfd.Weibull(a[0], a[1]), tfd.Weibull(a[2], a[3])),
            "weibull_mean": lambda: tfd.Weibull(a[0], a[1]).mean(),
            "weibull_variance": lambda: tfd.Weibull(a[0], a[1]).variance(),
            "inverse_gamma_log_prob": lambda: tfd.InverseGamma(a[0], a[1]).log_prob(a[2]),
            "inverse_gamma_entropy": lambda: tfd.InverseGamma(a[0], a[1]).entropy(),
            "inverse_gamma_kl": lambda: tfd.kl_divergence(tfd.InverseGamma(a[0], a[1]),
                                                          tfd.InverseGamma(a[2], a[3])),
            "kumaraswamy_log_prob": lambda: tfd.Kumaraswamy(a[0], a[1]).log_prob(a[2]),
            "kumaraswamy_entropy": lambda: tfd.Kumaraswamy(a[0], a[1]).entropy(),
            "kumaraswamy_mean": lambda: tfd.Kumaraswamy(a[0], a[1]).mean(),
            "kumaraswamy_variance": lambda: tfd.Kumaraswamy(a[0], a[1]).variance(),
            "student_t_log_prob": lambda: tfd.StudentT(a[0], a[1], a[2]).log_prob(a[3]),
            "pareto_log_prob": lambda: tfd.Pareto(a[0], a[1]).log_prob(a[2]),
            "pareto_entropy": lambda: tfd.Pareto(a[0], a[1]).entropy(),
            "pareto_mean": lambda: tfd.Pareto(a[0], a[1]).mean(),
            "pareto_variance": lambda: tfd.Pareto(a[0], a[1]).variance(),
            "von_mises_log_prob": lambda: tfd.VonMises(a[0], a[1]).log_prob(a[2]),
            "von_mises_entropy": lambda: tfd.VonMises(np.float64(0), a[0]).entropy(),
            "von_mises_variance": lambda: tfd.VonMises(np.float64(0), a[0]).variance(),
            "von_mises_kl": lambda: tfd.kl_divergence(tfd.VonMises(a[0], a[1]),
                                                      tfd.VonMises(a[2], a[3])),
            "geometric_log_prob": lambda: tfd.Geometric(logits=a[0]).log_prob(a[1]),
            "geometric_entropy": lambda: tfd.Geometric(logits=a[0]).entropy(),
            "geometric_kl": lambda: tfd.kl_divergence(tfd.Geometric(logits=a[0]),
                                                      tfd.Geometric(logits=a[1])),
        }
        if kind in single:
            return float(single[kind]())
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
        if kind == "kumaraswamy_beta_kl":
            check_kumaraswamy_beta_derivatives(args, grads)
        elif kind == "beta_kl":
            with mp.workdps(1000):
                check_derivatives(f, args, grads, mp.mpf(10) ** -100)
        elif kind == "student_t_log_prob":
            # (a difference quotient of values near 1e302 needs their 600 digits, and a step
            # relative to arguments up to 1e308)
            with mp.workdps(600):
                check_derivatives(f, args, grads, mp.mpf(10) ** -100)
        elif kind not in ("uniform_kl", "binomial_kl"):
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

for kind, (f, names, rows) in NUMERIC.items():
    print(kind, file=sys.stderr, flush=True)
    for row in rows:
        args = [mp.mpf(x) for x in row]
        value = f(*args)
        grads = []
        for i in range(len(args)):
            def along(t, i=i):
                shifted = list(args)
                shifted[i] = t
                return f(*shifted)
            # (a step relative to an argument near 0, which the default would
            # cross; digits enough for a term beside one of 1e150, whose
            # change the default 50 would not see)
            tiny = args[i] != 0 and abs(args[i]) < mp.mpf(10) ** -100
            # (and relative to one beyond 1e100, which an absolute step would not move)
            huge = abs(args[i]) > mp.mpf(10) ** 100
            step = {"h": abs(args[i]) * mp.mpf(10) ** -20} if tiny or huge else {}
            with mp.workdps(250 if tiny or abs(value) > 1e100 else mp.mp.dps):
                grads.append(+mp.diff(along, args[i], **step))
        quad = by_quadrature(kind, args)
        if quad is not None:
            assert abs(quad - value) <= mp.mpf(10) ** -15 * max(abs(value), 1), (kind, row, value, quad)
        case = {"kind": kind}
        case.update({name: x for name, x in zip(names, row)})
        case["value"] = float(value)
        case.update({f"grad_{name}": float(g) for name, g in zip(names, grads)})
        if tfp_value is not None:
            try:
                v = tfp_value(kind, row)
            except Exception:  # a case TFP cannot take
                v = None
            if v is not None:
                case["tfp_value"] = v if math.isfinite(v) else str(v)
        cases.append(case)



def von_mises_angle_slope(k, theta):
    """The implicit derivative of a von Mises draw at angle theta from the location, -(dF/dk) / p,
    with dF/dk = the integral from 0 to theta of (cos t - A) p(t), A = I1/I0."""
    a = mp.besseli(1, k) / mp.besseli(0, k)
    dens = lambda t: mp.exp(k * (mp.cos(t) - 1))
    w = 1 / mp.sqrt(k)
    pts = sorted({mp.mpf(0), theta} | {z * w for z in (0.5, 1, 2, 4, 8) if 0 < z * w < abs(theta)}
                 | {-z * w for z in (0.5, 1, 2, 4, 8) if -abs(theta) < -z * w < 0})
    # from 0 to theta (descending for a negative theta: the integral's sign follows)
    pts = sorted((x for x in pts if min(0, theta) <= x <= max(0, theta)), key=abs)
    d_f = mp.quad(lambda t: (mp.cos(t) - a) * dens(t), pts)
    return -d_f / dens(theta)


# implicit derivatives of von Mises draws, in the format of the families file's implicit cases
for loc, k, x in [(0.0, 0.01, 0.1), (0.0, 0.01, 3.1), (1.0, 0.5, 1.7), (0.0, 0.5, -2.1),
                  (0.0, 2.0, 0.35), (2.0, 2.0, -3.0), (0.0, 30.0, 0.09), (0.0, 30.0, -0.55),
                  (0.0, 30.0, 1.1), (0.0, 1e3, 0.0003), (0.5, 1e3, 0.55), (0.0, 1e3, 0.19),
                  (0.0, 1e5, 3e-5), (0.0, 1e5, 0.0095), (0.0, 1e5, 0.019), (3.0, 4.0, -3.0)]:
    m, kk, xx = mp.mpf(loc), mp.mpf(k), mp.mpf(x)
    theta = (xx - m + mp.pi) % (2 * mp.pi) - mp.pi
    cases.append({"kind": "von_mises_implicit_grad", "loc": loc, "concentration": k, "x": x,
                  "dx_dloc": 1.0, "dx_dconcentration": float(von_mises_angle_slope(kk, theta))})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpmath_reference.json")
with open(out, "w") as fh:
    json.dump({"source": "tests/data/mpmath_reference.py: mpmath " + mp.__version__ + ", 50 digits",
               "cases": cases}, fh, indent=1)
    fh.write("\n")
print(f"{len(cases)} cases -> {out}")
