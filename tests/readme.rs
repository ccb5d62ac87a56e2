//! The README's quickstart runs: `tour` holds the README's Rust block
//! verbatim between two marker comments, and `readme_block_is_the_tested_code`
//! fails as soon as the README and this copy differ, so the quickstart cannot
//! drift from the API.

use bayesgrad::prelude::*;

#[test]
fn tour() -> Result<()> {
    let mut seen = Vec::new();
    // README BEGIN
    let mut rng = StdRng::seed_from_u64(0);
    let mut batches = Vec::new(); // random "images", in place of MNIST
    for _ in 0..2 {
        let x = Tensor::<f32>::from_fn(&[8, 784], |_| rng.random());
        let labels: Vec<usize> = (0..8).map(|_| rng.random_range(0..10)).collect();
        batches.push((x, labels));
    }
    let mut store = ParamStore::<f32>::new(); // parameters outlive tapes
    let net = Sequential::new()
        .push(DenseFlipout::new(&mut store, "hidden", 784, 512, &mut rng)?)
        .push(Activation::Relu)
        .push(DenseFlipout::new(&mut store, "out", 512, 10, &mut rng)?);
    let elbo = Elbo::new(KlWeight::PerExample {
        num_examples: 60_000,
    }); // = TFP's kl / num_examples
    let mut opt = Adam::new(1e-3);
    for (index, (x, labels)) in batches.iter().enumerate() {
        let tape = Tape::new(); // one tape per step
        let mut cx = Forward::new(&tape, &store, &mut rng); // what the pass carries
        let logits = net.forward(&mut cx, tape.constant(x.clone()))?;
        let nll = -Categorical::from_logits(logits)?
            .log_prob_labels(labels)?
            .sum();
        let kl_terms = cx.divergences().values(); // [("hidden/kernel_divergence", ..), ("out/kernel_divergence", ..)]
        let out = elbo.loss(
            cx.divergences(),
            nll,
            Batch {
                index,
                size: labels.len(),
                step: index,
            },
        )?;
        println!("{out}"); // loss = nll + weight * kl, each term shown
        opt.step(&mut store, &out.loss.backward()?)?; // Err(MissingGradient { name }) if a parameter got none
        // README END
        let names: Vec<String> = kl_terms.into_iter().map(|(n, _)| n).collect();
        seen.push((names, out.loss.item()?));
    }
    // What the tour's comments promise.
    for (names, loss) in &seen {
        assert_eq!(
            names,
            &["hidden/kernel_divergence", "out/kernel_divergence"]
        );
        assert!(loss.is_finite());
    }
    assert_eq!(seen.len(), 2);
    Ok(())
}

/// `text` without `//` comments and with whitespace normalized, so that the
/// README's one-statement-per-line layout and rustfmt's wrapping of the
/// test's copy compare equal while every token must match.
fn normalized(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(", )", ")")
        .replace(", }", " }")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" .", ".")
        .replace("{ ", "{")
        .replace(" }", "}")
}

#[test]
fn readme_block_is_the_tested_code() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```rust\n")
        .expect("README has a ```rust block")
        + "```rust\n".len();
    let len = readme[start..].find("```").expect("the block is closed");
    let block = &readme[start..start + len];
    assert!(
        block.starts_with("use bayesgrad::prelude::*;\n"),
        "the README block starts with the prelude import"
    );
    let body = block.trim_start_matches("use bayesgrad::prelude::*;\n");

    let this = include_str!("readme.rs");
    let begin = this.find("// README BEGIN\n").expect("begin marker") + "// README BEGIN\n".len();
    let end = this.find("        // README END").expect("end marker");
    // The README closes the loop after the last statement; the test keeps the
    // loop open to check each step.
    let tested = format!("{}}}", &this[begin..end]);
    assert_eq!(
        normalized(body),
        normalized(&tested),
        "the README's Rust block and tests/readme.rs differ: update both"
    );
}
