"""The workloads the distribution and estimator features added, written the way a PyTorch user
would (eager, all cores), for ratios against `cargo run --release --example bench` measured in the
same minutes:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch bayesian-torch
    .venv-torch/bin/python examples/torch_bench_extra.py [sparse_vd|iwae|discrete|sampling|draws|all|gemm|survey|accuracy]
        [--flush-denormal] [--compile]

`--flush-denormal` turns on `torch.set_flush_denormal(True)` (subnormal numbers read and written as
zero), which changes the arithmetic but spares Intel CPUs their slow subnormal path. `--compile`
runs the loss of `sparse_vd`, `iwae` and `discrete`, and the draws of `sampling` and `draws`, under
`torch.compile` (forward and, through it, backward; the optimizer's update stays eager), as
`torch_bench.py --compile` does. Prints `<workload> ms_per_step=<median>` lines (sampling:
millions of draws per second with the gradient). Not part of the build or of CI.

- sparse_vd: the `mlp` shapes with sparse variational dropout layers written by hand (bayesian-torch
  has none): additive theta and log sigma^2, local reparameterization, Molchanov et al.'s KL.
- iwae: bayesian-torch's LinearReparameterization network, K = 8 forward passes (one weight sample
  each), the importance-weighted bound from the K log-likelihoods and log ratios.
- discrete: 128 rows of 10-category logits, 8 draws each, score function with the leave-one-out
  baseline (torch.distributions.Categorical).
- sampling: rsample and the implicit gradient of Gamma(2.5), Beta(2, 3), Dirichlet([1.5, 2, 0.7]).
- draws: rsample with the gradient of the one-uniform families (Exponential, Laplace, Gumbel,
  Uniform, Cauchy, HalfCauchy, Weibull, Pareto, Kumaraswamy), 1 000 000 float32 draws.
- gemm (not part of `all`): GFLOP/s of `torch.matmul` in float32 on the products of the `mlp`
  step, best of 25 as in `bench -- gemm` (the left operand of `x^T g` is a transposed view, as in
  autograd's weight gradient).
- survey (not part of `all`): the rows of `bench -- survey` that PyTorch has, on the same values:
  ops, log-densities, KL divergences and the Gamma entropy over 400 000 float32 values (`[400, 1000]`), each the
  forward pass and the backward of a (weighted) sum, every parameter trainable, the median of 15
  runs in nanoseconds per element. The logit-normal is a `TransformedDistribution` of a Normal
  through `SigmoidTransform` (PyTorch has no class of its name).
- accuracy (not part of `all`): the worst relative error of PyTorch's Gamma rsample derivative on
  the reference cases in tests/data/tfp_golden_families.json.
"""
import math
import os
import sys
import time

import numpy as np
import torch

torch.set_num_threads(os.cpu_count())
torch.distributions.Distribution.set_default_validate_args(False)
COMPILE = "--compile" in sys.argv


def compiled(f):
    return torch.compile(f) if COMPILE else f


def timeit(step, n):
    for _ in range(3):
        step()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return 1000 * float(np.median(ts))


class SparseVD(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.randn(i, o) * 0.05)
        self.log_sigma2 = torch.nn.Parameter(torch.full((i, o), -10.0))
        self.bias = torch.nn.Parameter(torch.zeros(o))

    def forward(self, x):
        mean = x @ self.theta
        var = (x * x) @ self.log_sigma2.exp()
        y = mean + (var + 1e-16).sqrt() * torch.randn_like(mean) + self.bias
        log_alpha = self.log_sigma2 - torch.log(self.theta ** 2 + 1e-16)
        k1, k2, k3 = 0.63576, 1.87320, 1.48695
        neg_kl = k1 * torch.sigmoid(k2 + k3 * log_alpha) - 0.5 * torch.nn.functional.softplus(-log_alpha) - k1
        return y, -neg_kl.sum()


def sparse_vd():
    l1, l2 = SparseVD(784, 512), SparseVD(512, 10)
    params = list(l1.parameters()) + list(l2.parameters())
    opt = torch.optim.Adam(params, 1e-3)
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))

    @compiled
    def loss_fn(x, y):
        h, kl1 = l1(x)
        o, kl2 = l2(torch.relu(h))
        return torch.nn.functional.cross_entropy(o, y) + (kl1 + kl2) / 60000.0

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        opt.step()

    return timeit(step, 60)


