"""Checks the output of `examples/parameter_grid.rs` against mpmath.

usage: python examples/parameter_grid.py grid.tsv [digits]

For every case it computes the value and its two derivatives from the textbook formulas at
`digits` significant digits (default 650: the divergences at 1e-300 cancel terms of size 1e600
to results of size 1e-300), and counts, by family, the results off by more than 1e-10 and 1e-6
relative, those not finite where the reference is in the range of f64, and those NaN where the
reference is beyond it; over the whole grid and over the cases whose parameters all lie in
[1e-10, 1e10]. A gradient is checked only where the value is in the range. References below the
smallest normal f64 are skipped. `--list` also prints every case counted. The Dirichlet divergences
take about half an hour, the rest about ten minutes: filter the file by family to check one.
Not part of the build or of CI; `docs/accuracy.md` has the figures.
"""
import collections
import re
import sys

from mpmath import inf, log, loggamma as lg, mp, mpf, pi, psi

MAX = mpf("1.7976931348623157e308")
TINY = mpf("2.2250738585072014e-308")


def reference(case, a, b):
    """(value, d/da, d/db) of a case, the derivatives in the distribution's two parameters."""
    dg, tg = (lambda x: psi(0, x)), (lambda x: psi(1, x))
    if case in ("Beta entropy", "Dirichlet entropy"):
        s = a + b
        value = lg(a) + lg(b) - lg(s) - (a - 1) * dg(a) - (b - 1) * dg(b) + (s - 2) * dg(s)
        return value, -(a - 1) * tg(a) + (s - 2) * tg(s), -(b - 1) * tg(b) + (s - 2) * tg(s)
    m = re.fullmatch(r"KL (Gamma|Beta)\(([^,]+),([^)]+)\)", case)
    if m:
        # (the f64 the name's digits denote, as the Rust side used)
        c, e = mpf(float(m.group(2))), mpf(float(m.group(3)))
        if m.group(1) == "Gamma":
            value = (a - c) * dg(a) - lg(a) + lg(c) + c * (log(b) - log(e)) + a * (e - b) / b
            return value, (a - c) * tg(a) + (e - b) / b, c / b - a * e / b**2
        s1, s2 = a + b, c + e
        value = lg(c) + lg(e) - lg(s2) - lg(a) - lg(b) + lg(s1)
        value += (a - c) * dg(a) + (b - e) * dg(b) + (s2 - s1) * dg(s1)
        return value, (a - c) * tg(a) - (s1 - s2) * tg(s1), (b - e) * tg(b) - (s1 - s2) * tg(s1)
    m = re.fullmatch(r"Dirichlet3 entropy\(([^)]+)\)", case)
    if m:
        # Dir(a, b, s)
        s = mpf(float(m.group(1)))
        s1 = a + b + s
        value = lg(a) + lg(b) + lg(s) - lg(s1) + (s1 - 3) * dg(s1)
        value -= (a - 1) * dg(a) + (b - 1) * dg(b) + (s - 1) * dg(s)
        return value, -(a - 1) * tg(a) + (s1 - 3) * tg(s1), -(b - 1) * tg(b) + (s1 - 3) * tg(s1)
    m = re.fullmatch(r"KL Dirichlet\(([^,]+),([^;]+);([^)]+)\)", case)
    if m:
        # Dir(a, b, s) against Dir(c, e, s)
        c, e, s = (mpf(float(m.group(i))) for i in (1, 2, 3))
        s1, s2 = a + b + s, c + e + s
        value = lg(s1) - lg(a) - lg(b) - lg(s2) + lg(c) + lg(e)
        value += (a - c) * (dg(a) - dg(s1)) + (b - e) * (dg(b) - dg(s1))
        shift = (a - c) + (b - e)
        return value, (a - c) * tg(a) - shift * tg(s1), (b - e) * tg(b) - shift * tg(s1)
    m = re.fullmatch(r"StudentT log_prob\(([^)]+)\)", case)
    if m:
        nu, scale = a, b
        z = mpf(float(m.group(1))) / scale
        q = 1 + z**2 / nu
        value = lg((nu + 1) / 2) - lg(nu / 2) - log(nu * pi) / 2 - log(scale) - (nu + 1) / 2 * log(q)
        d_nu = (dg((nu + 1) / 2) - dg(nu / 2) - 1 / nu - log(q)) / 2 + (nu + 1) / 2 * z**2 / nu**2 / q
        d_scale = -1 / scale + (nu + 1) * z**2 / (scale * (nu + z**2))
        return value, d_nu, d_scale
    raise ValueError(f"unknown case {case!r}")


def family(case):
    return case.split("(")[0].strip()


def parameters(case, a, b):
    m = re.search(r"KL \w+\(([^,]+),([^);]+)(?:;([^)]+))?\)", case)
    return [a, b] + ([float(x) for x in m.groups() if x is not None] if m else [])


def main(argv):
    path = argv[0]
    mp.dps = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 650
    listing = "--list" in argv
    counts = {"all": collections.Counter(), "in [1e-10, 1e10]": collections.Counter()}
    cases = 0
    for line in open(path):
        case, a, b, *rest = line.rstrip("\n").split("\t")
        a, b = float(a), float(b)
        if rest[0] == "error":
            print(f"{case} at ({a:e}, {b:e}): error {rest[1]}")
            continue
        cases += 1
        got = [float(x) for x in rest]
        want = reference(case, mpf(a), mpf(b))
        inside = all(1e-10 <= p <= 1e10 for p in parameters(case, a, b))
        for what, g, w in zip(("value", "d/da", "d/db"), got, want):
            if what != "value" and abs(want[0]) > MAX:
                continue
            if abs(w) > MAX:
                kind = "NaN where beyond the range" if g != g else None
            elif abs(w) < TINY:
                kind = None
            elif g != g or abs(g) == float("inf"):
                kind = "not finite where in the range"
            else:
                error = abs((mpf(g) - w) / w)
                kind = "off by more than 1e-6" if error > 1e-6 else ("off by 1e-10 to 1e-6" if error > 1e-10 else None)
            if kind is None:
                continue
            for scope in counts:
                if scope == "all" or inside:
                    counts[scope][(family(case), kind)] += 1
            if listing:
                print(f"{case} at ({a:e}, {b:e}) {what}: {g!r}, reference {mp.nstr(w, 17)}")
    print(f"{cases} cases")
    for scope, counter in counts.items():
        print(f"{scope}: {sum(counter.values())} results")
        for (fam, kind), n in sorted(counter.items()):
            print(f"  {fam:20s} {kind:32s} {n}")


if __name__ == "__main__":
    main(sys.argv[1:])
