//! Where a training step spends its time, op by op: an [`OpTimer`] started
//! on a thread adds up the wall time of every op that thread's tapes run,
//! forward and backward, and of the optimizers' updates, by op name.
//!
//! The time of an op is the wall time of its call on the calling thread,
//! the work the op hands to helper threads included; what a step spends
//! between ops (building the tape, drawing noise outside an op, the
//! caller's own code) is the step's time less the table's total. Timing
//! reads the clock twice an op, which costs tens of nanoseconds: nothing
//! next to the ops of a layer, but visible on a tape of scalar ops (the
//! `tiny` benchmark step takes 3.4 µs with a timer running against 2.7
//! without, on an Intel Xeon).
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::autodiff::profile::{OpTimer, Pass};
//! let mut store = ParamStore::<f64>::new();
//! let w = store.add("w", Tensor::from_vec(vec![0.5, -1.0], &[2])?);
//! let mut opt = Adam::new(0.1);
//! let timer = OpTimer::start()?;
//! for _ in 0..3 {
//!     let grads = {
//!         let tape = Tape::new();
//!         let w = tape.param(&store, w);
//!         (w * w).sum().backward()?
//!     };
//!     opt.step(&mut store, &grads)?;
//! }
//! let times = timer.finish();
//! let mul = times.get("mul", Pass::Forward).expect("timed");
//! assert_eq!(mul.calls, 3);
//! assert_eq!(times.get("adam", Pass::Update).expect("timed").calls, 3);
//! println!("{times}"); // a table, the costliest op first
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The passes in the order of the tally's maps.
const PASSES: [Pass; 3] = [Pass::Forward, Pass::Backward, Pass::Update];

/// Which part of a step a time belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    /// An op computing its output.
    Forward,
    /// An op's backward pass (its inputs' gradients).
    Backward,
    /// An optimizer's update of the parameters.
    Update,
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
            Pass::Update => "update",
        })
    }
}

/// The calls of one op in one pass and their total wall time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpTime {
    /// The op's name (`Op::name`), or the optimizer's (`"adam"`, `"sgd"`).
    pub name: String,
    /// Forward, backward, or an optimizer's update.
    pub pass: Pass,
    /// How many calls were timed.
    pub calls: u64,
    /// Their wall time, added up.
    pub total: Duration,
}

/// What an [`OpTimer`] measured: one [`OpTime`] per op name and pass, the
/// costliest first. `Display` prints them as a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpTimes {
    entries: Vec<OpTime>,
}

impl OpTimes {
    /// Every op and pass timed, by total time, the largest first.
    pub fn entries(&self) -> &[OpTime] {
        &self.entries
    }

    /// The time of op `name` in `pass`, if it ran.
    pub fn get(&self, name: &str, pass: Pass) -> Option<&OpTime> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.pass == pass)
    }

    /// The sum of every entry's time.
    pub fn total(&self) -> Duration {
        self.entries.iter().map(|e| e.total).sum()
    }
}

impl fmt::Display for OpTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().as_secs_f64();
        let width = self.entries.iter().map(|e| e.name.len()).max().unwrap_or(2);
        writeln!(
            f,
            "{:<width$}  {:<8}  {:>9}  {:>11}  {:>12}  {:>6}",
            "op", "pass", "calls", "total ms", "µs per call", "share"
        )?;
        for e in &self.entries {
            let secs = e.total.as_secs_f64();
            writeln!(
                f,
                "{:<width$}  {:<8}  {:>9}  {:>11.3}  {:>12.2}  {:>5.1}%",
                e.name,
                e.pass,
                e.calls,
                secs * 1e3,
                secs * 1e6 / e.calls.max(1) as f64,
                if total > 0.0 {
                    100.0 * secs / total
                } else {
                    0.0
                }
            )?;
        }
        Ok(())
    }
}

thread_local! {
    /// Whether an [`OpTimer`] runs on this thread.
    static TIMING: Cell<bool> = const { Cell::new(false) };
    /// Its tally: (calls, time) by pass (in [`PASSES`] order) and op name.
    static TALLY: RefCell<[HashMap<String, (u64, Duration)>; 3]> =
        RefCell::new(Default::default());
}

