//! Fault injection on checkpoints and the edges of optimizer updates:
//! every truncation and every single-bit flip of a real checkpoint,
//! concurrent saves, a writer killed mid-save, names and constraints that
//! used to load wrong data, updates that overflow.

use bayesgrad::prelude::*;
use bayesgrad::train::ResumableRng;
use bayesgrad::train::checkpoint::{self, load_bytes, save_bytes};
use bayesgrad::train::optim::AdamState;
use std::path::PathBuf;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("bayesgrad-faults-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A small Flipout network trained for three steps with Adam and a
/// resumable RNG: the checkpoint the fault injection damages.
struct Trained {
    store: ParamStore<f64>,
    net: Sequential<f64>,
    opt: Adam<f64>,
    rng: ResumableRng,
}

/// The network and its store, initialized from `rng`.
fn build(rng: &mut ResumableRng) -> (ParamStore<f64>, Sequential<f64>) {
    let mut store = ParamStore::new();
    let net = Sequential::new()
        .push(DenseFlipout::new(&mut store, "h", 2, 3, rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseFlipout::new(&mut store, "o", 3, 1, rng).unwrap());
    (store, net)
}

fn trained() -> Trained {
    let mut rng = ResumableRng::seed_from_u64(5);
    let (mut store, net) = build(&mut rng);
    let mut opt = Adam::new(0.01);
    for step in 0..3 {
        train_step(&net, &mut store, &mut opt, &mut rng, step);
    }
    Trained {
        store,
        net,
        opt,
        rng,
    }
}

fn train_step(
    net: &Sequential<f64>,
    store: &mut ParamStore<f64>,
    opt: &mut Adam<f64>,
    rng: &mut ResumableRng,
    step: usize,
) {
    let x = Tensor::from_fn(&[4, 2], |i| ((i + step) as f64 * 0.37).sin());
    let y = Tensor::from_fn(&[4, 1], |i| ((i * 3 + step) as f64 * 0.11).cos());
    let grads = {
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, store, rng);
        let mean = net.forward(&mut cx, tape.constant(x)).unwrap();
        let lik = Normal::new(mean, tape.scalar(0.5)).unwrap();
        let elbo = Elbo::new(KlWeight::PerExample { num_examples: 40 });
        let batch = Batch {
            index: 0,
            size: 4,
            step,
        };
        let loss = elbo
            .loss_from_likelihood(cx.divergences(), &lik, tape.constant(y), batch)
            .unwrap();
        loss.loss.backward().unwrap()
    };
    opt.step(store, &grads).unwrap();
}

/// A store shaped like `trained`'s, initialized otherwise, with a fresh
/// optimizer and RNG.
fn blank() -> (ParamStore<f64>, Adam<f64>, ResumableRng) {
    let (store, _, rng) = blank_with_net();
    (store, Adam::new(0.01), rng)
}

fn blank_with_net() -> (ParamStore<f64>, Sequential<f64>, ResumableRng) {
    let mut rng = ResumableRng::seed_from_u64(99);
    let (store, net) = build(&mut rng);
    (store, net, rng)
}

type Snapshot = (Vec<Tensor<f64>>, AdamState<f64>, [u64; 4]);

fn snapshot(store: &ParamStore<f64>, opt: &Adam<f64>, rng: &ResumableRng) -> Snapshot {
    let values = store.params().map(|p| store.raw(p).clone()).collect();
    (values, opt.state().clone(), rng.state())
}

/// Loads `bytes`; an Ok load must give exactly the saved state, and a
/// failed one must leave the store, the optimizer and the RNG as they were.
/// Returns whether it loaded.
fn load_checked(bytes: &[u8], saved: &Snapshot) -> bool {
    let (mut store, mut opt, mut rng) = blank();
    let before = snapshot(&store, &opt, &rng);
    let result = load_bytes(&mut store, &mut [&mut opt, &mut rng], bytes);
    let after = snapshot(&store, &opt, &rng);
    match result {
        Ok(()) => {
            assert_eq!(&after, saved, "a damaged file loaded different data");
            true
        }
        Err(_) => {
            assert_eq!(after, before, "a failed load changed state");
            false
        }
    }
}

#[test]
fn every_truncation_and_every_bit_flip_is_refused_or_loads_the_same_data() {
    let t = trained();
    let bytes = save_bytes(&t.store, &[&t.opt, &t.rng]).unwrap();
    let saved = snapshot(&t.store, &t.opt, &t.rng);
    assert!(load_checked(&bytes, &saved), "the intact file loads");
    let mut loaded_after_damage = 0;
    for cut in 0..bytes.len() {
        assert!(!load_checked(&bytes[..cut], &saved), "cut at {cut} loaded");
    }
    let mut damaged = bytes.clone();
    for bit in 0..bytes.len() * 8 {
        damaged[bit / 8] ^= 1 << (bit % 8);
        loaded_after_damage += usize::from(load_checked(&damaged, &saved));
        damaged[bit / 8] ^= 1 << (bit % 8);
    }
    // a flip may load only if the data stays the same (JSON whitespace in
    // the header, say): load_checked asserts that; most are refused
    assert!(
        loaded_after_damage < bytes.len(),
        "{loaded_after_damage} of {} flips loaded",
        bytes.len() * 8
    );
    eprintln!(
        "{} bytes: {} truncations refused; {} single-bit flips, {} refused, {loaded_after_damage} loaded the same data",
        bytes.len(),
        bytes.len(),
        bytes.len() * 8,
        bytes.len() * 8 - loaded_after_damage
    );
    // appended bytes are named as such, not as a truncation
    let mut appended = bytes.clone();
    appended.extend_from_slice(&[0; 8]);
    let (mut store, mut opt, mut rng) = blank();
    let err = load_bytes(&mut store, &mut [&mut opt, &mut rng], &appended).unwrap_err();
    assert!(err.to_string().contains("8 bytes follow"), "{err}");
}

#[test]
fn the_optimizer_step_is_inside_the_checksum() {
    let t = trained();
    let bytes = save_bytes(&t.store, &[&t.opt]).unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let at = text
        .find("\"adam_step\":\"3\"")
        .expect("the step is in the metadata");
    let mut patched = bytes.clone();
    patched[at + "\"adam_step\":\"".len()] = b'4';
    let (mut store, mut opt, _) = blank();
    let err = load_bytes(&mut store, &mut [&mut opt], &patched).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    // and a huge step count (set directly) does not wrap into NaN
    let mut opt = t.opt.clone();
    let mut state = opt.state().clone();
    state.step = u64::MAX - 1;
    opt.set_state(state);
    let mut store = t.store;
    let tape = Tape::new();
    let mut loss = tape.scalar(0.0);
    for p in store.params().collect::<Vec<_>>() {
        loss = loss + tape.param(&store, p).square().sum();
    }
    let grads = loss.backward().unwrap();
    opt.step(&mut store, &grads).unwrap();
    assert!(
        store
            .params()
            .all(|p| store.raw(p).first_non_finite().is_none())
    );
}

#[test]
fn reserved_names_and_constraints_cannot_load_wrong_data() {
    let mut store = ParamStore::<f64>::new();
    for name in ["__adam__/m/w", "__metadata__"] {
        let err = store.try_add(name, Tensor::scalar(1.0)).unwrap_err();
        assert!(err.to_string().contains("reserve"), "{err}");
    }
    // a value saved unconstrained does not load into a positive parameter
    let w = store.add("w", Tensor::vector(&[2.0, -3.0]));
    let bytes = save_bytes(&store, &[]).unwrap();
    let mut positive = ParamStore::<f64>::new();
    let pw = positive.add_positive("w", Tensor::vector(&[1.0, 1.0]));
    let err = load_bytes(&mut positive, &mut [], &bytes).unwrap_err();
    assert!(
        matches!(&err, Error::ConstraintMismatch { name, saved, .. } if name == "w" && saved == "real"),
        "{err}"
    );
    assert_eq!(positive.version(pw).unwrap(), 0, "nothing loaded");
    assert_eq!(store.raw(w).data(), &[2.0, -3.0]);
    // a bad constraint and a bad value are refused when they are set
    let bad_eps = Constraint::Positive { eps: f64::NAN };
    assert!(
        store
            .try_add_raw("v", Tensor::scalar(0.0), bad_eps)
            .is_err()
    );
    assert!(store.set_raw(w, Tensor::vector(&[f64::NAN, 0.0])).is_err());
}

#[test]
fn a_checkpoint_without_the_state_asked_for_says_so() {
    let t = trained();
    let bytes = save_bytes(&t.store, &[]).unwrap();
    let (mut store, mut opt, _) = blank();
    let err = load_bytes(&mut store, &mut [&mut opt], &bytes).unwrap_err();
    assert!(
        matches!(&err, Error::MissingState { kind, .. } if kind == "adam"),
        "{err}"
    );
}

#[test]
fn concurrent_saves_to_one_path_all_succeed_and_leave_a_whole_file() {
    let dir = temp_dir("concurrent");
    let path = dir.0.join("ckpt.safetensors");
    let stores: Vec<ParamStore<f64>> = (0..8)
        .map(|i| {
            let mut s = ParamStore::new();
            s.add("w", Tensor::from_fn(&[1000], |j| (i * 1000 + j) as f64));
            s
        })
        .collect();
    std::thread::scope(|scope| {
        for store in &stores {
            let path = &path;
            scope.spawn(move || {
                for _ in 0..10 {
                    checkpoint::save(store, &[], path).unwrap();
                }
            });
        }
    });
    let mut fresh = ParamStore::<f64>::new();
    let w = fresh.add("w", Tensor::zeros(&[1000]));
    checkpoint::load(&mut fresh, &mut [], &path).unwrap();
    let first = fresh.raw(w).data()[0] as usize;
    assert!(
        first.is_multiple_of(1000) && first < 8000,
        "one writer's whole file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "ckpt.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[cfg(unix)]
#[test]
fn saving_over_a_file_keeps_its_mode_and_removes_dead_writers_temporaries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("mode");
    let path = dir.0.join("m.safetensors");
    let mut store = ParamStore::<f64>::new();
    store.add("w", Tensor::scalar(1.0));
    checkpoint::save(&store, &[], &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // a temporary file of a writer that died (no process has this id)
    let stale = dir.0.join(".m.safetensors.4000000000.abc123.tmp");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    checkpoint::save(&store, &[], &path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !stale.exists(),
        "the dead writer's temporary file was removed"
    );
}

/// Run as a child process by the test below: saves two alternating states
/// to the path in `BAYESGRAD_KILL_PATH` until it is killed.
#[test]
#[ignore = "a helper process for writer_killed_mid_save_leaves_a_whole_file"]
fn save_until_killed() {
    let Ok(path) = std::env::var("BAYESGRAD_KILL_PATH") else {
        return;
    };
    let stores: Vec<ParamStore<f64>> = [1.0, 2.0]
        .iter()
        .map(|&v| {
            let mut s = ParamStore::new();
            s.add("w", Tensor::full(&[200_000], v));
            s
        })
        .collect();
    for i in 0.. {
        checkpoint::save(&stores[i % 2], &[], std::path::Path::new(&path)).unwrap();
    }
}

#[test]
fn a_writer_killed_mid_save_leaves_a_whole_file() {
    let dir = temp_dir("kill");
    let path = dir.0.join("k.safetensors");
    let exe = std::env::current_exe().unwrap();
    for round in 0..6u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "faults::save_until_killed",
                "--ignored",
                "--test-threads=1",
            ])
            .env("BAYESGRAD_KILL_PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // wait for the first file, then let the saves run a while
        let start = std::time::Instant::now();
        while !path.exists() && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 + 13 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut store = ParamStore::<f64>::new();
        let w = store.add("w", Tensor::zeros(&[200_000]));
        checkpoint::load(&mut store, &mut [], &path).expect("a whole file after the kill");
        let v = store.raw(w).data()[0];
        assert!(v == 1.0 || v == 2.0);
        assert!(
            store.raw(w).data().iter().all(|&x| x == v),
            "one save's data"
        );
    }
}

#[test]
fn updates_that_overflow_are_refused_with_nothing_modified() {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", Tensor::vector(&[1.0, 2.0]));
    let grads = {
        let tape = Tape::new();
        (tape.param(&store, w) * 1e10).sum().backward().unwrap()
    };
    let err = Sgd::new(1e308).step(&mut store, &grads).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteUpdate { name, .. } if name == "w"),
        "{err}"
    );
    let mut adam = Adam::new(f64::MAX);
    let err = adam.step(&mut store, &grads).unwrap_err();
    assert!(matches!(err, Error::NonFiniteUpdate { .. }), "{err}");
    assert_eq!(adam.state().step, 0, "the step was not counted");
    assert_eq!(store.raw(w).data(), &[1.0, 2.0]);
    assert_eq!(store.version(w).unwrap(), 0, "nothing was written");
    // a state that does not fit the store is an error, not a panic
    let mut adam = Adam::new(0.1);
    adam.set_state(AdamState {
        step: 1,
        moments: vec![Some((Tensor::zeros(&[3]), Tensor::zeros(&[3])))],
    });
    assert!(
        adam.step(&mut store, &grads)
            .unwrap_err()
            .to_string()
            .contains("shape")
    );
    adam.set_state(AdamState {
        step: 1,
        moments: vec![None, None],
    });
    assert!(
        adam.step(&mut store, &grads)
            .unwrap_err()
            .to_string()
            .contains("another store")
    );
}

