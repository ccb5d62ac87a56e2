"""Pairs bayesgrad's `bench` with the peer scripts, run by run, and reports the ratio of each pair.

usage: python examples/compare_peers.py [--pairs N] [--bench PATH] [--torch PY] [--tf PY] [--compile] [workload ...]
    workloads: mlp conv tiny sparse_vd iwae discrete sampling draws (default: all of them), survey

Each pair is one run of `bench <workload>` followed at once by one run of each peer on the same
workload (PyTorch eager through `torch_bench.py` or `torch_bench_extra.py`; TFP through
`tfp_bench.py` for mlp, conv, tiny, sampling and draws), so that both sides of a ratio see the machine
in the same state; a machine whose speed drifts from minute to minute moves both. For each
workload it prints the medians of each side and, per pair, the faster peer's time over
bayesgrad's (for sampling and draws, the rates the other way round: bayesgrad's draws per second
over the faster peer's), with the median, the smallest, and how many pairs reach 3. `draws` times
the one-uniform families (Exponential to Kumaraswamy) in float32, `sampling` the Gamma, Beta and
Dirichlet draws with their implicit gradients in float64.

`survey` (only when named) pairs `bench survey` with `torch_bench_extra.py survey`: every row
(ops, log-densities and KL divergences over 400 000 float32 values, forward and backward) in
nanoseconds per element, PyTorch eager's time over bayesgrad's per row (a row PyTorch has no
counterpart of, KL(Kumaraswamy || Beta), with bayesgrad's time alone).

`--compile` adds PyTorch under `torch.compile` as a third peer (the same scripts with `--compile`;
each run compiles the step, or loads it from torch's cache, in its untimed warm-up steps).

`--torch` and `--tf` are the Python interpreters of environments with PyTorch + bayesian-torch
and TensorFlow + TFP (defaults: `.venv-torch/bin/python`, `.venv-tf/bin/python`); a peer whose
interpreter is missing is skipped. Build the bench first: `cargo build --release --example bench`.
Not part of the build or of CI.
"""
import math
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOADS = ["mlp", "conv", "tiny", "sparse_vd", "iwae", "discrete", "sampling", "draws"]
# the rows of `bench survey`, as its output names them
SURVEY = []
SAMPLING = ["Gamma(2.5, 1)", "Beta(2, 3)", "Dirichlet([1.5, 2, 0.7])"]
# the rows of `bench draws`: the one-uniform families
DRAWS = [
    "Exponential(2)", "Laplace(0.5, 2)", "Gumbel(0.5, 2)", "Uniform(0.5, 2)", "Cauchy(0.5, 2)",
    "HalfCauchy(2)", "Weibull(1.5, 2)", "Pareto(1.5, 2)", "Kumaraswamy(1.5, 2)",
]
RATES = {"sampling": SAMPLING, "draws": DRAWS}


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def times(output, workload):
    """ms per step (or, for sampling, ms per million draws for each distribution)."""
    if workload in RATES:
        rates = re.findall(r"sampling (.+?): rsample with gradients ([0-9.]+) M draws/s", output)
        found = {name: 1000.0 / float(rate) for name, rate in rates}
        missing = [name for name in RATES[workload] if name not in found]
        if missing:
            raise SystemExit(f"no rate for {', '.join(missing)} in:\n{output}")
        return [found[name] for name in RATES[workload]]
    if workload == "survey":
        rows = re.findall(r"^survey (.+?) +[0-9.]+ ms +([0-9.]+) ns/element", output, re.M)
        found = {name: float(ns) for name, ns in rows}
        if not SURVEY:
            SURVEY.extend(found)
        if not found:
            raise SystemExit(f"no survey row in:\n{output}")
        # (NaN for a row the peer has no counterpart of, such as a divergence it lacks)
        return [found.get(name, math.nan) for name in SURVEY]
    m = re.search(rf"^{workload}[ :].*?([0-9]+\.[0-9]+)", output, re.M)
    if m is None:
        raise SystemExit(f"no figure for {workload} in:\n{output}")
    m = re.search(r"ms_per_step=([0-9.]+)", m.group(0)) or m
    return [float(m.group(1))]


