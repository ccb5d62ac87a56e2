//! Checkpoints of a [`ParamStore`] and of whatever else training must
//! resume (optimizers, the RNG) in the safetensors format, so that they
//! open in PyTorch, candle or burn too.
//!
//! - Tensors are named after the parameters (stored, unconstrained values:
//!   `rho` for a positive parameter). The state of each [`Resumable`] part
//!   goes under `__<kind>__/<slot>/<parameter>` (Adam's moments:
//!   `__adam__/m/w`, `__adam__/v/w`) and into metadata entries
//!   `<kind>_<key>`. Parameter names starting with `__` are refused when
//!   added, so no parameter can collide with them or with safetensors'
//!   `__metadata__`.
//! - The metadata holds `format = bayesgrad-checkpoint`, `version = 2`,
//!   each parameter's [`Constraint`] (`constraints`, in name order), the
//!   parts saved (`parts`), and a 64-bit FNV-1a `checksum` over every other
//!   metadata entry and every tensor's name, dtype, shape and bytes: no
//!   byte that affects a load is outside it.
//! - Writes are atomic: a uniquely named temporary file in the target's
//!   directory is written, synced and renamed over the target, which keeps
//!   its permissions. Saves from many threads or processes to one path do
//!   not disturb each other (the last rename wins), a crash mid-write leaves
//!   the previous checkpoint intact, and temporary files left by writers
//!   that died are removed by the next save to that path.
//! - Loads validate everything before touching the store or any part: a
//!   failed load leaves them unchanged.
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::train::checkpoint;
//! let dir = std::env::temp_dir().join(format!("bayesgrad-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//! let mut store = ParamStore::<f32>::new();
//! let w = store.add("w", Tensor::vector(&[1.5, -2.0]));
//! checkpoint::save(&store, &[], &path)?;
//! let mut fresh = ParamStore::<f32>::new();
//! let w2 = fresh.add("w", Tensor::vector(&[0.0, 0.0]));
//! checkpoint::load(&mut fresh, &mut [], &path)?;
//! assert_eq!(fresh.value(w2), store.value(w));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! # Resuming bit for bit
//!
//! Save the optimizer and the RNG with the parameters. `rand`'s `StdRng`
//! cannot be saved (its state is private), so a loop that must resume
//! exactly draws from a [`ResumableRng`](crate::train::ResumableRng):
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::train::{checkpoint, ResumableRng};
//! let mut store = ParamStore::<f64>::new();
//! let w = store.add("w", Tensor::vector(&[0.5, -0.5]));
//! let (mut opt, mut rng) = (Adam::new(0.1), ResumableRng::seed_from_u64(7));
//! let bytes = checkpoint::save_bytes(&store, &[&opt, &rng])?;
//! let (mut opt2, mut rng2) = (Adam::new(0.1), ResumableRng::seed_from_u64(0));
//! let mut again = ParamStore::<f64>::new();
//! again.add("w", Tensor::zeros(&[2]));
//! checkpoint::load_bytes(&mut again, &mut [&mut opt2, &mut rng2], &bytes)?;
//! assert_eq!(rng.next_u64(), rng2.next_u64());
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::params::{Constraint, ParamStore};
use crate::error::{Error, Result};
use crate::json;
use crate::tensor::{Element, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The checkpoint format version this build writes and reads.
pub const VERSION: u32 = 2;
const FORMAT: &str = "bayesgrad-checkpoint";

/// State that a checkpoint saves besides the parameters and restores on
/// load: an optimizer's moments, an RNG's position. [`Adam`](crate::Adam),
/// [`Sgd`](crate::Sgd) and [`ResumableRng`](crate::train::ResumableRng)
/// implement it; so can a schedule or a sampler of your own.
///
/// Loading is all-or-nothing: [`Resumable::check_state`] is called on every
/// part (and every parameter is validated) before any
/// [`Resumable::load_state`].
pub trait Resumable<F: Element> {
    /// A short name, unique among the parts of one checkpoint: lowercase
    /// ASCII letters and digits (`"adam"`).
    fn kind(&self) -> &'static str;
    /// Writes the state.
    fn save_state(&self, store: &ParamStore<F>, out: &mut StateWriter<F>) -> Result<()>;
    /// Checks, changing nothing, that `state` can be restored into this
    /// part for `store`.
    fn check_state(&self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()>;
    /// Restores the state; called only after every check passed.
    fn load_state(&mut self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()>;
}

/// Where a [`Resumable`] part writes its state.
pub struct StateWriter<F> {
    kind: &'static str,
    meta: BTreeMap<String, String>,
    tensors: BTreeMap<String, Tensor<F>>,
}

impl<F: Element> StateWriter<F> {
    /// A value under `key` (letters, digits and `_`; the value may hold
    /// letters, digits and `-_.:;+`).
    pub fn scalar(&mut self, key: &str, value: impl ToString) -> Result<()> {
        let value = value.to_string();
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || !plain(&value) {
            return Err(Error::invalid(
                "checkpoint::save",
                format!(
                    "state '{}': key '{key}' or value '{value}' has characters a checkpoint does not store",
                    self.kind
                ),
            ));
        }
        self.meta.insert(format!("{}_{key}", self.kind), value);
        Ok(())
    }

    /// A tensor for the parameter named `param`, in slot `slot` (`"m"`).
    pub fn tensor(&mut self, slot: &str, param: &str, value: &Tensor<F>) {
        self.tensors
            .insert(state_name(self.kind, slot, param), value.clone());
    }
}

/// Where a [`Resumable`] part reads its state back.
pub struct StateReader<'a, F> {
    kind: &'static str,
    meta: &'a BTreeMap<String, String>,
    tensors: &'a HashMap<String, Tensor<F>>,
}

impl<F: Element> StateReader<'_, F> {
    /// The value saved under `key`.
    ///
    /// # Errors
    /// [`Error::NotACheckpoint`] naming the key when it is missing.
    pub fn scalar(&self, key: &str) -> Result<&str> {
        let full = format!("{}_{key}", self.kind);
        self.meta
            .get(&full)
            .map(String::as_str)
            .ok_or_else(|| Error::NotACheckpoint {
                reason: format!("metadata lacks '{full}'"),
            })
    }

    /// The tensor saved for the parameter `param` in slot `slot`, if any
    /// (its dtype is checked; its shape is the part's to check).
    pub fn tensor(&self, slot: &str, param: &str) -> Option<&Tensor<F>> {
        self.tensors.get(&state_name(self.kind, slot, param))
    }
}

fn state_name(kind: &str, slot: &str, param: &str) -> String {
    format!("__{kind}__/{slot}/{param}")
}

/// Characters that a metadata key or value may hold: they need no escaping
/// in JSON.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:;+".contains(&b))
}