#[test]
fn training_resumes_bit_identically_with_a_continuing_rng_and_either_optimizer() {
    let (k, total) = (3, 7);
    // uninterrupted
    let mut t = trained();
    for step in 3..3 + total {
        train_step(&t.net, &mut t.store, &mut t.opt, &mut t.rng, step);
    }
    // interrupted after k more steps, saved, loaded into fresh objects
    let mut u = trained();
    for step in 3..3 + k {
        train_step(&u.net, &mut u.store, &mut u.opt, &mut u.rng, step);
    }
    let bytes = save_bytes(&u.store, &[&u.opt, &u.rng]).unwrap();
    let (mut store, net, mut rng) = blank_with_net();
    let mut opt = Adam::new(0.01);
    load_bytes(&mut store, &mut [&mut opt, &mut rng], &bytes).unwrap();
    for step in 3 + k..3 + total {
        train_step(&net, &mut store, &mut opt, &mut rng, step);
    }
    assert_eq!(
        snapshot(&store, &opt, &rng),
        snapshot(&t.store, &t.opt, &t.rng)
    );

    // Sgd's momentum resumes too
    let run = |resume: bool| {
        let mut store = ParamStore::<f64>::new();
        let w = store.add("w", Tensor::vector(&[1.0, -1.0]));
        let mut sgd = Sgd::with_momentum(0.05, 0.9);
        for step in 0..6 {
            if resume && step == 3 {
                let bytes = save_bytes(&store, &[&sgd]).unwrap();
                let mut fresh = Sgd::with_momentum(0.05, 0.9);
                load_bytes(&mut store, &mut [&mut fresh], &bytes).unwrap();
                sgd = fresh;
            }
            let tape = Tape::new();
            let grads = (tape.param(&store, w).square() * (step as f64 + 1.0))
                .sum()
                .backward()
                .unwrap();
            sgd.step(&mut store, &grads).unwrap();
        }
        store.raw(w).clone()
    };
    assert_eq!(run(true), run(false));
}

