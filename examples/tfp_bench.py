"""The benchmark workloads in TensorFlow Probability (mlp, conv, tiny, the sampling rates and the
draws of the one-uniform families), for
ratios measured on one machine.

Not part of the build or of CI. The machine's speed drifts from hour to hour, so compare
bayesgrad's `examples/bench.rs` with TFP by running both in the same minutes:

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tensorflow-probability==0.25.0 tf_keras==2.21.0
    /tmp/tfenv/bin/python examples/tfp_bench.py --steps 100      # or: mlp | conv | tiny | sampling | draws
    /tmp/tfenv/bin/python examples/tfp_bench.py mlp --batch 2048 --width 1024   # as bench's --batch, --width
    cargo run --release --example bench -- all --steps 100

Prints one line per workload, `<workload> ms_per_step=<median> p10=<..> p90=<..>`, like the
Rust bench (for sampling and draws, `sampling <family>: rsample with gradients <rate> M draws/s`). Each
step is one `@tf.function`-compiled training step (forward, backward, Adam), timed after warm-up.
"""

import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

tfd, tfpl = tfp.distributions, tfp.layers


def classifier(layers, x, num_examples, lr):
    """A training step for a classifier whose layers add their KL terms to `losses`."""
    model = tf_keras.Sequential(layers)
    model.build(x.shape)
    labels = tf.constant(np.random.default_rng(0).integers(0, 10, x.shape[0]), tf.int32)
    opt = tf_keras.optimizers.Adam(lr)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            nll = -tf.reduce_mean(tfd.Categorical(logits=logits).log_prob(labels))
            loss = nll + tf.add_n(model.losses) / num_examples
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def mlp(batch=128, width=512):
    x = tf.constant(np.random.default_rng(1).random((batch, 784), dtype=np.float32))
    layers = [
        tfpl.DenseFlipout(width, activation="relu"),
        tfpl.DenseFlipout(10),
    ]
    return classifier(layers, x, 60000, 1e-3)


def conv():
    x = tf.constant(np.random.default_rng(2).random((32, 32, 32, 3), dtype=np.float32))
    layers = [
        tfpl.Convolution2DFlipout(64, 5, padding="SAME", activation="relu"),
        tf_keras.layers.MaxPool2D(2, 2),
        tf_keras.layers.Flatten(),
        tfpl.DenseFlipout(10),
    ]
    return classifier(layers, x, 50000, 1e-3)