fn encode_constraint(c: Constraint) -> String {
    match c {
        Constraint::Real => "real".into(),
        Constraint::Positive { eps } => format!("positive:{eps:e}"),
        Constraint::UnitInterval => "unit_interval".into(),
    }
}

/// FNV-1a (64 bit) over every metadata entry but the checksum itself, then
/// every tensor's name, dtype, shape and bytes, in name order. Each step
/// of FNV-1a is a bijection of its state, so a change of any one byte
/// always changes the sum.
fn checksum<'a>(
    meta: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (k, v) in meta.iter().filter(|(k, _)| *k != "checksum") {
        eat(&(k.len() as u64).to_le_bytes());
        eat(k.as_bytes());
        eat(&(v.len() as u64).to_le_bytes());
        eat(v.as_bytes());
    }
    for (name, dtype, shape, data) in tensors {
        eat(&(name.len() as u64).to_le_bytes());
        eat(name.as_bytes());
        eat(dtype.as_bytes());
        eat(&(shape.len() as u64).to_le_bytes());
        for d in shape {
            eat(&(*d as u64).to_le_bytes());
        }
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("{h:016x}")
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes the store and the state of `parts` (optimizers, the RNG) to
/// `path` atomically.
pub fn save<F: Element>(
    store: &ParamStore<F>,
    parts: &[&dyn Resumable<F>],
    path: &Path,
) -> Result<()> {
    write_atomic(path, &save_bytes(store, parts)?)
}

/// [`save`] to bytes in memory: the exact bytes `save` writes, which
/// [`load_bytes`] reads back.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::train::checkpoint;
/// let mut store = ParamStore::<f64>::new();
/// let w = store.add("w", Tensor::vector(&[0.25, -1.0]));
/// let bytes = checkpoint::save_bytes(&store, &[])?;
/// let mut fresh = ParamStore::<f64>::new();
/// let w2 = fresh.add("w", Tensor::vector(&[0.0, 0.0]));
/// checkpoint::load_bytes(&mut fresh, &mut [], &bytes)?;
/// assert_eq!(fresh.value(w2), store.value(w));
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// A parameter name starting with `__` (reserved), two parts of one kind,
/// a part whose state cannot be written.
pub fn save_bytes<F: Element>(
    store: &ParamStore<F>,
    parts: &[&dyn Resumable<F>],
) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, Tensor<F>> = BTreeMap::new();
    let mut constraints: BTreeMap<&str, String> = BTreeMap::new();
    for p in store.params() {
        let name = store.name(p);
        if name.starts_with("__") {
            return Err(Error::invalid(
                "checkpoint::save",
                format!("parameter name '{name}' starts with '__', which checkpoints reserve"),
            ));
        }
        tensors.insert(name.to_string(), store.raw(p).clone());
        constraints.insert(name, encode_constraint(store.constraint(p)?));
    }
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        (
            "constraints".to_string(),
            constraints.into_values().collect::<Vec<_>>().join(";"),
        ),
    ]);
    let mut kinds = Vec::new();
    for part in parts {
        let kind = part.kind();
        let valid = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid || kinds.contains(&kind) {
            return Err(Error::invalid(
                "checkpoint::save",
                format!(
                    "state kind '{kind}' is not lowercase letters and digits, or is given twice"
                ),
            ));
        }
        kinds.push(kind);
        let mut out = StateWriter {
            kind,
            meta: BTreeMap::new(),
            tensors: BTreeMap::new(),
        };
        part.save_state(store, &mut out)?;
        meta.extend(out.meta);
        tensors.extend(out.tensors);
    }
    meta.insert("parts".to_string(), kinds.join(";"));
    let dtype = F::DTYPE;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec(), F::to_le_bytes(t.data())))
        .collect();
    let sum = checksum(
        &meta,
        bytes
            .iter()
            .map(|(n, s, d)| (n.as_str(), dtype.to_string(), s.as_slice(), d.as_slice())),
    );
    meta.insert("checksum".to_string(), sum);
    if !meta.iter().all(|(k, v)| plain(k) && plain(v)) {
        return Err(Error::invalid(
            "checkpoint::save",
            "metadata holds characters a checkpoint does not store",
        ));
    }
    Ok(serialize(&meta, dtype, &bytes))
}