def iwae():
    from bayesian_torch.layers import LinearReparameterization

    K = 8
    l1, l2 = LinearReparameterization(784, 512), LinearReparameterization(512, 10)
    opt = torch.optim.Adam(list(l1.parameters()) + list(l2.parameters()), 1e-3)
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))

    @compiled
    def loss_fn(x, y):
        log_w = []
        for _ in range(K):
            h, kl1 = l1(x)
            o, kl2 = l2(torch.relu(h))
            ll = -torch.nn.functional.cross_entropy(o, y, reduction="sum")
            # bayesian-torch returns the analytic KL, not ln q(w) - ln p(w) at the sample; the
            # per-sample log ratio costs the same elementwise pass over the weights
            log_w.append(ll - (kl1 + kl2) * 128 / 60000.0)
        bound = torch.logsumexp(torch.stack(log_w), 0) - math.log(K)
        return -bound / 128

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        opt.step()

    return timeit(step, 30)


def discrete():
    logits = torch.nn.Parameter(torch.zeros(128, 10))
    opt = torch.optim.Adam([logits], 1e-2)
    K = 8

    @compiled
    def loss_fn():
        q = torch.distributions.Categorical(logits=logits)
        c = q.sample((K,))  # [K, 128]
        f = (c.float() / 9 - 0.499) ** 2
        baseline = (f.sum(0, keepdim=True) - f) / (K - 1)
        return ((f - baseline).detach() * q.log_prob(c)).mean(0).sum()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return timeit(step, 500)


