//! An RNG whose state a checkpoint can hold.

use crate::autodiff::params::ParamStore;
use crate::error::{Error, Result};
use crate::kernels::random::xoshiro256pp;
use crate::tensor::Element;
use crate::train::checkpoint::{Resumable, StateReader, StateWriter};
use rand::{SeedableRng, TryRng};
use std::convert::Infallible;

/// xoshiro256++ (Blackman and Vigna), a fast generator whose whole state is
/// four words that [`checkpoint::save`](crate::train::checkpoint::save) can
/// store, so that a training loop resumed from a checkpoint draws exactly
/// what the uninterrupted loop would have.
///
/// `rand`'s `StdRng` keeps its state private (and is not `Clone`), so it
/// cannot be resumed; pass this one instead wherever the API takes
/// `&mut dyn Rng`. Not for cryptography.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::train::ResumableRng;
/// let mut rng = ResumableRng::seed_from_u64(42);
/// let saved = rng.state();
/// let a = rng.next_u64();
/// assert_eq!(ResumableRng::from_state(saved)?.next_u64(), a);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableRng {
    s: [u64; 4],
}

impl ResumableRng {
    /// The four words of the state.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator at a saved state.
    ///
    /// # Errors
    /// The all-zero state, which xoshiro never leaves.
    pub fn from_state(s: [u64; 4]) -> Result<Self> {
        if s == [0; 4] {
            return Err(Error::invalid(
                "ResumableRng::from_state",
                "the all-zero state is not a state of the generator",
            ));
        }
        Ok(ResumableRng { s })
    }

    fn step(&mut self) -> u64 {
        xoshiro256pp(&mut self.s)
    }
}

impl TryRng for ResumableRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        Ok((self.step() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        Ok(self.step())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let word = self.step().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

impl SeedableRng for ResumableRng {
    type Seed = [u8; 32];

    /// The state from 32 bytes (little-endian words); the all-zero seed
    /// maps to the state of `seed_from_u64(0)`.
    fn from_seed(seed: [u8; 32]) -> Self {
        let s: [u64; 4] = std::array::from_fn(|i| {
            u64::from_le_bytes(seed[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        });
        if s == [0; 4] {
            return Self::seed_from_u64(0);
        }
        ResumableRng { s }
    }

    /// The state from SplitMix64's first four outputs, as the xoshiro
    /// authors recommend.
    fn seed_from_u64(mut state: u64) -> Self {
        let s = std::array::from_fn(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        });
        ResumableRng { s }
    }
}

impl<F: Element> Resumable<F> for ResumableRng {
    fn kind(&self) -> &'static str {
        "rng"
    }
    fn save_state(&self, _: &ParamStore<F>, out: &mut StateWriter<F>) -> Result<()> {
        let hex: Vec<String> = self.s.iter().map(|w| format!("{w:016x}")).collect();
        out.scalar("state", hex.join(":"))
    }
    fn check_state(&self, _: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        parse_state(state.scalar("state")?).map(|_| ())
    }
    fn load_state(&mut self, _: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        *self = parse_state(state.scalar("state")?)?;
        Ok(())
    }
}

fn parse_state(text: &str) -> Result<ResumableRng> {
    let bad = || Error::NotACheckpoint {
        reason: format!("rng_state '{text}' is not four hexadecimal words"),
    };
    let words: Vec<u64> = text
        .split(':')
        .map(|w| u64::from_str_radix(w, 16).map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let s: [u64; 4] = words.try_into().map_err(|_| bad())?;
    ResumableRng::from_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference outputs of xoshiro256++ from the state [1, 2, 3, 4]
    /// (the authors' C code: 41943041, 58720359, 3588806011781223).
    #[test]
    fn matches_the_reference_xoshiro256plusplus() {
        let mut rng = ResumableRng::from_state([1, 2, 3, 4]).unwrap();
        let first: Vec<u64> = (0..3).map(|_| rng.step()).collect();
        assert_eq!(first, [41_943_041, 58_720_359, 3_588_806_011_781_223]);
    }
}