/// The safetensors layout: the header's length as a little-endian `u64`,
/// the JSON header (`__metadata__` first, then each tensor's dtype, shape
/// and byte range, in name order), padded with spaces to a multiple of 8
/// bytes, then the tensors' bytes back to back in the same order.
///
/// This is the layout the reference implementation writes for the same
/// tensors (one dtype, so its order is the name order); the oracle tests
/// check that its header is the same JSON and its data the same bytes.
fn serialize(
    meta: &BTreeMap<String, String>,
    dtype: &str,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
) -> Vec<u8> {
    let mut header = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in meta.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        json::write_string(&mut header, k);
        header.push(':');
        json::write_string(&mut header, v);
    }
    header.push('}');
    let mut offset = 0;
    for (name, shape, data) in tensors {
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push(',');
        json::write_string(&mut header, name);
        header.push_str(&format!(
            ":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            shape.join(","),
            offset + data.len()
        ));
        offset += data.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

/// Writes `bytes` to a uniquely named temporary file beside `path`, syncs
/// it, gives it the target's permissions (0644 for a new file on Unix) and
/// renames it over the target, then syncs the directory. Temporary files of
/// this target left by dead processes are removed first.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    remove_stale_temporaries(dir, &file_name);
    let (tmp_path, mut file) = create_temporary(dir, &file_name)
        .map_err(|e| io_err(path, format!("cannot create a temporary file: {e}")))?;
    let written = (|| {
        file.write_all(bytes)?;
        file.flush()?;
        let permissions = match std::fs::metadata(path) {
            Ok(m) => Some(m.permissions()),
            Err(_) => default_permissions(),
        };
        if let Some(p) = permissions {
            file.set_permissions(p)?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp_path, path)
    })();
    if let Err(e) = written {
        std::fs::remove_file(&tmp_path).ok();
        return Err(io_err(path, e));
    }
    // Persist the rename itself (best effort: not every platform can open a directory).
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

#[cfg(unix)]
fn default_permissions() -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn default_permissions() -> Option<std::fs::Permissions> {
    None
}

/// Creates `.<file_name>.<pid>.<n>.tmp` in `dir`, new (never an existing
/// file), with `n` counting the saves of this process.
fn create_temporary(
    dir: &Path,
    file_name: &str,
) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            // left by an earlier process with this pid: take the next number
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes `.<file_name>.<pid>.*.tmp` files in `dir` whose writer process
/// no longer runs (Linux, where `/proc/<pid>` tells; elsewhere nothing is
/// removed). Failures are ignored: cleaning is a courtesy, not the save.
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = format!(".{file_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|r| r.ends_with(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_file(entry.path()).ok();
        }
    }
}