/// Times the ops this thread runs from [`start`](OpTimer::start) to
/// [`finish`](OpTimer::finish) (or until it is dropped). One timer at a
/// time per thread; timers on different threads are independent.
#[derive(Debug)]
pub struct OpTimer {
    /// Not `Send`: the tally it reads is this thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

impl OpTimer {
    /// Starts timing this thread's ops, from an empty tally. Errors if a
    /// timer already runs on this thread (its figures would be split
    /// between the two).
    pub fn start() -> Result<OpTimer> {
        if TIMING.with(Cell::get) {
            return Err(Error::invalid(
                "OpTimer::start",
                "a timer already runs on this thread; finish it first",
            ));
        }
        TALLY.with(|t| t.borrow_mut().iter_mut().for_each(HashMap::clear));
        TIMING.with(|on| on.set(true));
        Ok(OpTimer {
            _thread: std::marker::PhantomData,
        })
    }

    /// Stops timing and returns what was measured.
    pub fn finish(self) -> OpTimes {
        TIMING.with(|on| on.set(false));
        let tally = TALLY.with(|t| std::mem::take(&mut *t.borrow_mut()));
        let mut entries: Vec<OpTime> = PASSES
            .into_iter()
            .zip(tally)
            .flat_map(|(pass, ops)| {
                ops.into_iter().map(move |(name, (calls, total))| OpTime {
                    name,
                    pass,
                    calls,
                    total,
                })
            })
            .collect();
        entries.sort_by(|a, b| (b.total, &a.name, a.pass).cmp(&(a.total, &b.name, b.pass)));
        OpTimes { entries }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        TIMING.with(|on| on.set(false));
    }
}

/// Runs `f` with this thread's timer paused, for an op that runs ops of
/// its own on a private tape: their time is the op's, and listing them as
/// well would count it twice.
pub(crate) fn untimed<R>(f: impl FnOnce() -> R) -> R {
    struct Resume(bool);
    impl Drop for Resume {
        fn drop(&mut self) {
            TIMING.with(|on| on.set(self.0));
        }
    }
    let _resume = Resume(TIMING.with(|on| on.replace(false)));
    f()
}

/// A call being timed: started when a timer runs on this thread.
pub(crate) struct Span(Option<Instant>);

/// Starts timing a call if a timer runs on this thread.
#[inline]
pub(crate) fn span() -> Span {
    Span(TIMING.with(Cell::get).then(Instant::now))
}

impl Span {
    /// Adds the call's time to op `name` in `pass` (a span dropped instead,
    /// as when the op fails, counts nothing).
    #[inline]
    pub(crate) fn end(self, name: &str, pass: Pass) {
        if let Some(start) = self.0 {
            let elapsed = start.elapsed();
            TALLY.with(|t| {
                let ops = &mut t.borrow_mut()[pass as usize];
                // the name is copied only the first time it is seen
                if let Some((calls, total)) = ops.get_mut(name) {
                    *calls += 1;
                    *total += elapsed;
                } else {
                    ops.insert(name.to_string(), (1, elapsed));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// One step of `sum(exp(x) * y)` with its backward pass.
    fn step() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).unwrap());
        let y = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
        (x.exp() * y).sum().backward().unwrap();
    }

    #[test]
    fn counts_each_op_forward_and_backward_on_the_timing_thread_only() {
        let timer = OpTimer::start().unwrap();
        step();
        step();
        // another thread's ops are not this thread's; its own timer sees them
        let other = std::thread::spawn(|| {
            step();
            let timer = OpTimer::start().unwrap();
            step();
            timer.finish()
        })
        .join()
        .unwrap();
        let times = timer.finish();
        for (name, pass) in [
            ("exp", Pass::Forward),
            ("mul", Pass::Forward),
            ("sum", Pass::Forward),
            ("exp", Pass::Backward),
            ("mul", Pass::Backward),
            ("sum", Pass::Backward),
        ] {
            let time = times
                .get(name, pass)
                .unwrap_or_else(|| panic!("{name} {pass}"));
            assert_eq!(time.calls, 2, "{name} {pass}");
            assert_eq!(
                other.get(name, pass).map(|t| t.calls),
                Some(1),
                "{name} {pass}"
            );
        }
        assert_eq!(times.entries().len(), 6, "{times}");
        assert!(times.entries().windows(2).all(|w| w[0].total >= w[1].total));
        assert_eq!(times.total(), times.entries().iter().map(|e| e.total).sum());
        let table = times.to_string();
        assert!(table.starts_with("op "), "{table}");
        assert_eq!(table.lines().count(), 7, "{table}");
    }

    /// An op that computes in `f64` on a tape of its own (an `f32` Beta
    /// divergence) is one entry: its inner ops are part of its time.
    #[test]
    fn an_op_with_a_tape_of_its_own_is_one_entry() {
        let timer = OpTimer::start().unwrap();
        let tape = Tape::<f32>::new();
        let c = |v: f32| tape.var(Tensor::scalar(v));
        let q = Beta::new(c(2.0), c(3.0)).unwrap();
        let p = Beta::new(c(0.5), c(7.0)).unwrap();
        kl_divergence(&q, &p).unwrap().backward().unwrap();
        let times = timer.finish();
        let names: Vec<(&str, Pass)> = times
            .entries()
            .iter()
            .map(|e| (e.name.as_str(), e.pass))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "kl_beta forward and backward only: {names:?}"
        );
        assert!(times.get("kl_beta", Pass::Forward).is_some(), "{names:?}");
        assert!(times.get("kl_beta", Pass::Backward).is_some(), "{names:?}");
    }

    #[test]
    fn counts_ops_with_several_outputs() {
        use crate::layers::DenseSparseVd;
        let mut store = ParamStore::<f64>::new();
        let mut rng = StdRng::seed_from_u64(0);
        let layer = DenseSparseVd::new(&mut store, "h", 4, 3, &mut rng).unwrap();
        let timer = OpTimer::start().unwrap();
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = layer
            .forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))
            .unwrap();
        let kl = cx.divergences().total();
        (y.sum() + kl).backward().unwrap();
        let times = timer.finish();
        for pass in [Pass::Forward, Pass::Backward] {
            let time = times.get("sparse_vd_kl", pass);
            assert_eq!(time.map(|t| t.calls), Some(1), "{pass}\n{times}");
        }
    }

