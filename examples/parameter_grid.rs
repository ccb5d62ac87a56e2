//! Values and gradients of the Gamma, Beta and three-category Dirichlet
//! divergences, the Beta and Dirichlet (two and three categories)
//! entropies and the Student-t density
//! over a grid of parameters
//! from 1e-300 to 1e300, for `examples/parameter_grid.py` to check against
//! mpmath (`docs/accuracy.md`, Limits).
//!
//! ```sh
//! cargo run --release --example parameter_grid > grid.tsv
//! python examples/parameter_grid.py grid.tsv
//! ```
//!
//! One tab-separated line per case: the case, the two parameters of the
//! distribution differentiated (`q` of a divergence: concentration and rate,
//! or the two concentrations; the Student-t's df and scale), the value, and
//! its derivatives in those two parameters. A case whose construction or
//! backward pass is an error prints `error` and the message.

use bayesgrad::prelude::*;

const GRID: [f64; 9] = [1e-300, 1e-10, 0.01, 0.5, 1.0, 3.0, 1e5, 1e10, 1e300];

fn main() -> Result<()> {
    for &a in &GRID {
        for &b in &GRID {
            let tape = Tape::<f64>::new();
            let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
            let print = |case: String, y: Result<Var<'_, f64>>| {
                let parts = y.and_then(|y| {
                    let g = y.backward()?;
                    let d = |x: Var<'_, f64>| g.get(x).map_or(Ok(0.0), |t| t.item());
                    Ok((y.item()?, d(av)?, d(bv)?))
                });
                match parts {
                    Ok((v, da, db)) => println!("{case}\t{a:e}\t{b:e}\t{v:e}\t{da:e}\t{db:e}"),
                    Err(e) => println!("{case}\t{a:e}\t{b:e}\terror\t{e}"),
                }
            };
            let gamma = Gamma::new(av, bv)?;
            let beta = Beta::new(av, bv)?;
            print("Beta entropy".into(), beta.entropy());
            let pair = Var::stack(&[av, bv], 0)?;
            print("Dirichlet entropy".into(), Dirichlet::new(pair)?.entropy());
            for shared in [1e-10, 3.0] {
                let three = Var::stack(&[av, bv, tape.scalar(shared)], 0)?;
                print(
                    format!("Dirichlet3 entropy({shared:e})"),
                    Dirichlet::new(three)?.entropy(),
                );
            }
            let t = StudentT::new(av, tape.scalar(0.0), bv)?;
            for x in [0.0, 1.0, -1e10, 1e300] {
                print(
                    format!("StudentT log_prob({x:e})"),
                    t.log_prob(tape.scalar(x)),
                );
            }
            for &c in &GRID {
                for &e in &GRID {
                    let p = Gamma::new(tape.scalar(c), tape.scalar(e))?;
                    print(format!("KL Gamma({c:e},{e:e})"), kl_divergence(&gamma, &p));
                    let p = Beta::new(tape.scalar(c), tape.scalar(e))?;
                    print(format!("KL Beta({c:e},{e:e})"), kl_divergence(&beta, &p));
                    // over three categories, the third shared
                    for shared in [1e-10, 3.0] {
                        let s = tape.scalar(shared);
                        let q = Dirichlet::new(Var::stack(&[av, bv, s], 0)?)?;
                        let p = Dirichlet::new(tape.var(Tensor::vector(&[c, e, shared])))?;
                        print(
                            format!("KL Dirichlet({c:e},{e:e};{shared:e})"),
                            kl_divergence(&q, &p),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
