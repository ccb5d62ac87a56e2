//! Checkpoints: exact round trips, every loading error from a hand-damaged
//! file (the store left unchanged), and a resumed run that is bit-identical
//! to an uninterrupted one.

use bayesgrad::Batch;
use bayesgrad::prelude::*;
use bayesgrad::train::checkpoint::{self, load_bytes};
use std::path::PathBuf;

/// A fresh directory, removed when dropped (a failing test's too).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("bayesgrad-ckpt-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn store_f<F: Element>() -> ParamStore<F> {
    let mut s = ParamStore::new();
    s.add(
        "a",
        Tensor::from_fn(&[2, 3], |i| F::lit(i as f64 * 0.1 - 0.25)),
    );
    s.add_positive("b", Tensor::scalar(F::lit(0.7)));
    s.add(
        "c/with/slashes",
        Tensor::from_fn(&[4], |i| F::lit(1.0 / (i as f64 + 3.0))),
    );
    s
}

fn round_trip<F: Element>() {
    let dir = temp_dir(F::DTYPE);
    let path = dir.0.join("model.safetensors");
    let store = store_f::<F>();
    checkpoint::save(&store, &[], &path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        checkpoint::save_bytes(&store, &[]).unwrap(),
        "save writes exactly save_bytes"
    );
    let mut fresh = ParamStore::<F>::new();
    fresh.add("a", Tensor::zeros(&[2, 3]));
    fresh.add_positive("b", Tensor::scalar(F::one()));
    fresh.add("c/with/slashes", Tensor::zeros(&[4]));
    checkpoint::load(&mut fresh, &mut [], &path).unwrap();
    for (p, q) in store.params().zip(fresh.params()) {
        let (x, y) = (store.raw(p), fresh.raw(q));
        assert_eq!(x.shape(), y.shape());
        // bit-exact
        assert!(
            x.data()
                .iter()
                .zip(y.data())
                .all(|(a, b)| a.to_f64().unwrap().to_bits() == b.to_f64().unwrap().to_bits())
        );
    }
}

#[test]
fn round_trip_is_exact_in_f32_and_f64() {
    round_trip::<f32>();
    round_trip::<f64>();
}

#[test]
fn a_save_leaves_no_temporary_file() {
    let dir = temp_dir("plain");
    let path = dir.0.join("m.safetensors");
    checkpoint::save(&store_f::<f32>(), &[], &path).unwrap();
    checkpoint::save(&store_f::<f32>(), &[], &path).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["m.safetensors"]);
}

/// The reference implementation of the format reads what `save` writes
/// (same names, shapes, bytes and metadata; the same header up to the
/// order of the metadata, which it does not keep), and `load` reads what
/// it writes.
#[cfg(feature = "oracle")]
#[test]
fn the_reference_safetensors_reads_our_files_and_writes_files_we_read() {
    use safetensors::tensor::TensorView;
    let store = store_f::<f64>();
    let ours = checkpoint::save_bytes(&store, &[]).unwrap();
    let st = safetensors::SafeTensors::deserialize(&ours).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c/with/slashes"]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&ours).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["format"], "bayesgrad-checkpoint");
    for name in &names {
        let p = store.get(name).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), store.raw(p).shape());
        let bytes: Vec<u8> = store
            .raw(p)
            .data()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(t.data(), bytes);
    }
    // the reference writer, given the same tensors and metadata
    let views: Vec<(String, TensorView<'_>)> = names
        .iter()
        .map(|n| (n.clone(), st.tensor(n).unwrap()))
        .collect();
    let theirs = safetensors::serialize(views, Some(meta)).unwrap();
    assert_eq!(theirs.len(), ours.len());
    let header_len = u64::from_le_bytes(ours[..8].try_into().unwrap()) as usize;
    assert_eq!(theirs[..8], ours[..8]);
    let json = |b: &[u8]| crate::json::parse(&b[8..8 + header_len]).unwrap();
    assert_eq!(json(&theirs), json(&ours));
    assert_eq!(theirs[8 + header_len..], ours[8 + header_len..]);
    let mut fresh = store_f::<f64>();
    for p in fresh.params().collect::<Vec<_>>() {
        let zeros = Tensor::zeros(fresh.raw(p).shape());
        fresh.set_raw(p, zeros).unwrap();
    }
    load_bytes(&mut fresh, &mut [], &theirs).unwrap();
    for name in &names {
        let (p, q) = (fresh.get(name).unwrap(), store.get(name).unwrap());
        assert_eq!(fresh.raw(p), store.raw(q));
    }
}

/// What `save` writes (`round_trip` checks that the two agree).
fn good_bytes() -> Vec<u8> {
    checkpoint::save_bytes(&store_f::<f64>(), &[]).unwrap()
}

