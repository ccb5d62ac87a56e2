"""Random cases in the reference format, against mpmath: a sweep for what the fixed cases miss.

usage: python examples/reference_sweep.py [--near | --scaled] SEED PER LO HI OUT.json [KIND,KIND,...]

For each kind it draws PER cases with positive parameters log-uniform in [10^LO, 10^HI], real
ones either uniform in [-10, 10] or of such a size with either sign, values in the unit interval
spread over its middle and within 1e-8 of either end, and counts as whole numbers; it writes the
value and every derivative in the format of `tests/data/mpmath_reference.json`, so that

    cargo run --release --example tfp_reference -- OUT.json

checks bayesgrad against them. With `--near`, only the divergences between two members of
one family are drawn (the Dirichlet's over three categories among them), the second distribution's parameters those of the first each times
`1 ± 10^u`, `u` uniform in [-12, -1] (a scale the second may not exceed, Pareto's, times
`1 - 10^u`): divergences of nearly equal distributions, where a small value is the difference of
large terms (a prior and a posterior that start out equal). Such a divergence is ill-conditioned
(a relative change of one unit in the last place of a parameter can change it by far more), and
each case also gets `cond_value` and `cond_grad_NAME`, the relative condition number of each
quantity (`conditioning` below); `tfp_reference` then accepts an error of up to 8 units of 2⁻⁵²
times that number where it exceeds 1e-9 (what rounding the inputs alone can do). With
`--scaled`, the divergences of the families whose concentrations scale a spread without moving
its centre (Beta, Dirichlet over three categories, Gamma and inverse Gamma, whose rates scale
with them) are drawn with every parameter of the second distribution that of the first times
one factor `exp(±10^u)`, `u` uniform in [-12, 0.7]: at large concentrations the terms of size
`a ln a` cancel to a divergence of order 1 or less, also with condition numbers. Values come from the closed forms of
`tests/data/mpmath_reference.py` (and the textbook ones below for the families TFP's files
cover), computed at 120 significant digits; derivatives by mpmath's numerical differentiation at
that precision (plus the decimal exponent of the largest argument, so that terms of size `a ln
a` keep 120 digits) with a step of 1e-40 relative to the argument. Cases whose value or a derivative
is not finite or beyond 1e300 are dropped. At extreme parameters (LO, HI beyond ±12 or so)
recheck a failure at more digits before believing the reference. Not part of the build or of CI;
`docs/accuracy.md` has the figures.
"""
import json
import math
import os
import random
import sys

import mpmath as mp

USAGE = __doc__
HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = os.path.join(HERE, "..", "tests", "data", "mpmath_reference.py")
source = open(GENERATOR).read()
# the generator's formulas and kinds, without its TFP column or its output
# (its docstring replaces this module's `__doc__`, kept above as USAGE)
exec(source[:source.index("\ntry:\n")])

L, D = mp.loggamma, mp.digamma


def lbeta(a, b):
    return L(a) + L(b) - L(a + b)


def softplus_(x):
    return mp.log1p(mp.exp(x))


def normal_lp(m, s, x):
    z = (x - m) / s
    return -z * z / 2 - mp.log(s) - mp.log(2 * mp.pi) / 2