/// Reads a checkpoint into `store` and `parts`. Every parameter of the
/// store must be in the file with its shape, dtype and constraint, and no
/// other parameter may be; every part must have been saved. On any error
/// the store and the parts are unchanged.
pub fn load<F: Element>(
    store: &mut ParamStore<F>,
    parts: &mut [&mut dyn Resumable<F>],
    path: &Path,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    load_bytes(store, parts, &bytes)
}

/// One tensor as the header describes it.
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    /// Its byte range within the data that follows the header.
    range: std::ops::Range<usize>,
}

/// What the JSON header says: its length, its `__metadata__` entries and
/// its tensors, in name order, each checked to be a dtype, a shape and a
/// byte range of the right length, the ranges tiling the data exactly.
struct Header {
    len: usize,
    meta: BTreeMap<String, String>,
    entries: Vec<Entry>,
}

/// The size in bytes of a safetensors dtype's element.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

fn read_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 8 {
        return Err(Error::Truncated {
            reason: format!(
                "{} bytes, shorter than the 8-byte header length",
                bytes.len()
            ),
        });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        // A header length beyond any sane size means this is not a safetensors file at all.
        if header_len > 100_000_000 {
            return Err(Error::NotACheckpoint {
                reason: format!("header length {header_len} is implausible"),
            });
        }
        return Err(Error::Truncated {
            reason: format!("header of {header_len} bytes, but only {available} follow"),
        });
    }
    let n = header_len as usize;
    let bad = |reason: String| Error::NotACheckpoint { reason };
    let header =
        json::parse(&bytes[8..8 + n]).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let object = header
        .as_object()
        .ok_or_else(|| bad("the header is not a JSON object".into()))?;
    let mut meta = BTreeMap::new();
    let mut entries = Vec::with_capacity(object.len());
    for (name, value) in object {
        if name == "__metadata__" {
            let m = value
                .as_object()
                .ok_or_else(|| bad("__metadata__ is not a JSON object".into()))?;
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("metadata entry '{k}' is not a string")))?;
                meta.insert(k.clone(), v.to_string());
            }
            continue;
        }
        entries.push(
            read_entry(name, value)
                .map_err(|what| bad(format!("tensor '{name}' in the header: {what}")))?,
        );
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header {
        len: n,
        meta,
        entries,
    })
}

/// One tensor's description: exactly `dtype`, `shape` and `data_offsets`,
/// with as many bytes in the range as the shape has elements of the dtype.
fn read_entry(name: &str, value: &json::Value) -> std::result::Result<Entry, String> {
    let fields = value.as_object().ok_or("not a JSON object")?;
    if fields.len() != 3 {
        return Err("expected exactly dtype, shape and data_offsets".into());
    }
    let dtype = value
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or("no dtype string")?;
    let size = dtype_size(dtype).ok_or_else(|| format!("unknown dtype {dtype}"))?;
    let index = |v: &json::Value| v.as_u64().and_then(|v| usize::try_from(v).ok());
    let shape = value
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|s| s.iter().map(index).collect::<Option<Vec<usize>>>())
        .ok_or("no shape of non-negative integers")?;
    let offsets = value
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .and_then(|o| o.iter().map(index).collect::<Option<Vec<usize>>>())
        .filter(|o| o.len() == 2 && o[0] <= o[1])
        .ok_or("data_offsets are not [start, end] with start <= end")?;
    let len = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or("the shape overflows")?;
    if offsets[1] - offsets[0] != len {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {len} bytes, data_offsets give {}",
            offsets[1] - offsets[0]
        ));
    }
    Ok(Entry {
        name: name.to_string(),
        dtype: dtype.to_string(),
        shape,
        range: offsets[0]..offsets[1],
    })
}

