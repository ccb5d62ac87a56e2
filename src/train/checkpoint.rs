//! Checkpoints of a [`ParamStore`] (and optionally Adam's state) in the
//! safetensors format, so that they open in PyTorch, candle or burn too.
//!
//! - Tensors are named after the parameters (stored, unconstrained values:
//!   `rho` for a positive parameter); Adam's moments go under
//!   `__adam__/m/<name>` and `__adam__/v/<name>`.
//! - The metadata holds `format = bayesgrad-checkpoint`, `version = 1`, a
//!   64-bit FNV-1a `checksum` over every tensor's name, dtype, shape and
//!   bytes, and Adam's step count.
//! - Writes are atomic: a temporary file in the same directory is written,
//!   flushed and synced, then renamed over the target; a crash mid-write
//!   leaves the previous checkpoint intact.
//! - Loads validate everything before touching the store: a failed load
//!   leaves the store (and optimizer) unchanged.
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::train::checkpoint;
//! let dir = std::env::temp_dir().join(format!("bayesgrad-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//! let mut store = ParamStore::<f32>::new();
//! let w = store.add("w", Tensor::vector(&[1.5, -2.0]));
//! checkpoint::save(&store, None, &path)?;
//! let mut fresh = ParamStore::<f32>::new();
//! let w2 = fresh.add("w", Tensor::vector(&[0.0, 0.0]));
//! checkpoint::load(&mut fresh, None, &path)?;
//! assert_eq!(fresh.value(w2), store.value(w));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::params::ParamStore;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use crate::train::optim::AdamState;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The checkpoint format version this build writes and reads.
pub const VERSION: u32 = 1;
const FORMAT: &str = "bayesgrad-checkpoint";
const ADAM_M: &str = "__adam__/m/";
const ADAM_V: &str = "__adam__/v/";

fn dtype_of<F: Element>() -> Dtype {
    if F::DTYPE == "F64" {
        Dtype::F64
    } else {
        Dtype::F32
    }
}