/// Loads into a copy of the original store and checks that a failure leaves it unchanged.
fn load_err(bytes: &[u8], store: &mut ParamStore<f64>) -> Error {
    let before: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    let err = load_bytes(store, &mut [], bytes).unwrap_err();
    let after: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    assert_eq!(before, after, "a failed load modified the store ({err})");
    err
}

fn zeroed_store() -> ParamStore<f64> {
    let mut s = ParamStore::new();
    s.add("a", Tensor::zeros(&[2, 3]));
    s.add_positive("b", Tensor::scalar(1.0));
    s.add("c/with/slashes", Tensor::zeros(&[4]));
    s
}

#[test]
fn damaged_files_give_specific_errors() {
    let good = good_bytes();
    let mut store = zeroed_store();
    load_bytes(&mut store, &mut [], &good).unwrap();
    let mut store = zeroed_store();

    // a flipped byte in the tensor data
    let mut flipped = good.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    assert!(matches!(
        load_err(&flipped, &mut store),
        Error::ChecksumMismatch { .. }
    ));

    // truncated at several offsets: inside the length prefix, the header, the data
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for cut in [
        0,
        5,
        8,
        20,
        8 + header_len / 2,
        8 + header_len + 3,
        good.len() - 1,
    ] {
        let err = load_err(&good[..cut], &mut store);
        assert!(
            matches!(err, Error::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
    }

    // not a checkpoint at all
    assert!(matches!(
        load_err(b"hello, this is not a checkpoint file", &mut store),
        Error::NotACheckpoint { .. }
    ));
    // a plain safetensors file, without the checkpoint's metadata
    let mut plain = Vec::new();
    let header = br#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}     "#;
    plain.extend_from_slice(&(header.len() as u64).to_le_bytes());
    plain.extend_from_slice(header);
    plain.extend_from_slice(&[0u8; 8]);
    assert!(matches!(
        load_err(&plain, &mut store),
        Error::NotACheckpoint { .. }
    ));

    // wrong version: rewrite the metadata (same length) "version":"2" -> "version":"9"
    let text = String::from_utf8_lossy(&good[8..8 + header_len]).to_string();
    let patched = text.replacen("\"version\":\"2\"", "\"version\":\"9\"", 1);
    assert_ne!(text, patched, "the header should hold the version: {text}");
    let mut wrong = good.clone();
    wrong[8..8 + header_len].copy_from_slice(patched.as_bytes());
    assert!(
        matches!(load_err(&wrong, &mut store), Error::UnsupportedVersion { found, supported: 2 } if found == "9")
    );

    // a key written twice, which a lenient reader would resolve silently one way or the other
    let doubled = text.replacen(
        "\"version\":\"2\"",
        "\"version\":\"2\",\"version\":\"9\"",
        1,
    );
    let mut twice = (doubled.len() as u64).to_le_bytes().to_vec();
    twice.extend_from_slice(doubled.as_bytes());
    twice.extend_from_slice(&good[8 + header_len..]);
    let err = load_err(&twice, &mut store);
    assert!(
        matches!(&err, Error::NotACheckpoint { reason } if reason.contains("a key repeated in one object")),
        "{err}"
    );
}

#[test]
fn mismatched_stores_name_the_parameter() {
    let good = good_bytes();
    // missing: the store has a parameter the file lacks
    let mut s = zeroed_store();
    s.add("extra", Tensor::zeros(&[1]));
    assert_eq!(
        load_err(&good, &mut s),
        Error::MissingParameter {
            name: "extra".into()
        }
    );
    // unexpected: the file has a tensor the store lacks
    let mut s = ParamStore::<f64>::new();
    s.add("a", Tensor::zeros(&[2, 3]));
    s.add_positive("b", Tensor::scalar(1.0));
    assert_eq!(
        load_err(&good, &mut s),
        Error::UnexpectedParameter {
            name: "c/with/slashes".into()
        }
    );
    // shape
    let mut s = ParamStore::<f64>::new();
    s.add("a", Tensor::zeros(&[3, 2]));
    s.add_positive("b", Tensor::scalar(1.0));
    s.add("c/with/slashes", Tensor::zeros(&[4]));
    assert_eq!(
        load_err(&good, &mut s),
        Error::ParamShapeMismatch {
            name: "a".into(),
            expected: vec![3, 2],
            found: vec![2, 3]
        }
    );
    // dtype: an f32 store reading an f64 file
    let mut s32 = ParamStore::<f32>::new();
    s32.add("a", Tensor::zeros(&[2, 3]));
    let err = load_bytes(&mut s32, &mut [], &good).unwrap_err();
    assert_eq!(
        err,
        Error::DtypeMismatch {
            name: "a".into(),
            expected: "F32".into(),
            found: "F64".into()
        }
    );
    assert!(err.to_string().contains("'a'"));
}

/// One training step of a small Bayesian network, with noise seeded by the step number.
fn train_step(
    net: &Sequential<f64>,
    store: &mut ParamStore<f64>,
    opt: &mut Adam<f64>,
    step: usize,
) {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    let x = Tensor::from_fn(&[8, 3], |i| ((i + step) as f64 * 0.37).sin());
    let y = Tensor::from_fn(&[8, 1], |i| ((i * 3 + step) as f64 * 0.11).cos());
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, store, &mut rng);
    let mean = net.forward(&mut cx, tape.constant(x)).unwrap();
    let lik = Normal::new(mean, tape.scalar(0.5)).unwrap();
    let elbo = Elbo::new(KlWeight::PerExample { num_examples: 80 });
    let out = elbo
        .loss_from_likelihood(
            cx.divergences(),
            &lik,
            tape.constant(y),
            Batch {
                index: 0,
                size: 8,
                step,
            },
        )
        .unwrap();
    opt.step(store, &out.loss.backward().unwrap()).unwrap();
}

fn model(store: &mut ParamStore<f64>) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(0);
    Sequential::new()
        .push(DenseFlipout::new(store, "h", 3, 6, &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseFlipout::new(store, "o", 6, 1, &mut rng).unwrap())
}

#[test]
fn resumed_training_is_bit_identical() {
    let (k, total) = (7, 15);
    let mut store = ParamStore::new();
    let net = model(&mut store);
    let mut opt = Adam::new(0.01);
    for step in 0..total {
        train_step(&net, &mut store, &mut opt, step);
    }

    let dir = temp_dir("resume");
    let path = dir.0.join("ckpt.safetensors");
    let mut first = ParamStore::new();
    let net1 = model(&mut first);
    let mut opt1 = Adam::new(0.01);
    for step in 0..k {
        train_step(&net1, &mut first, &mut opt1, step);
    }
    checkpoint::save(&first, &[&opt1], &path).unwrap();
    drop((first, net1, opt1));

    let mut resumed = ParamStore::new();
    let net2 = model(&mut resumed);
    let mut opt2 = Adam::new(0.01);
    checkpoint::load(&mut resumed, &mut [&mut opt2], &path).unwrap();
    assert_eq!(opt2.state().step, k as u64);
    for step in k..total {
        train_step(&net2, &mut resumed, &mut opt2, step);
    }
    for (p, q) in store.params().zip(resumed.params()) {
        let same = store
            .raw(p)
            .data()
            .iter()
            .zip(resumed.raw(q).data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} differs after resuming", store.name(p));
    }
}

/// safetensors writes the metadata in a random order; `save_bytes`
/// sorts it, so one state always gives the same bytes (and file hash).
#[test]
fn a_state_always_saves_to_the_same_bytes() {
    let mut store = ParamStore::new();
    let net = model(&mut store);
    let mut opt = Adam::new(0.01);
    for step in 0..2 {
        train_step(&net, &mut store, &mut opt, step);
    }
    let first = checkpoint::save_bytes(&store, &[&opt]).unwrap();
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&first[8..8 + header_len]).unwrap();
    let positions: Vec<usize> = [
        "adam_step",
        "checksum",
        "constraints",
        "format",
        "parts",
        "version",
    ]
    .iter()
    .map(|k| header.find(&format!("\"{k}\":")).expect(k))
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "metadata keys in order: {header}"
    );
    for _ in 0..16 {
        assert_eq!(checkpoint::save_bytes(&store, &[&opt]).unwrap(), first);
    }
}

/// Names that JSON must escape (a quote, a backslash, a newline, a tab,
/// non-ASCII) are written escaped and read back as they were.
#[test]
fn names_that_json_escapes_round_trip() {
    let names = [
        "q\"uote",
        "back\\slash",
        "new\nline",
        "t\tab",
        "σ_scale",
        "end",
    ];
    let store = |values: bool| {
        let mut s = ParamStore::<f64>::new();
        for (i, n) in names.iter().enumerate() {
            let v = if values { i as f64 + 0.5 } else { 0.0 };
            s.add(*n, Tensor::vector(&[v, -v]));
        }
        s
    };
    let saved = store(true);
    let bytes = checkpoint::save_bytes(&saved, &[]).unwrap();
    let mut fresh = store(false);
    load_bytes(&mut fresh, &mut [], &bytes).unwrap();
    for n in names {
        let (p, q) = (fresh.get(n).unwrap(), saved.get(n).unwrap());
        assert_eq!(fresh.raw(p), saved.raw(q), "{n:?}");
    }
    #[cfg(feature = "oracle")]
    {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut read: Vec<String> = st.names().into_iter().map(String::from).collect();
        read.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(read, want);
    }
}