    #[test]
    fn one_timer_at_a_time_and_nothing_timed_without_one() {
        let timer = OpTimer::start().unwrap();
        assert!(OpTimer::start().is_err());
        drop(timer);
        // dropped: timing stopped (no call is timed until the next start)
        assert!(span().0.is_none());
        step();
        let timer = OpTimer::start().unwrap();
        // an op that fails counts nothing
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::zeros(&[2, 3]));
        assert!(a.matmul(a).is_err());
        assert_eq!(timer.finish(), OpTimes::default());
    }

    #[test]
    fn optimizer_updates_are_timed() {
        let mut store = ParamStore::<f64>::new();
        let w = store.add("w", Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap());
        let grads = |store: &ParamStore<f64>| {
            let tape = Tape::new();
            let w = tape.param(store, w);
            (w * w).sum().backward().unwrap()
        };
        let timer = OpTimer::start().unwrap();
        let g = grads(&store);
        Adam::new(0.1).step(&mut store, &g).unwrap();
        let g = grads(&store);
        Sgd::new(0.1).step(&mut store, &g).unwrap();
        // a refused update counts nothing
        let g = grads(&store);
        assert!(Sgd::new(-1.0).step(&mut store, &g).is_err());
        let times = timer.finish();
        assert_eq!(times.get("adam", Pass::Update).map(|t| t.calls), Some(1));
        assert_eq!(times.get("sgd", Pass::Update).map(|t| t.calls), Some(1));
    }
}