def main(argv):
    pairs, bench = 5, os.path.join(ROOT, "target", "release", "examples", "bench")
    torch_py = os.path.join(ROOT, ".venv-torch", "bin", "python")
    tf_py = os.path.join(ROOT, ".venv-tf", "bin", "python")
    chosen, compile_too = [], False
    args = iter(argv)
    try:
        for a in args:
            if a == "--pairs":
                pairs = int(next(args))
            elif a == "--bench":
                bench = next(args)
            elif a == "--torch":
                torch_py = next(args)
            elif a == "--tf":
                tf_py = next(args)
            elif a == "--compile":
                compile_too = True
            elif a in WORKLOADS or a == "survey":
                chosen.append(a)
            else:
                raise SystemExit(f"unknown argument {a!r}\n{__doc__}")
    except (StopIteration, ValueError):
        raise SystemExit(f"{a} needs a value (a whole number for --pairs)\n{__doc__}")
    if pairs < 1 or not os.path.exists(bench):
        raise SystemExit(f"need --pairs >= 1 and a built bench at {bench}\n{__doc__}")
    for workload in chosen or WORKLOADS:
        peers = {}
        if os.path.exists(torch_py):
            script = "torch_bench.py" if workload in ("mlp", "conv", "tiny") else "torch_bench_extra.py"
            peers["PyTorch"] = [torch_py, os.path.join(HERE, script), workload]
            if compile_too:
                peers["torch.compile"] = peers["PyTorch"] + ["--compile"]
        if workload == "survey":
            peers.pop("torch.compile", None)
        if os.path.exists(tf_py) and workload in ("mlp", "conv", "tiny", "sampling", "draws"):
            peers["TFP"] = [tf_py, os.path.join(HERE, "tfp_bench.py"), workload]
        if not peers:
            print(f"{workload}: no peer interpreter found, skipped")
            continue
        ours, theirs, ratios = [], {p: [] for p in peers}, []
        for i in range(pairs):
            mine = times(run([bench, workload]), workload)
            other = {p: times(run(cmd), workload) for p, cmd in peers.items()}
            ours.append(mine)
            for p in peers:
                theirs[p].append(other[p])
            # the faster peer's time over ours, per figure
            ratios.append([min(other[p][k] for p in peers) / mine[k] for k in range(len(mine))])
            # each side's figures too (but the survey's dozens of rows), so that a
            # pair in which one side met a slower machine than the other shows as such
            sides = "; ".join(
                f"{p} " + ", ".join(f"{v:.4g}" for v in vs)
                for p, vs in [("bayesgrad", mine), *other.items()]
            )
            sides = f"  ({sides})" if workload != "survey" else ""
            print(
                f"  {workload} pair {i + 1}: " + ", ".join(f"{r:.2f}" for r in ratios[-1]) + sides,
                flush=True,
            )
        names = {**RATES, "survey": SURVEY}.get(workload, [workload])
        for k, name in enumerate(names):
            unit = "ns per element" if workload == "survey" else "ms per M draws" if workload in RATES else "ms per step"
            column = [r[k] for r in ratios]
            if all(math.isnan(r) for r in column):
                print(f"{name}: bayesgrad {statistics.median(m[k] for m in ours):.4g} {unit}; no peer has it")
                continue
            peer_medians = ", ".join(
                f"{p} {statistics.median(t[k] for t in theirs[p]):.4g}" for p in peers
            )
            print(
                f"{name}: bayesgrad {statistics.median(m[k] for m in ours):.4g} {unit}, {peer_medians}; "
                f"faster peer / bayesgrad per pair: median {statistics.median(column):.2f}, "
                f"smallest {min(column):.2f}, {sum(r >= 3.0 for r in column)} of {pairs} at 3 or more",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