/// [`load`] from bytes in memory.
pub fn load_bytes<F: Element>(
    store: &mut ParamStore<F>,
    parts: &mut [&mut dyn Resumable<F>],
    bytes: &[u8],
) -> Result<()> {
    let Header {
        len: n,
        meta,
        entries,
    } = read_header(bytes)?;
    let data = &bytes[8 + n..];
    let end = entries.iter().map(|e| e.range.end).max().unwrap_or(0);
    if end > data.len() {
        return Err(Error::Truncated {
            reason: format!(
                "the tensor data needs {end} bytes, the file has {}",
                data.len()
            ),
        });
    }
    if end < data.len() {
        return Err(Error::NotACheckpoint {
            reason: format!(
                "{} bytes follow the tensor data the header describes (appended to, or cut from a larger file)",
                data.len() - end
            ),
        });
    }
    // The ranges tile the data: no byte is read twice or left out.
    let mut ranges: Vec<_> = entries.iter().map(|e| e.range.clone()).collect();
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut next = 0;
    for r in ranges {
        if r.start != next {
            return Err(Error::NotACheckpoint {
                reason: "the tensors' byte ranges overlap or leave gaps".into(),
            });
        }
        next = r.end;
    }
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
            });
        }
    }
    let found = checksum(
        &meta,
        entries.iter().map(|e| {
            (
                e.name.as_str(),
                e.dtype.clone(),
                e.shape.as_slice(),
                &data[e.range.clone()],
            )
        }),
    );
    let expected = meta.get("checksum").cloned().unwrap_or_default();
    if found != expected {
        return Err(Error::ChecksumMismatch { expected, found });
    }

    // Decode every tensor (dtype and element count checked).
    let mut tensors: HashMap<String, Tensor<F>> = HashMap::with_capacity(entries.len());
    for Entry {
        name,
        dtype,
        shape,
        range,
    } in entries
    {
        if dtype != F::DTYPE {
            return Err(Error::DtypeMismatch {
                name,
                expected: F::DTYPE.into(),
                found: dtype,
            });
        }
        let values = F::from_le_bytes(&data[range]).ok_or_else(|| Error::Truncated {
            reason: format!("tensor '{name}' has a partial element"),
        })?;
        let t = Tensor::from_vec(values, &shape)?;
        tensors.insert(name, t);
    }
    let saved_parts: Vec<&str> = meta
        .get("parts")
        .map(|p| p.split(';').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    // Every tensor is a parameter of the store or state of a saved part.
    for name in tensors.keys() {
        let param = match name.strip_prefix("__") {
            Some(rest) => rest
                .split_once("__/")
                .filter(|(kind, _)| saved_parts.contains(kind))
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(_, param)| param),
            None => Some(name.as_str()),
        };
        if param.and_then(|p| store.get(p)).is_none() {
            return Err(Error::UnexpectedParameter { name: name.clone() });
        }
    }
    // Every parameter is there, with its shape and constraint.
    let mut by_name: Vec<_> = store.params().collect();
    by_name.sort_by(|a, b| store.name(*a).cmp(store.name(*b)));
    let saved_constraints: Vec<&str> = meta
        .get("constraints")
        .map(|c| c.split(';').filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    if saved_constraints.len() != by_name.len() {
        // the parameter sets differ: name the first missing one
        for &p in &by_name {
            if !tensors.contains_key(store.name(p)) {
                return Err(Error::MissingParameter {
                    name: store.name(p).into(),
                });
            }
        }
        return Err(Error::NotACheckpoint {
            reason: "the constraints do not match the parameters".into(),
        });
    }
    let mut values = Vec::with_capacity(by_name.len());
    for (&p, saved) in by_name.iter().zip(saved_constraints) {
        let name = store.name(p);
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::MissingParameter { name: name.into() })?;
        let expected_shape = store.raw(p).shape();
        if t.shape() != expected_shape {
            return Err(Error::ParamShapeMismatch {
                name: name.into(),
                expected: expected_shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        let expected = encode_constraint(store.constraint(p)?);
        if saved != expected {
            return Err(Error::ConstraintMismatch {
                name: name.into(),
                saved: saved.into(),
                expected,
            });
        }
        if let Some((i, v)) = t.first_non_finite() {
            return Err(Error::NotACheckpoint {
                reason: format!("parameter '{name}' holds {v} at element {i}"),
            });
        }
        values.push((p, t.clone()));
    }
    // The parts: all checked before any is changed.
    for part in parts.iter() {
        let kind = part.kind();
        if !saved_parts.contains(&kind) {
            return Err(Error::MissingState {
                kind: kind.into(),
                saved: saved_parts.join(", "),
            });
        }
        let reader = StateReader {
            kind,
            meta: &meta,
            tensors: &tensors,
        };
        part.check_state(store, &reader)?;
    }
    for part in parts.iter_mut() {
        let reader = StateReader {
            kind: part.kind(),
            meta: &meta,
            tensors: &tensors,
        };
        part.load_state(store, &reader)?;
    }
    for (p, v) in values {
        store.set_raw(p, v)?;
    }
    Ok(())
}