TEXTBOOK = {
    "gamma_log_prob": lambda a, b, x: a * mp.log(b) - L(a) + (a - 1) * mp.log(x) - b * x,
    "gamma_entropy": lambda a, b: a - mp.log(b) + L(a) + (1 - a) * D(a),
    "gamma_kl": lambda a1, b1, a2, b2: gamma_kl(a1, b1, a2, b2)[0],
    "beta_log_prob": lambda a, b, x: (a - 1) * mp.log(x) + (b - 1) * mp.log1p(-x) - lbeta(a, b),
    "beta_entropy": lambda a, b: (lbeta(a, b) - (a - 1) * D(a) - (b - 1) * D(b)
                                  + (a + b - 2) * D(a + b)),
    "beta_kl": lambda a1, b1, a2, b2: (lbeta(a2, b2) - lbeta(a1, b1) + (a1 - a2) * D(a1)
                                       + (b1 - b2) * D(b1) + (a2 - a1 + b2 - b1) * D(a1 + b1)),
    "student_t_log_prob": lambda df, m, s, x: (
        L((df + 1) / 2) - L(df / 2) - mp.log(df * mp.pi) / 2 - mp.log(s)
        - (df + 1) / 2 * mp.log1p(((x - m) / s) ** 2 / df)),
    "student_t_entropy": lambda df, s: (
        (df + 1) / 2 * (D((df + 1) / 2) - D(df / 2))
        + mp.log(mp.sqrt(df) * mp.beta(df / 2, mp.mpf(1) / 2)) + mp.log(s)),
    "laplace_log_prob": lambda m, s, x: -mp.log(2 * s) - abs(x - m) / s,
    "laplace_entropy": lambda s: 1 + mp.log(2 * s),
    "laplace_kl": lambda m1, s1, m2, s2: (mp.log(s2 / s1) + abs(m1 - m2) / s2
                                          + s1 / s2 * mp.exp(-abs(m1 - m2) / s1) - 1),
    "lognormal_log_prob": lambda m, s, x: normal_lp(m, s, mp.log(x)) - mp.log(x),
    "lognormal_kl": lambda m1, s1, m2, s2: normal_kl(m1, s1, m2, s2)[0],
    "logit_normal_log_prob": lambda m, s, x: (normal_lp(m, s, mp.log(x) - mp.log1p(-x))
                                              - mp.log(x) - mp.log1p(-x)),
    "exponential_log_prob": lambda r, x: mp.log(r) - r * x,
    "poisson_log_prob": lambda r, k: k * mp.log(r) - r - L(k + 1),
    "bernoulli_log_prob": lambda l, x: -(x * softplus_(-l) + (1 - x) * softplus_(l)),
    "bernoulli_entropy": lambda l: (softplus_(-l) / (1 + mp.exp(-l))
                                    + softplus_(l) / (1 + mp.exp(l))),
    "bernoulli_kl": lambda lq, lp: ((softplus_(-lp) - softplus_(-lq)) / (1 + mp.exp(-lq))
                                    + (softplus_(lp) - softplus_(lq)) / (1 + mp.exp(lq))),
    "lgamma": lambda x: L(x),
    "digamma": lambda x: D(x),
    "normal_log_prob": normal_lp,
    "normal_entropy": lambda s: mp.log(s) + (1 + mp.log(2 * mp.pi)) / 2,
    "normal_kl": lambda m1, s1, m2, s2: normal_kl(m1, s1, m2, s2)[0],
}


def dirichlet_kl(*c):
    """KL(Dir(a) || Dir(b)) of the concentrations `a` then `b`, flattened."""
    k = len(c) // 2
    a, b = c[:k], c[k:]
    a0, b0 = sum(a), sum(b)
    return (L(a0) - sum(L(x) for x in a) - L(b0) + sum(L(x) for x in b)
            + sum((x - y) * (D(x) - D(a0)) for x, y in zip(a, b)))


# entries whose arguments are vectors: the kind's function takes them flattened, the case gives
# each as a list (its derivatives and their condition numbers likewise)
VECTORS = {"dirichlet_kl": (dirichlet_kl, ["concentration_q", "concentration_p"], 3)}