/// FNV-1a (64 bit) over names, dtypes, shapes and bytes, in name order.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, dtype, shape, data) in tensors {
        eat(name.as_bytes());
        eat(dtype.as_bytes());
        for d in shape {
            eat(&(*d as u64).to_le_bytes());
        }
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("{h:016x}")
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes the store (and Adam's state, if given) to `path` atomically.
pub fn save<F: Element>(
    store: &ParamStore<F>,
    adam: Option<&AdamState<F>>,
    path: &Path,
) -> Result<()> {
    write_atomic(path, &save_bytes(store, adam)?)
}

/// [`save`] to bytes in memory: the exact bytes `save` writes, which
/// [`load_bytes`] reads back.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::train::checkpoint;
/// let mut store = ParamStore::<f64>::new();
/// let w = store.add("w", Tensor::vector(&[0.25, -1.0]));
/// let bytes = checkpoint::save_bytes(&store, None)?;
/// let mut fresh = ParamStore::<f64>::new();
/// let w2 = fresh.add("w", Tensor::vector(&[0.0, 0.0]));
/// checkpoint::load_bytes(&mut fresh, None, &bytes)?;
/// assert_eq!(fresh.value(w2), store.value(w));
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub fn save_bytes<F: Element>(
    store: &ParamStore<F>,
    adam: Option<&AdamState<F>>,
) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for p in store.params() {
        let v = store.value(p);
        tensors.insert(
            store.name(p).to_string(),
            (v.shape().to_vec(), F::to_le_bytes(v.data())),
        );
        if let Some(Some((m, s))) = adam.and_then(|a| a.moments.get(p.index())) {
            tensors.insert(
                format!("{ADAM_M}{}", store.name(p)),
                (m.shape().to_vec(), F::to_le_bytes(m.data())),
            );
            tensors.insert(
                format!("{ADAM_V}{}", store.name(p)),
                (s.shape().to_vec(), F::to_le_bytes(s.data())),
            );
        }
    }
    let dtype = dtype_of::<F>();
    let sum = checksum(
        tensors
            .iter()
            .map(|(n, (s, d))| (n.as_str(), format!("{dtype:?}"), s.as_slice(), d.as_slice())),
    );
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("checksum".to_string(), sum),
    ]);
    if let Some(a) = adam {
        meta.insert("adam_step".to_string(), a.step.to_string());
    }
    let views = tensors
        .iter()
        .map(|(n, (s, d))| {
            Ok((
                n.clone(),
                TensorView::new(dtype, s.clone(), d)
                    .map_err(|e| Error::invalid("checkpoint::save", e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut bytes = safetensors::serialize(views, Some(meta.clone().into_iter().collect()))
        .map_err(|e| Error::invalid("checkpoint::save", e.to_string()))?;
    sort_metadata(&mut bytes, &meta);
    Ok(bytes)
}

/// Puts the `__metadata__` entries of serialized bytes in key order.
///
/// safetensors (0.4 through 0.8, which takes them as a `HashMap`) writes them in per-instance random order
/// (upstream issue safetensors#584), so two saves of one state would differ
/// in bytes and in their hashes. Sorting permutes entries of a JSON object
/// and keeps the header's length. Our keys and values need no JSON escaping;
/// if the header is not laid out as expected, the (valid, unsorted) bytes are
/// left as they are, and the determinism test fails.
fn sort_metadata(bytes: &mut [u8], meta: &BTreeMap<String, String>) {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !meta.iter().all(|(k, v)| plain(k) && plain(v)) {
        return;
    }
    let entries: Vec<String> = meta
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    let sorted = format!("{{{}}}", entries.join(","));
    let start = 8 + br#"{"__metadata__":"#.len();
    let Some(found) = bytes.get(8..start + sorted.len()) else {
        return;
    };
    let (prefix, object) = found.split_at(start - 8);
    let mut written: Vec<&[u8]> = object
        .strip_prefix(b"{")
        .and_then(|o| o.strip_suffix(b"}"))
        .map(|o| o.split(|&b| b == b',').collect())
        .unwrap_or_default();
    written.sort_unstable();
    let expected: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).collect();
    if prefix == br#"{"__metadata__":"# && written == expected {
        bytes[start..start + sorted.len()].copy_from_slice(sorted.as_bytes());
    }
}

/// Temporary file, flush, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        message: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.flush().map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        // Persist the rename itself (best effort: not every platform can open a directory).
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().ok();
        }
        Ok(())
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

/// Reads a checkpoint into `store` (and `adam`, if given). Every parameter
/// of the store must be in the file with its shape and dtype, and nothing
/// else may be; on any error the store and optimizer are unchanged.
pub fn load<F: Element>(
    store: &mut ParamStore<F>,
    adam: Option<&mut AdamState<F>>,
    path: &Path,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    load_bytes(store, adam, &bytes)
}

/// [`load`] from bytes in memory.
pub fn load_bytes<F: Element>(
    store: &mut ParamStore<F>,
    adam: Option<&mut AdamState<F>>,
    bytes: &[u8],
) -> Result<()> {
    if bytes.len() < 8 {
        return Err(Error::Truncated {
            reason: format!(
                "{} bytes, shorter than the 8-byte header length",
                bytes.len()
            ),
        });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > (bytes.len() - 8) as u64 {
        // A header length beyond any sane size means this is not a safetensors file at all.
        if header_len > 100_000_000 {
            return Err(Error::NotACheckpoint {
                reason: format!("header length {header_len} is implausible"),
            });
        }
        return Err(Error::Truncated {
            reason: format!(
                "header of {header_len} bytes, but only {} follow",
                bytes.len() - 8
            ),
        });
    }
    let (n, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| match e {
        // the header is intact but the tensor data it describes is cut short
        SafeTensorError::MetadataIncompleteBuffer => Error::Truncated {
            reason: "the tensor data is shorter than the header says".into(),
        },
        e => Error::NotACheckpoint {
            reason: format!("{e:?}"),
        },
    })?;
    let data_len = bytes.len() - 8 - n;
    let needed = metadata
        .tensors()
        .values()
        .map(|t| t.data_offsets.1)
        .max()
        .unwrap_or(0);
    if needed > data_len {
        return Err(Error::Truncated {
            reason: format!("tensor data needs {needed} bytes, file has {data_len}"),
        });
    }
    let meta = metadata.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::NotACheckpoint {
            reason: "metadata lacks format = bayesgrad-checkpoint".into(),
        });
    }
    match meta.get("version") {
        Some(v) if v == &VERSION.to_string() => {}
        other => {
            return Err(Error::UnsupportedVersion {
                found: other.cloned().unwrap_or_else(|| "none".into()),
                supported: VERSION,
            })
        }
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::NotACheckpoint {
        reason: format!("{e:?}"),
    })?;
    let mut named: Vec<(String, TensorView<'_>)> = st.tensors();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let found = checksum(
        named
            .iter()
            .map(|(n, t)| (n.as_str(), format!("{:?}", t.dtype()), t.shape(), t.data())),
    );
    let expected = meta.get("checksum").cloned().unwrap_or_default();
    if found != expected {
        return Err(Error::ChecksumMismatch { expected, found });
    }

    let views: HashMap<&str, &TensorView<'_>> =
        named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let decode = |name: &str, t: &TensorView<'_>, expected_shape: &[usize]| -> Result<Tensor<F>> {
        if t.dtype() != dtype_of::<F>() {
            return Err(Error::DtypeMismatch {
                name: name.into(),
                expected: F::DTYPE.into(),
                found: format!("{:?}", t.dtype()),
            });
        }
        if t.shape() != expected_shape {
            return Err(Error::ParamShapeMismatch {
                name: name.into(),
                expected: expected_shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        let data = F::from_le_bytes(t.data()).ok_or_else(|| Error::Truncated {
            reason: format!("tensor '{name}' has a partial element"),
        })?;
        Tensor::from_vec(data, expected_shape)
    };
    let mut values = Vec::with_capacity(store.len());
    let mut moments = Vec::with_capacity(store.len());
    for p in store.params() {
        let name = store.name(p);
        let shape = store.value(p).shape();
        let t = views
            .get(name)
            .ok_or_else(|| Error::MissingParameter { name: name.into() })?;
        values.push((p, decode(name, t, shape)?));
        let m = views
            .get(format!("{ADAM_M}{name}").as_str())
            .map(|t| decode(name, t, shape))
            .transpose()?;
        let v = views
            .get(format!("{ADAM_V}{name}").as_str())
            .map(|t| decode(name, t, shape))
            .transpose()?;
        moments.push(m.zip(v));
    }
    for name in views.keys() {
        let base = name
            .strip_prefix(ADAM_M)
            .or_else(|| name.strip_prefix(ADAM_V))
            .unwrap_or(name);
        if store.get(base).is_none() {
            return Err(Error::UnexpectedParameter {
                name: name.to_string(),
            });
        }
    }
    let step = match (meta.get("adam_step"), &adam) {
        (Some(s), Some(_)) => Some(s.parse::<u64>().map_err(|_| Error::NotACheckpoint {
            reason: format!("adam_step '{s}' is not a number"),
        })?),
        (None, Some(_)) => {
            return Err(Error::NotACheckpoint {
                reason: "the checkpoint holds no optimizer state".into(),
            })
        }
        _ => None,
    };
    // Everything is valid: apply.
    for (p, v) in values {
        store.set_value(p, v)?;
    }
    if let (Some(adam), Some(step)) = (adam, step) {
        adam.step = step;
        adam.moments = moments;
    }
    Ok(())
}
