"""TFP's DenseFlipout on exactly the UCI wine splits of bayesgrad's `uci_wine` example.

Not part of the build or of CI. The 20-split means move by more than their standard errors
from one split seed to the next (bayesgrad's RMSE over 20 splits ranges 0.617-0.645 over
seeds 0-9), so a fair comparison scores both libraries on the same splits and looks at the
per-split differences:

    cargo run --release --example uci_wine -- --seed 3 --export-splits /tmp/wine
    cargo run --release --example uci_wine -- --seed 3 | tee /tmp/wine/bayesgrad_seed3.txt
    /tmp/tfenv/bin/python examples/tfp_wine.py /tmp/wine --seed 3 \\
        --paired /tmp/wine/bayesgrad_seed3.txt

(`examples/tfp_bench.py` says how to make the venv.) The model follows the protocol of the
project's docs/uci-wine.md with TFP's defaults: inputs and target standardized on the training
part; DenseFlipout(50, relu) and DenseFlipout(1) with TFP's default mean-field posterior
(`loc ~ N(0, 0.1)`, `rho ~ N(-3, 0.1)`), deterministic biases and N(0, 1) prior; a learned
noise scale `softplus(rho) + 1e-5` (starting at 1 in standardized units); loss = mean NLL of
the batch + sum(model.losses) / num_train; Adam, batch 32; by default 200 epochs at lr 1e-2
(the TFP run of docs/uci-wine.md). `--epochs 80 --lr 3e-3 --lr-final 3e-4 --noise-init 0.5` gives TFP
bayesgrad's defaults before its MAP start; add `--map-epochs 60` for the MAP start as well
(a plain Dense network trained to the maximum a posteriori, whose weights start the posterior
means, as `uci_wine --map-epochs`). Test RMSE of the mean of 100 posterior samples and
`mean_i ln mean_s N(y_i | f_s(x_i), sigma^2)`, both in the original units.

Prints a line per split in the Rust example's format, then mean +- standard error, and with
`--paired` the per-split differences bayesgrad - TFP (mean +- standard error).
"""

import argparse
import os
import re
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

tfd, tfpl = tfp.distributions, tfp.layers


def mean_se(xs):
    xs = np.asarray(xs, dtype=np.float64)
    if len(xs) < 2:
        return xs.mean(), float("nan")
    return xs.mean(), xs.std(ddof=1) / np.sqrt(len(xs))


def train(step, xtr, ytr_s, epochs, rng):
    """`epochs` passes of `step` over the training rows in shuffled batches of 32."""
    xtr32, ytr32 = xtr.astype(np.float32), ytr_s.astype(np.float32)
    for _ in range(epochs):
        order = rng.permutation(len(ytr32))
        for b in range(0, len(order), 32):
            idx = order[b : b + 32]
            step(tf.constant(xtr32[idx]), tf.constant(ytr32[idx]))