def samplers(lo, hi):
    u = random.uniform

    def pos():
        return 10 ** u(lo, hi)

    def real():
        return random.choice([u(-10, 10), random.choice([-1, 1]) * pos()])

    def unit():
        m = random.random()
        return u(0, 1) if m < 0.4 else (10 ** u(-8, -0.5) if m < 0.7 else 1 - 10 ** u(-8, -0.5))

    def angle():
        return u(-math.pi, math.pi)

    def count():
        return float(random.choice([0, 1, 2, 5, 30, round(pos())]))

    def binomial():
        n = float(round(10 ** u(0, min(hi, 15))))
        return (n, real() if random.random() < 0.5 else u(-30, 30),
                float(random.choice([0, n, random.randint(0, int(min(n, 50))), round(u(0, n))])))

    def pareto_kl():
        sq = pos()
        return (pos(), sq, pos(), sq * 10 ** u(-4, 0))

    p, r = pos, real
    return {
        "poisson_kl": lambda: (p(), p()),
        "exponential_gamma_kl": lambda: (p(), p(), p()),
        "gamma_exponential_kl": lambda: (p(), p(), p()),
        "logit_normal_kl": lambda: (r(), p(), r(), p()),
        "cauchy_log_prob": lambda: (r(), p(), r()),
        "cauchy_entropy": lambda: (p(),),
        "cauchy_kl": lambda: (r(), p(), r(), p()),
        "half_cauchy_log_prob": lambda: (p(), p()),
        "half_cauchy_entropy": lambda: (p(),),
        "half_cauchy_kl": lambda: (p(), p()),
        "half_normal_log_prob": lambda: (p(), p()),
        "half_normal_entropy": lambda: (p(),),
        "half_normal_kl": lambda: (p(), p()),
        "negative_binomial_log_prob": lambda: (p(), r() if random.random() < 0.5 else u(-36, 36),
                                               count()),
        "binomial_log_prob": binomial,
        "gumbel_log_prob": lambda: (r(), p(), r()),
        "gumbel_entropy": lambda: (p(),),
        "gumbel_kl": lambda: (r(), p(), r(), p()),
        "weibull_log_prob": lambda: (p(), p(), p()),
        "weibull_entropy": lambda: (p(), p()),
        "weibull_kl": lambda: (p(), p(), p(), p()),
        "weibull_mean": lambda: (p(), p()),
        "weibull_variance": lambda: (p(), p()),
        "normal_laplace_kl": lambda: (r(), p(), r(), p()),
        "pareto_log_prob": lambda: (lambda c, s: (c, s, s * (1 + 10 ** u(-8, 3))))(p(), p()),
        "pareto_entropy": lambda: (p(), p()),
        "pareto_kl": pareto_kl,
        "pareto_mean": lambda: (1 + p(), p()),
        "pareto_variance": lambda: (2 + p(), p()),
        "kumaraswamy_log_prob": lambda: (p(), p(), unit()),
        "kumaraswamy_entropy": lambda: (p(), p()),
        "kumaraswamy_mean": lambda: (p(), p()),
        "kumaraswamy_variance": lambda: (p(), p()),
        "inverse_gamma_log_prob": lambda: (p(), p(), p()),
        "inverse_gamma_entropy": lambda: (p(), p()),
        "inverse_gamma_kl": lambda: (p(), p(), p(), p()),
        "geometric_log_prob": lambda: (r(), count()),
        "geometric_entropy": lambda: (r(),),
        "geometric_kl": lambda: (r(), r()),
        "von_mises_log_prob": lambda: (angle(), p(), angle()),
        "von_mises_entropy": lambda: (p(),),
        "von_mises_variance": lambda: (p(),),
        "von_mises_kl": lambda: (angle(), p(), angle(), p()),
        "gamma_log_prob": lambda: (p(), p(), p()),
        "gamma_entropy": lambda: (p(), p()),
        "gamma_kl": lambda: (p(), p(), p(), p()),
        "beta_log_prob": lambda: (p(), p(), unit()),
        "beta_entropy": lambda: (p(), p()),
        "beta_kl": lambda: (p(), p(), p(), p()),
        "student_t_log_prob": lambda: (p(), r(), p(), r()),
        "student_t_entropy": lambda: (p(), p()),
        "laplace_log_prob": lambda: (r(), p(), r()),
        "laplace_entropy": lambda: (p(),),
        "laplace_kl": lambda: (r(), p(), r(), p()),
        "lognormal_log_prob": lambda: (r(), p(), p()),
        "lognormal_kl": lambda: (r(), p(), r(), p()),
        "logit_normal_log_prob": lambda: (r(), p(), unit()),
        "exponential_log_prob": lambda: (p(), p()),
        "poisson_log_prob": lambda: (p(), count()),
        "bernoulli_log_prob": lambda: (r(), float(random.choice([0, 1]))),
        "bernoulli_entropy": lambda: (r(),),
        "bernoulli_kl": lambda: (r(), r()),
        "lgamma": lambda: (p(),),
        "digamma": lambda: (p(),),
        "normal_log_prob": lambda: (r(), p(), r()),
        "normal_entropy": lambda: (p(),),
        "normal_kl": lambda: (r(), p(), r(), p()),
        "dirichlet_kl": lambda: tuple(p() for _ in range(2 * VECTORS["dirichlet_kl"][2])),
    }