def tiny():
    x = tf.constant(2.0 + np.random.default_rng(3).random((4, 100), dtype=np.float32))
    mu = tf.Variable(0.0)
    rho = tf.Variable(np.log(np.expm1(1.0)), dtype=tf.float32)  # softplus(rho) = 1
    opt = tf_keras.optimizers.Adam(1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(tfd.Normal(mu, tf.nn.softplus(rho)).log_prob(x))
        grads = tape.gradient(loss, [mu, rho])
        opt.apply_gradients(zip(grads, [mu, rho]))
        return loss

    return step


def draws_per_second(step, n, fetch):
    """Millions of draws per second of `step(seed)`, which draws `n` with a fresh stateless seed
    each call: the median of 20 calls after 3 untimed ones, each until `fetch` has its result."""
    seeds = iter(range(1_000_000))
    seed = lambda: tf.constant([next(seeds), 0], tf.int32)  # noqa: E731
    for _ in range(3):
        step(seed())
    times = []
    for _ in range(20):
        start = time.perf_counter()
        fetch(step(seed()))
        times.append(time.perf_counter() - start)
    return n / float(np.median(times)) / 1e6


def sampling():
    """Draws per second of `rsample` with the gradient (float64, 100 000 draws a step, a fresh
    stateless seed each step), as `torch_bench_extra.py sampling` and bayesgrad's `bench -- sampling`
    measure them: Gamma(2.5, 1), Beta(2, 3) and Dirichlet([1.5, 2, 0.7]), each through TFP's
    implicitly reparameterized sampler."""
    n = 100_000
    f64 = tf.float64
    weights = tf.constant([1.0, 2.0, 3.0], f64)
    cases = [
        ("Gamma(2.5, 1)", tf.fill([n], tf.constant(2.5, f64)),
         lambda c, seed: tf.reduce_sum(tfd.Gamma(c, tf.constant(1.0, f64)).sample(seed=seed))),
        ("Beta(2, 3)", tf.fill([n], tf.constant(2.0, f64)),
         lambda c, seed: tf.reduce_sum(tfd.Beta(c, tf.constant(3.0, f64)).sample(seed=seed))),
        ("Dirichlet([1.5, 2, 0.7])", tf.tile(tf.constant([[1.5, 2.0, 0.7]], f64), [n // 3, 1]),
         lambda c, seed: tf.reduce_sum(tfd.Dirichlet(c).sample(seed=seed) * weights)),
    ]
    for name, init, draw in cases:
        c = tf.Variable(init)

        @tf.function
        def step(seed):
            with tf.GradientTape() as tape:
                total = draw(c, seed)
            return tape.gradient(total, c)

        rate = draws_per_second(step, n, lambda g: g.numpy())
        print(f"sampling {name}: rsample with gradients {rate:.2f} M draws/s", flush=True)


def run(name, step, steps):
    for _ in range(max(3, min(50, steps // 10))):
        step()
    probe = time.perf_counter()
    step()
    reps = int(min(10000, max(1, 1e-3 / max(time.perf_counter() - probe, 1e-9))))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(reps):
            step()
        times.append((time.perf_counter() - start) * 1e3 / reps)
    times.sort()
    q = lambda p: times[round((len(times) - 1) * p)]  # noqa: E731
    print(f"{name} ms_per_step={q(0.5):.4f} p10={q(0.1):.4f} p90={q(0.9):.4f}  (steps={steps}, reps={reps})")
    sys.stdout.flush()


def draws():
    """Draws per second of `rsample` with the gradient of the one-uniform families, as `bench --
    draws` measures them: 1 000 000 float32 draws of single trainable parameters (a fresh
    stateless seed each step), then the gradient of their sum."""
    n = 1_000_000
    f32 = tf.float32
    cases = [
        ("Exponential(2)", [2.0], lambda p: tfd.Exponential(p[0])),
        ("Laplace(0.5, 2)", [0.5, 2.0], lambda p: tfd.Laplace(p[0], p[1])),
        ("Gumbel(0.5, 2)", [0.5, 2.0], lambda p: tfd.Gumbel(p[0], p[1])),
        ("Uniform(0.5, 2)", [0.5, 2.0], lambda p: tfd.Uniform(p[0], p[1])),
        ("Cauchy(0.5, 2)", [0.5, 2.0], lambda p: tfd.Cauchy(p[0], p[1])),
        ("HalfCauchy(2)", [0.0, 2.0], lambda p: tfd.HalfCauchy(p[0], p[1])),
        ("Weibull(1.5, 2)", [1.5, 2.0], lambda p: tfd.Weibull(p[0], p[1])),
        ("Pareto(1.5, 2)", [1.5, 2.0], lambda p: tfd.Pareto(p[0], p[1])),
        ("Kumaraswamy(1.5, 2)", [1.5, 2.0], lambda p: tfd.Kumaraswamy(p[0], p[1])),
    ]
    for name, values, make in cases:
        params = [tf.Variable(tf.constant(v, f32)) for v in values]

        @tf.function
        def step(seed):
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(make(params).sample(n, seed=seed))
            return tape.gradient(total, params)

        rate = draws_per_second(step, n, lambda gs: [g.numpy() for g in gs if g is not None])
        print(f"sampling {name}: rsample with gradients {rate:.2f} M draws/s", flush=True)


def main():
    steps, which, batch, width = 50, "all", 128, 512
    args = sys.argv[1:]

    def number(flag):
        value = args.pop(0) if args else ""
        if not value.isdigit() or int(value) < 1:
            sys.exit(f"{flag} needs an integer >= 1")
        return int(value)

    while args:
        a = args.pop(0)
        if a == "--steps":
            steps = number(a)
        elif a == "--batch":
            batch = number(a)
        elif a == "--width":
            width = number(a)
        elif a in ("all", "mlp", "conv", "tiny", "sampling", "draws"):
            which = a
        else:
            sys.exit(f"unknown argument '{a}' (mlp, conv, tiny, sampling, draws, all, --steps N,"
                     " --batch B and --width W for mlp)")
    print(f"TensorFlow {tf.__version__}, TFP {tfp.__version__}, threads: TensorFlow's defaults")
    for name, make in (("tiny", tiny), ("mlp", lambda: mlp(batch, width)), ("conv", conv)):
        if which in ("all", name):
            run(name, make(), steps)
    if which in ("all", "sampling"):
        sampling()
    if which in ("all", "draws"):
        draws()


if __name__ == "__main__":
    main()