def run_split(x, y, test, split, args):
    """Trains on the rows not in `test`; returns (rmse, log-likelihood) on `test`."""
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    xtr, ytr, xte, yte = x[mask], y[mask], x[test], y[test]
    xm, xs = xtr.mean(0), xtr.std(0)
    xs[xs == 0] = 1.0
    ym, ys = ytr.mean(), ytr.std()
    xtr, xte = (xtr - xm) / xs, (xte - xm) / xs
    ytr_s = (ytr - ym) / ys

    tf_keras.utils.set_random_seed(1000 * args.seed + split)
    model = tf_keras.Sequential(
        [tfpl.DenseFlipout(50, activation="relu"), tfpl.DenseFlipout(1)]
    )
    model.build((None, x.shape[1]))
    if args.map_epochs > 0:
        start_at_the_map(model, xtr, ytr_s, split, args)
    noise_rho = tf.Variable(np.log(np.expm1(args.noise_init)), dtype=tf.float32)
    variables = model.trainable_variables + [noise_rho]
    n = float(len(ytr_s))
    steps = args.epochs * -(-len(ytr_s) // 32)
    lr_final = args.lr if args.lr_final is None else args.lr_final
    # lr * (lr_final / lr)^(step / steps), as the Rust example's --lr-final
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(args.lr, steps, lr_final / args.lr)
    opt = tf_keras.optimizers.Adam(schedule)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            scale = tf.nn.softplus(noise_rho) + 1e-5
            mean = model(xb, training=True)[:, 0]
            nll = -tf.reduce_mean(tfd.Normal(mean, scale).log_prob(yb))
            loss = nll + tf.add_n(model.losses) / n
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    train(step, xtr, ytr_s, args.epochs, np.random.default_rng(1000 * args.seed + split))

    xte32 = tf.constant(xte.astype(np.float32))
    preds = np.stack([model(xte32).numpy()[:, 0] for _ in range(100)]) * ys + ym
    sigma = (float(tf.nn.softplus(noise_rho)) + 1e-5) * ys
    rmse = float(np.sqrt(np.mean((preds.mean(0) - yte) ** 2)))
    logs = -0.5 * ((yte - preds) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    top = logs.max(0)
    ll = float(np.mean(top + np.log(np.mean(np.exp(logs - top), 0))))
    return rmse, ll


def start_at_the_map(model, xtr, ytr_s, split, args):
    """As the Rust example's --map-epochs: trains a plain Dense network to the maximum a
    posteriori (Normal likelihood with a learned noise scale, N(0, 1) prior on the kernels,
    Adam at a constant lr) and sets the posterior means (and the deterministic biases) there."""
    net = tf_keras.Sequential([tf_keras.layers.Dense(50, activation="relu"), tf_keras.layers.Dense(1)])
    net.build((None, xtr.shape[1]))
    rho = tf.Variable(np.log(np.expm1(args.noise_init)), dtype=tf.float32)
    variables = net.trainable_variables + [rho]
    n = float(len(ytr_s))
    opt = tf_keras.optimizers.Adam(args.lr)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            mean = net(xb, training=True)[:, 0]
            nll = -tf.reduce_mean(tfd.Normal(mean, tf.nn.softplus(rho) + 1e-5).log_prob(yb))
            prior = sum(tf.reduce_sum(layer.kernel**2) for layer in net.layers)
            loss = nll + 0.5 * prior / n
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    train(step, xtr, ytr_s, args.map_epochs, np.random.default_rng(1000 * args.seed + split + 500))
    assigned = 0
    for flipout, dense in zip(model.layers, net.layers):
        for v in flipout.trainable_variables:
            if "kernel_posterior_loc" in v.name:
                v.assign(dense.kernel)
                assigned += 1
            elif "bias_posterior_loc" in v.name:
                v.assign(dense.bias)
                assigned += 1
    if assigned != 4:
        raise SystemExit(f"MAP start: set {assigned} of the 4 posterior means (TFP renamed them?)")


def paired(path, tfp_results):
    """Per-split differences bayesgrad - TFP from the Rust example's printed lines."""
    ours = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"split\s+(\d+): rmse (\S+)\s+log-lik\s+(\S+)", line)
            if m:
                ours[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
    common = [s for s in sorted(tfp_results) if s in ours]
    if not common:
        raise SystemExit(f"no 'split k: rmse .. log-lik ..' lines in {path}")
    for k, name in ((0, "RMSE"), (1, "log-likelihood")):
        m, se = mean_se([ours[s][k] - tfp_results[s][k] for s in common])
        better = sum(
            (ours[s][k] < tfp_results[s][k]) if k == 0 else (ours[s][k] > tfp_results[s][k])
            for s in common
        )
        print(
            f"paired {name:<15} bayesgrad - TFP {m:+.4f} +- {se:.4f} "
            f"(bayesgrad better in {better} of {len(common)} splits)"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="the directory written by uci_wine --export-splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--lr-final", type=float, help="exponential decay to this lr (default: none)")
    p.add_argument("--noise-init", type=float, default=1.0)
    p.add_argument("--map-epochs", type=int, default=0,
                   help="start the posterior means at a MAP fit, as uci_wine's --map-epochs")
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--paired", help="the uci_wine example's output on the same seed")
    args = p.parse_args()

    table = np.loadtxt(os.path.join(args.dir, "wine.csv"), delimiter=",")
    x, y = table[:, :-1], table[:, -1]
    with open(os.path.join(args.dir, f"splits_seed{args.seed}.txt")) as f:
        splits = [np.array([int(v) for v in line.split(",")]) for line in f if line.strip()]
    print(
        f"TFP {tfp.__version__} DenseFlipout on {len(y)} rows; splits of bayesgrad seed "
        f"{args.seed}; {args.epochs} epochs, lr {args.lr}"
        + ("" if args.lr_final is None else f" decaying to {args.lr_final}")
        + f", noise init {args.noise_init}, batch 32"
        + (f", MAP start {args.map_epochs} epochs" if args.map_epochs else "")
    )
    start, results = time.time(), {}
    for split, test in enumerate(splits[: args.splits]):
        t = time.time()
        rmse, ll = run_split(x, y, test, split, args)
        results[split] = (rmse, ll)
        print(f"split {split:>2}: rmse {rmse:.4f}  log-lik {ll:>7.4f}  {time.time() - t:.1f} s",
              flush=True)
    (rm, rse), (lm, lse) = (mean_se([r[0] for r in results.values()]),
                            mean_se([r[1] for r in results.values()]))
    print(f"test RMSE           {rm:.3f} +- {rse:.3f}")
    print(f"test log-likelihood {lm:.3f} +- {lse:.3f}")
    print(f"wall time        {time.time() - start:.0f} s for {len(results)} splits")
    if args.paired:
        paired(args.paired, results)


if __name__ == "__main__":
    main()