NAMES = {
    "gamma_log_prob": ["concentration", "rate", "x"],
    "gamma_entropy": ["concentration", "rate"],
    "gamma_kl": ["concentration_q", "rate_q", "concentration_p", "rate_p"],
    "beta_log_prob": ["concentration1", "concentration0", "x"],
    "beta_entropy": ["concentration1", "concentration0"],
    "beta_kl": ["concentration1_q", "concentration0_q", "concentration1_p", "concentration0_p"],
    "student_t_log_prob": ["df", "loc", "scale", "x"],
    "student_t_entropy": ["df", "scale"],
    "laplace_log_prob": ["loc", "scale", "x"],
    "laplace_entropy": ["scale"],
    "laplace_kl": ["loc_q", "scale_q", "loc_p", "scale_p"],
    "lognormal_log_prob": ["loc", "scale", "x"],
    "lognormal_kl": ["loc_q", "scale_q", "loc_p", "scale_p"],
    "logit_normal_log_prob": ["loc", "scale", "x"],
    "exponential_log_prob": ["rate", "x"],
    "poisson_log_prob": ["rate", "k"],
    "bernoulli_log_prob": ["logits", "x"],
    "bernoulli_entropy": ["logits"],
    "bernoulli_kl": ["logits_q", "logits_p"],
    "lgamma": ["x"],
    "digamma": ["x"],
    "normal_log_prob": ["loc", "scale", "x"],
    "normal_entropy": ["scale"],
    "normal_kl": ["loc_q", "scale_q", "loc_p", "scale_p"],
}


# the divergences between two members of one family, their arguments those of the first then the
# second in the same order
NEAR = ["poisson_kl", "logit_normal_kl", "cauchy_kl", "half_cauchy_kl", "half_normal_kl",
        "gumbel_kl", "weibull_kl", "pareto_kl", "inverse_gamma_kl", "geometric_kl",
        "von_mises_kl", "gamma_kl", "beta_kl", "laplace_kl", "lognormal_kl", "bernoulli_kl",
        "normal_kl", "dirichlet_kl"]


def nearby(kind, draw):
    """A draw of `kind` whose second distribution is the first, each parameter moved by a
    relative 10^u, u in [-12, -1]."""
    row = draw()
    half = len(row) // 2
    q = list(row[:half])
    p = [x * (1 + random.choice([-1, 1]) * 10 ** random.uniform(-12, -1)) for x in q]
    if kind == "pareto_kl":
        # (concentration, scale): the second scale at most the first
        p[1] = q[1] * (1 - 10 ** random.uniform(-12, -1))
    return tuple(q + p)


# the divergences whose second distribution is the first with every parameter scaled by one
# factor (the spread changes, the centre stays)
SCALED = ["beta_kl", "dirichlet_kl", "gamma_kl", "inverse_gamma_kl"]


