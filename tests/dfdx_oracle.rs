//! Differential test against dfdx 0.13, an independent autodiff engine:
//! composite graphs in f64 must agree in value and gradient to 1e-10.

use bayesgrad::prelude::*;
use dfdx::prelude as dx;
use dfdx::prelude::{
    AsArray, Backward, BroadcastTo, Cpu, SelectTo, SumTo, Tensor as DTensor, TensorFrom, Trace,
    TryMatMul, WithEmptyTape,
};

const B: usize = 4;
const I: usize = 5;
const O: usize = 3;

fn values(n: usize, phase: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64) * 1.37 + phase).sin() * 1.5)
        .collect()
}

fn close(name: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{name}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() < 1e-10,
            "{name}[{i}]: bayesgrad {x} vs dfdx {y}"
        );
    }
}

#[test]
fn matmul_bias_log_softmax_gather_sum() {
    let (xv, wv, bv) = (values(B * I, 0.1), values(I * O, 0.9), values(O, 2.0));
    let labels = [2usize, 0, 1, 2];

    // bayesgrad
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::from_vec(xv.clone(), &[B, I]).unwrap());
    let w = tape.var(Tensor::from_vec(wv.clone(), &[I, O]).unwrap());
    let b = tape.var(Tensor::from_vec(bv.clone(), &[O]).unwrap());
    let logits = x.matmul(w).unwrap() + b;
    let loss = -logits
        .log_softmax(1)
        .unwrap()
        .gather(&labels)
        .unwrap()
        .sum();
    let grads = loss.backward().unwrap();

    // dfdx
    let dev: Cpu = Default::default();
    let dxx: DTensor<dx::Rank2<B, I>, f64, _> = dev.tensor(xv);
    let dw: DTensor<dx::Rank2<I, O>, f64, _> = dev.tensor(wv);
    let db: DTensor<dx::Rank1<O>, f64, _> = dev.tensor(bv);
    // dfdx keeps its tape on the left operand
    let dlogits =
        dxx.leaky_trace().matmul(dw.clone()) + db.clone().broadcast::<dx::Rank2<B, O>, _>();
    let idx: DTensor<dx::Rank1<B>, usize, _> = dev.tensor(labels);
    let picked = dlogits.log_softmax::<dx::Axis<1>>().select(idx);
    let dloss = -picked.sum::<dx::Rank0, _>();
    let dvalue = dloss.array();
    let dgrads = dloss.backward();

    close("loss", &[loss.item().unwrap()], &[dvalue]);
    close(
        "grad w",
        grads.get(w).unwrap().data(),
        &dgrads.get(&dw).as_vec(),
    );
    close(
        "grad b",
        grads.get(b).unwrap().data(),
        &dgrads.get(&db).as_vec(),
    );
}

#[test]
fn broadcast_arithmetic() {
    let (av, rv, cv) = (values(B * O, 0.3), values(O, 1.1), values(B, 2.2));
    let cv: Vec<f64> = cv.iter().map(|c| c.abs() + 0.5).collect();

    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::from_vec(av.clone(), &[B, O]).unwrap());
    let r = tape.var(Tensor::from_vec(rv.clone(), &[O]).unwrap());
    let c = tape.var(Tensor::from_vec(cv.clone(), &[B, 1]).unwrap());
    // (a * r - r) / c + a * a, summed
    let y = ((a * r - r) / c + a * a).sum();
    let grads = y.backward().unwrap();

    let dev: Cpu = Default::default();
    let da: DTensor<dx::Rank2<B, O>, f64, _> = dev.tensor(av);
    let dr: DTensor<dx::Rank1<O>, f64, _> = dev.tensor(rv);
    let dc: DTensor<dx::Rank1<B>, f64, _> = dev.tensor(cv);
    let ta = da.leaky_trace();
    let rb = dr.leaky_trace().broadcast::<dx::Rank2<B, O>, _>();
    let cb = dc.leaky_trace().broadcast::<dx::Rank2<B, O>, _>();
    let t1 = ta.with_empty_tape() * rb.with_empty_tape();
    let t2 = (t1 - rb) / cb;
    let t3 = dx::square(ta); // dfdx cannot multiply a tensor by itself (same id)
    let dy = (t2 + t3).sum::<dx::Rank0, _>();
    let dvalue = dy.array();
    let dgrads = dy.backward();

    close("value", &[y.item().unwrap()], &[dvalue]);
    close(
        "grad a",
        grads.get(a).unwrap().data(),
        &dgrads.get(&da).as_vec(),
    );
    close(
        "grad r",
        grads.get(r).unwrap().data(),
        &dgrads.get(&dr).as_vec(),
    );
    close(
        "grad c",
        grads.get(c).unwrap().data(),
        &dgrads.get(&dc).as_vec(),
    );
}