def sampling():
    n = 100_000
    out = []
    f64 = torch.float64
    weights = torch.tensor([1.0, 2.0, 3.0], dtype=f64)
    # (name, the trainable parameter, the draws' reduced value from it)
    cases = [
        ("Gamma(2.5, 1)", lambda: torch.full((n,), 2.5, dtype=f64, requires_grad=True),
         lambda a: torch.distributions.Gamma(a, 1.0).rsample().sum()),
        ("Beta(2, 3)", lambda: torch.full((n,), 2.0, dtype=f64, requires_grad=True),
         lambda a: torch.distributions.Beta(a, torch.tensor(3.0, dtype=f64)).rsample().sum()),
        ("Dirichlet([1.5, 2, 0.7])", lambda: torch.tensor([1.5, 2.0, 0.7], dtype=f64).repeat(n // 3, 1).requires_grad_(),
         lambda c: (torch.distributions.Dirichlet(c).rsample() * weights).sum()),
    ]
    for name, parameter, draw in cases:
        draw = compiled(draw)

        def step():
            draw(parameter()).backward()
        ms = timeit(step, 20)
        out.append((name, n / (ms / 1000) / 1e6))
    return out


def draws():
    """Draws per second of rsample with the gradient of the one-uniform families, as `bench --
    draws` measures them: 1 000 000 float32 draws of single trainable parameters, then backward of
    their sum. The parameters are given in bayesgrad's order (Weibull and Pareto: concentration,
    then scale; torch takes the scale first)."""
    n = 1_000_000
    dist = torch.distributions
    p = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    cases = [
        ("Exponential(2)", lambda: dist.Exponential(p(2.0))),
        ("Laplace(0.5, 2)", lambda: dist.Laplace(p(0.5), p(2.0))),
        ("Gumbel(0.5, 2)", lambda: dist.Gumbel(p(0.5), p(2.0))),
        ("Uniform(0.5, 2)", lambda: dist.Uniform(p(0.5), p(2.0))),
        ("Cauchy(0.5, 2)", lambda: dist.Cauchy(p(0.5), p(2.0))),
        ("HalfCauchy(2)", lambda: dist.HalfCauchy(p(2.0))),
        ("Weibull(1.5, 2)", lambda: dist.Weibull(p(2.0), p(1.5))),
        ("Pareto(1.5, 2)", lambda: dist.Pareto(p(2.0), p(1.5))),
        ("Kumaraswamy(1.5, 2)", lambda: dist.Kumaraswamy(p(1.5), p(2.0))),
    ]
    out = []
    for name, make in cases:
        draw = compiled(lambda d: d.rsample((n,)).sum())

        def step():
            draw(make()).backward()
        ms = timeit(step, 20)
        out.append((name, n / (ms / 1000) / 1e6))
    return out


def gamma_grad_accuracy():
    """Worst relative error of PyTorch's Gamma rsample derivative (the
    `torch._standard_gamma_grad` its backward calls) against the reference
    cases `gamma_implicit_grad` of tests/data/tfp_golden_families.json
    (the derivative in the concentration at fixed CDF value)."""
    import json
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tfp_golden_families.json")
    worst = 0.0
    for c in json.load(open(path))["cases"]:
        if c["kind"] != "gamma_implicit_grad":
            continue
        a = torch.tensor([c["concentration"]], dtype=torch.float64)
        rate = c["rate"]
        # x = g / rate for a standard Gamma draw g, so dx/da = (dg/da) / rate
        g = torch.tensor([c["x"] * rate], dtype=torch.float64)
        d = torch._standard_gamma_grad(a, g).item() / rate
        worst = max(worst, abs(d - c["dx_dconcentration"]) / abs(c["dx_dconcentration"]))
    return worst


def gemm():
    """(name, GFLOP/s) of each `mlp` product and of the first layer's at a batch of 2048 and a
    width of 1024 (rows of `bench -- gemm`), best of 25 after 5 warm-up products."""
    products = [
        ("mlp x W1", 128, 784, 512, False),
        ("mlp x^T g (dW1)", 784, 128, 512, True),
        ("mlp h W2", 128, 512, 10, False),
        ("mlp h^T g (dW2)", 512, 128, 10, True),
        ("x W1, B 2048, w 1024", 2048, 784, 1024, False),
        ("x^T g, B 2048, w 1024", 784, 2048, 1024, True),
    ]
    out = []
    for name, m, k, n, transposed in products:
        a = torch.rand(k, m).t() if transposed else torch.rand(m, k)
        b = torch.rand(k, n)
        for _ in range(5):
            a @ b
        best = math.inf
        for _ in range(25):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out.append((f"{name:<22} {m:>6} x {k:>6} x {n:>5}", 2 * m * k * n / best / 1e9))
    return out


def survey():
    """(row, ns per element) for the rows of `bench -- survey`, with its values and its names."""
    d = torch.distributions
    n, rows, cols = 400_000, 400, 1000
    i = torch.arange(n)

    def of(values):
        return values.reshape(rows, cols)

    real = of(((i * 7) % 97).float() / 20.0 - 2.4)
    pos = of(0.2 + ((i * 7) % 97).float() / 50.0)
    unit = of(0.01 + ((i * 7) % 97).float() / 100.0)
    bits = of((i % 2).float())
    weights = ((i * 13) % 89).float() / 50.0 - 0.9
    out = []

    def time_row(name, f):
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out.append((name, float(np.median(ts)) * 1e9 / n))

    # a new leaf on the same storage, as `tape.var` takes a tensor without copying it
    def var(t):
        return t.detach().requires_grad_()

    # y = f(x) for a trainable x, then the backward of the sum of w y
    def unary(name, f):
        def run():
            y = f(var(real))
            (y * weights[: y.numel()].reshape(y.shape)).sum().backward()
        time_row(name, run)

    column = torch.arange(rows).float().reshape(rows, 1)
    unary("exp", torch.exp)
    unary("tanh", torch.tanh)
    unary("softplus", torch.nn.functional.softplus)
    unary("lgamma", lambda x: torch.lgamma(x.abs() + 1.0))
    unary("x + a column [400, 1]", lambda x: x + var(column))
    unary("log_softmax, last axis", lambda x: torch.log_softmax(x, 1))
    unary("logsumexp, last axis", lambda x: torch.logsumexp(x, 1, keepdim=True))
    unary("sum, last axis", lambda x: x.sum(1, keepdim=True))

    def logit_normal(loc, scale):
        return d.TransformedDistribution(d.Normal(loc, scale), [d.transforms.SigmoidTransform()])

    densities = [
        ("Normal", real, lambda p: d.Normal(p(real, 0.1), p(pos, 1.3))),
        ("Laplace", real, lambda p: d.Laplace(p(real, 0.1), p(pos, 1.3))),
        ("Gamma", pos, lambda p: d.Gamma(p(pos, 1.5), p(pos, 1.3))),
        ("Beta", unit, lambda p: d.Beta(p(pos, 1.5), p(pos, 1.3))),
        ("StudentT", real, lambda p: d.StudentT(p(pos, 3.0), p(real, 0.1), p(pos, 1.3))),
        ("Bernoulli", bits, lambda p: d.Bernoulli(logits=p(real, 0.3))),
        ("LogNormal", pos, lambda p: d.LogNormal(p(real, 0.1), p(pos, 1.3))),
        ("LogitNormal", unit, lambda p: logit_normal(p(real, 0.1), p(pos, 1.3))),
    ]
    # each case with parameters per value and single ones, all trainable
    def parameters(full):
        return lambda t, one: var(t) if full else torch.tensor(one, requires_grad=True)

    for name, x, build in densities:
        for full in (True, False):
            kind = "full" if full else "single"
            p = parameters(full)
            time_row(f"{name} log_prob, {kind} parameters", lambda: build(p).log_prob(x).sum().backward())
    # KL(q || p) of a posterior of full tensors against a prior
    divergences = [
        ("Normal", lambda: d.Normal(var(real), var(pos)), lambda p: d.Normal(p(real, 0.0), p(pos, 1.0))),
        ("Gamma", lambda: d.Gamma(var(pos), var(pos)), lambda p: d.Gamma(p(unit, 1.0), p(unit, 1.0))),
        ("Beta", lambda: d.Beta(var(pos), var(pos)), lambda p: d.Beta(p(unit, 1.0), p(unit, 1.0))),
        # a posterior after tens of observations: concentrations of 10 to 50
        ("Beta (q large)", lambda: d.Beta(var(8.0 + 20.0 * pos), var(8.0 + 10.0 * pos)),
         lambda p: d.Beta(p(unit, 1.0), p(unit, 1.0))),
        ("Bernoulli", lambda: d.Bernoulli(logits=var(real)), lambda p: d.Bernoulli(logits=p(pos, 0.0))),
    ]
    for name, q, prior in divergences:
        for full in (True, False):
            kind = "full" if full else "single"
            p = parameters(full)
            time_row(f"{name} KL, {kind} prior parameters", lambda: d.kl_divergence(q(), prior(p)).sum().backward())
    # the Gamma entropy of rates per value, the concentration per value or single
    for full in (True, False):
        kind = "full parameters" if full else "single concentration"
        p = parameters(full)
        time_row(f"Gamma entropy, {kind}", lambda: d.Gamma(p(pos, 1.5), var(pos)).entropy().sum().backward())
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    which = args[0] if args else "all"
    if "--flush-denormal" in sys.argv:
        torch.set_flush_denormal(True)
    for name, f in [("sparse_vd", sparse_vd), ("iwae", iwae), ("discrete", discrete)]:
        if which in (name, "all"):
            print(f"{name} ms_per_step={f():.4f}", flush=True)
    if which in ("sampling", "all"):
        for name, rate in sampling():
            print(f"sampling {name}: rsample with gradients {rate:.2f} M draws/s", flush=True)
    if which in ("draws", "all"):
        for name, rate in draws():
            print(f"sampling {name}: rsample with gradients {rate:.2f} M draws/s", flush=True)
    if which == "gemm":
        print("gemm: torch.matmul in float32, GFLOP/s, best of 25", flush=True)
        for name, gflops in gemm():
            print(f"{name}  {gflops:7.1f}", flush=True)
    if which == "survey":
        for name, ns in survey():
            print(f"survey {name:<38} {ns * 400_000 / 1e6:8.3f} ms  {ns:6.2f} ns/element", flush=True)
    if which == "accuracy":
        print(f"gamma rsample derivative: worst relative error {gamma_grad_accuracy():.3e}", flush=True)