def scaled(draw):
    """A draw whose second distribution is the first with every parameter times `exp(±10^u)`,
    u in [-12, 0.7]."""
    row = draw()
    q = list(row[:len(row) // 2])
    c = math.exp(random.choice([-1, 1]) * 10 ** random.uniform(-12, 0.7))
    return tuple(q + [x * c for x in q])


def step(x, digits):
    """A step for numerical differentiation at `x`: 10^-digits relative (absolute at 0)."""
    return (abs(x) if x != 0 else 1) * mp.mpf(10) ** -digits


def conditioning(f, args, value, grads):
    """The relative condition numbers of the value and of each derivative: `Σ_j |x_j ∂_j q| / |q|`
    for each quantity `q`, the relative change that relative changes of one unit in every argument
    can make (a result computed from inputs perturbed by their rounding errors is that far off).
    Second derivatives by differentiating the first ones, with a step of 1e-25 relative. `None`
    where the quantity is 0 (and left out of the case where it is not finite as a float)."""
    def grad(i, point):
        def along(t):
            shifted = list(point)
            shifted[i] = t
            return f(*shifted)
        return mp.diff(along, point[i], h=step(point[i], 40))

    conds = [sum(abs(x * g) for x, g in zip(args, grads)) / abs(value) if value != 0 else None]
    for i, g in enumerate(grads):
        total = 0
        for j, x in enumerate(args):
            def shifted_grad(t, j=j):
                point = list(args)
                point[j] = t
                return grad(i, point)
            total += abs(x * mp.diff(shifted_grad, x, h=step(x, 25)))
        conds.append(total / abs(g) if g != 0 else None)
    return conds


def formula(kind):
    """The value function of a kind and its argument names."""
    if kind in VECTORS:
        f, names, _ = VECTORS[kind]
        return f, names
    if kind in TEXTBOOK:
        return TEXTBOOK[kind], NAMES[kind]
    if kind in KINDS:
        f, names, _ = KINDS[kind]
        return (lambda *a: f(*a)[0]), names
    f, names, _ = NUMERIC[kind]
    return f, names


def grouped(kind, names, numbers):
    """The entries of a case: one number per name, or for a kind with vector arguments, each name
    a list of as many of them."""
    numbers = [None if x is None else float(x) for x in numbers]
    if kind not in VECTORS:
        return dict(zip(names, numbers))
    k = VECTORS[kind][2]
    return {n: numbers[i * k:(i + 1) * k] for i, n in enumerate(names)}


def usable(c):
    """Whether a condition number (or each of a list of them) is known and finite."""
    items = c if isinstance(c, list) else [c]
    return all(x is not None and math.isfinite(x) for x in items)


def main():
    argv = [a for a in sys.argv[1:] if a not in ("--near", "--scaled")]
    mode = next((a for a in sys.argv[1:] if a in ("--near", "--scaled")), None)
    near = mode is not None
    if len(argv) < 5:
        sys.exit(USAGE)
    seed, per, lo, hi, out = int(argv[0]), int(argv[1]), float(argv[2]), float(argv[3]), argv[4]
    random.seed(seed)
    kinds = samplers(lo, hi)
    if mode == "--near":
        kinds = {k: (lambda k=k, d=kinds[k]: nearby(k, d)) for k in NEAR}
    elif mode == "--scaled":
        kinds = {k: (lambda d=kinds[k]: scaled(d)) for k in SCALED}
    else:
        del kinds["dirichlet_kl"]
    wanted = argv[5].split(",") if len(argv) > 5 else list(kinds)
    unknown = [k for k in wanted if k not in kinds]
    if unknown:
        sys.exit(f"unknown kinds: {', '.join(unknown)}")
    cases = []
    for kind in wanted:
        f, names = formula(kind)
        print(kind, file=sys.stderr, flush=True)
        for _ in range(per):
            row = tuple(float(x) for x in kinds[kind]())
            digits = 120 + max(0, int(math.log10(max(abs(x) for x in row) or 1)))
            try:
                with mp.workdps(digits):
                    args = [mp.mpf(x) for x in row]
                    value = f(*args)
                    grads = []
                    for i, x in enumerate(args):
                        def along(t, i=i):
                            shifted = list(args)
                            shifted[i] = t
                            return f(*shifted)
                        grads.append(+mp.diff(along, x, h=step(x, 40)))
                    if near:
                        conds = conditioning(f, args, value, grads)
            except (ValueError, ZeroDivisionError, mp.libmp.libhyper.NoConvergence) as e:
                print(f"  skipped {row}: {e}", file=sys.stderr)
                continue
            if not all(mp.isfinite(v) and abs(v) < 1e300 for v in [value] + grads):
                continue
            case = {"kind": kind}
            case.update(grouped(kind, names, row))
            case["value"] = float(value)
            case.update(grouped(kind, [f"grad_{n}" for n in names], [float(g) for g in grads]))
            if near:
                case["cond_value"] = None if conds[0] is None else float(conds[0])
                keys = [f"cond_grad_{n}" for n in names]
                case.update(grouped(kind, keys, conds[1:]))
                # (a condition number that is not known is left out, with its quantity's list)
                case = {k: v for k, v in case.items()
                        if not k.startswith("cond_") or usable(v)}
            cases.append(case)
    with open(out, "w") as f:
        json.dump({"source": f"examples/reference_sweep.py {' '.join(sys.argv[1:])}",
                   "cases": cases}, f)
    print(f"{len(cases)} cases -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