/// Adam computes an update aside when it cannot bound it in advance (here
/// beta1^2 >= beta2); that path updates the stored value of a constrained
/// parameter, as the in-place one does: one step from zero moments moves
/// rho by lr * sign(g).
#[test]
fn adams_checked_path_updates_the_stored_value() {
    for (b1, b2) in [(0.9, 0.999), (0.99, 0.9)] {
        let mut store = ParamStore::<f64>::new();
        let s = store.add_positive("scale", Tensor::vector(&[0.5, 2.0]));
        let rho = store.raw(s).clone();
        let grads = {
            let tape = Tape::new();
            let read = tape.param(&store, s);
            (read * Tensor::vector(&[1.0, -1.0]))
                .sum()
                .backward()
                .unwrap()
        };
        let mut adam = Adam::new(0.01);
        adam.beta1 = b1;
        adam.beta2 = b2;
        adam.step(&mut store, &grads).unwrap();
        let moved: Vec<f64> = store
            .raw(s)
            .data()
            .iter()
            .zip(rho.data())
            .map(|(a, b)| a - b)
            .collect();
        assert!(
            (moved[0] + 0.01).abs() < 1e-9 && (moved[1] - 0.01).abs() < 1e-9,
            "beta1 {b1}, beta2 {b2}: rho moved by {moved:?}"
        );
    }
}
