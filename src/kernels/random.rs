//! Fast, reproducible bulk sampling.
//!
//! Drawing hundreds of thousands of normals one virtual call at a time is
//! slow, so bulk draws take one seed from the caller's RNG and generate the
//! values eight lanes at a time: eight interleaved xoshiro128++ streams
//! feed the Box–Muller transform, written out in AVX-512 or AVX2 intrinsics
//! on CPUs that have them (bit for bit the values of the portable code), and large
//! tensors are split over two threads. Runs stay reproducible from the
//! caller's seed, on any CPU; the values differ from one-at-a-time draws.
//!
//! The draws are computed in `f32` for every element type (`f64` tensors
//! get `f32`-precision normals). The uniforms behind the radius have 31
//! bits, so `|z|` never exceeds 6.7 (the pairs beyond that radius have
//! probability `2^-32`).

use super::element::Element;
use super::fastmath::{LN2_HI, LN2_LO, sin_cos_turn};
use crate::tensor::Storage;
use rand::Rng;
use std::mem::MaybeUninit;

/// Eight xoshiro128++ generators stepped together (one per vector lane).
struct Lanes {
    s: [[u32; 8]; 4],
}

impl Lanes {
    fn new(seed: u64) -> Self {
        // splitmix64, as the xoshiro authors recommend for seeding
        let mut z = seed;
        let mut next = move || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        // lane i's state is s[0][i], s[1][i], s[2][i], s[3][i]
        let words: [[u32; 4]; 8] = std::array::from_fn(|_| {
            let (a, b) = (next(), next());
            // the last word is odd: never the all-zero state
            [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32 | 1]
        });
        Lanes {
            s: std::array::from_fn(|w| std::array::from_fn(|lane| words[lane][w])),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> [u32; 8] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; 8];
        for i in 0..8 {
            out[i] = s0[i].wrapping_add(s3[i]).rotate_left(7).wrapping_add(s0[i]);
            let t = s1[i] << 9;
            s2[i] ^= s0[i];
            s3[i] ^= s1[i];
            s1[i] ^= s2[i];
            s0[i] ^= s3[i];
            s2[i] ^= t;
            s3[i] = s3[i].rotate_left(11);
        }
        out
    }
}

/// A source of the eight streams' steps: its steps drawn ahead
/// ([`DrawnSteps`], as [`fill_piece`] draws them), or in the tests
/// [`Lanes`] itself, step by step.
trait Steps {
    /// The next step's eight words.
    fn step(&mut self) -> [u32; 8];
}

#[cfg(test)]
impl Steps for Lanes {
    #[inline(always)]
    fn step(&mut self) -> [u32; 8] {
        self.next()
    }
}

/// Steps of [`Lanes`] drawn ahead, in their order.
struct DrawnSteps<'a>(std::slice::Iter<'a, [u32; 8]>);

impl Steps for DrawnSteps<'_> {
    #[inline(always)]
    fn step(&mut self) -> [u32; 8] {
        *self
            .0
            .next()
            .expect("the steps a piece's draws take were drawn")
    }
}

impl Lanes {
    /// The next `out.len()` steps into `out`, in the registers of AVX2
    /// where the CPU has it (the same words as [`Lanes::next`]).
    #[inline(always)]
    fn steps_into(&mut self, out: &mut [[u32; 8]]) {
        #[cfg(target_arch = "x86_64")]
        if super::parallel::tier() != super::parallel::Tier::Portable {
            // SAFETY: every tier but the portable one has AVX2
            unsafe { avx2::steps(self, out) };
            return;
        }
        for o in out {
            *o = self.next();
        }
    }
}

/// `1 / 2^31`.
const TWO_POW_MINUS_31: f32 = 1.0 / 2_147_483_648.0;
/// `2 atanh(t) = 2t (1 + t^2/3 + t^4/5 + t^6/7 + t^8/9)`: enough for
/// `|t| <= 0.172` (the next term is 2e-9 of the sum).
const ATANH: [f32; 4] = [1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0];

/// One Box–Muller pair from two 32-bit draws: the radius from
/// `u1 = (31 bits + 1/2) / 2^31` in `(0, 1]`, the angle from 23 bits
/// `u2` in `[0, 1)`. Division-free except for one in the logarithm, and
/// written so that [`avx2::normals`] computes the same values, operation
/// for operation (no fused multiply-adds).
#[inline(always)]
fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let u1 = (((a >> 1) as i32) as f32 + 0.5) * TWO_POW_MINUS_31;
    // ln u1: u1 = m 2^k with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1));
    // u1 is a normal number at most 1, so no special cases
    let bits = u1.to_bits();
    let mut k = (bits >> 23) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    let kf = k as f32;
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = 1.0 + t2 * (ATANH[0] + t2 * (ATANH[1] + t2 * (ATANH[2] + t2 * ATANH[3])));
    let ln_u1 = kf * LN2_HI + (2.0 * t * series + kf * LN2_LO);
    // ln_u1 <= 0: it is 0 at u1 = 1, and |2 t series| < ln2/2 otherwise
    let r = (-2.0 * ln_u1).sqrt();
    let u2 = f32::from_bits(0x3f80_0000 | (b >> 9)) - 1.0;
    let (sin, cos) = sin_cos_turn(u2);
    (r * cos, r * sin)
}

/// The normals of `lanes.next()` twice: lane `i` gives `out[i]` and `out[i + 8]`.
#[inline(always)]
fn normals_portable(lanes: &mut Lanes, out: &mut [f32; 16]) {
    let (a, b) = (lanes.next(), lanes.next());
    for i in 0..8 {
        (out[i], out[i + 8]) = box_muller(a[i], b[i]);
    }
}

/// [`normals_portable`] on AVX2 registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ATANH, Lanes, TWO_POW_MINUS_31};
    use crate::kernels::fastmath::{COS, LN2_HI, LN2_LO, ROUNDER, SIN};
    use std::arch::x86_64::*;

    /// The eight streams' `next()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn next(s: &mut [__m256i; 4]) -> __m256i {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
            _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x))
        }
        let [s0, s1, s2, s3] = s;
        let out = _mm256_add_epi32(rotl::<7, 25>(_mm256_add_epi32(*s0, *s3)), *s0);
        let t = _mm256_slli_epi32::<9>(*s1);
        *s2 = _mm256_xor_si256(*s2, *s0);
        *s3 = _mm256_xor_si256(*s3, *s1);
        *s1 = _mm256_xor_si256(*s1, *s2);
        *s0 = _mm256_xor_si256(*s0, *s3);
        *s2 = _mm256_xor_si256(*s2, t);
        *s3 = rotl::<11, 21>(*s3);
        out
    }

    /// The next `out.len()` steps of `lanes` into `out`: the words of
    /// [`Lanes::next`](super::Lanes), with the state in registers.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn steps(lanes: &mut Lanes, out: &mut [[u32; 8]]) {
        // SAFETY: each state word array holds eight u32, 32 bytes
        let load = |w: &[u32; 8]| unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
        let mut s = lanes.s.each_ref().map(load);
        for o in out {
            // SAFETY: `o` holds eight u32, 32 bytes
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), next(&mut s)) };
        }
        for (w, s) in lanes.s.iter_mut().zip(&s) {
            // SAFETY: as for the loads
            unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), *s) };
        }
    }

    /// Fills `out` (a multiple of 16 long) with normals, advancing `lanes`
    /// exactly as [`super::normals_portable`] would.
    #[target_feature(enable = "avx2")]
    pub(super) fn normals(lanes: &mut Lanes, out: &mut [f32]) {
        // SAFETY: each state word array holds eight u32, 32 bytes
        let load = |w: &[u32; 8]| unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
        let mut s = [
            load(&lanes.s[0]),
            load(&lanes.s[1]),
            load(&lanes.s[2]),
            load(&lanes.s[3]),
        ];
        let f = _mm256_set1_ps;
        let i = _mm256_set1_epi32;
        let (one, two, half) = (f(1.0), f(2.0), f(0.5));
        for block in out.chunks_exact_mut(16) {
            let (a, b) = (next(&mut s), next(&mut s));
            // the radius
            let u1 = _mm256_mul_ps(
                _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<1>(a)), half),
                f(TWO_POW_MINUS_31),
            );
            let bits = _mm256_castps_si256(u1);
            let k = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), i(127));
            let m = _mm256_castsi256_ps(_mm256_or_si256(
                _mm256_and_si256(bits, i(0x007f_ffff)),
                i(0x3f80_0000),
            ));
            let big = _mm256_cmp_ps::<_CMP_GT_OQ>(m, f(std::f32::consts::SQRT_2));
            let m = _mm256_blendv_ps(m, _mm256_mul_ps(m, half), big);
            // the mask is -1 where big: k + 1
            let kf = _mm256_cvtepi32_ps(_mm256_sub_epi32(k, _mm256_castps_si256(big)));
            let t = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
            let t2 = _mm256_mul_ps(t, t);
            let horner = |c: f32, acc: __m256| _mm256_add_ps(f(c), _mm256_mul_ps(t2, acc));
            let series = horner(
                1.0,
                horner(ATANH[0], horner(ATANH[1], horner(ATANH[2], f(ATANH[3])))),
            );
            let ln_u1 = _mm256_add_ps(
                _mm256_mul_ps(kf, f(LN2_HI)),
                _mm256_add_ps(
                    _mm256_mul_ps(_mm256_mul_ps(two, t), series),
                    _mm256_mul_ps(kf, f(LN2_LO)),
                ),
            );
            let r = _mm256_sqrt_ps(_mm256_mul_ps(f(-2.0), ln_u1));
            // the angle: fastmath::sin_cos_turn
            let u2 = _mm256_sub_ps(
                _mm256_castsi256_ps(_mm256_or_si256(_mm256_srli_epi32::<9>(b), i(0x3f80_0000))),
                one,
            );
            let turns = _mm256_mul_ps(u2, f(4.0));
            let shifted = _mm256_add_ps(turns, f(ROUNDER));
            let q = _mm256_sub_epi32(_mm256_castps_si256(shifted), i(ROUNDER.to_bits() as i32));
            let a = _mm256_mul_ps(
                _mm256_sub_ps(turns, _mm256_sub_ps(shifted, f(ROUNDER))),
                f(std::f32::consts::FRAC_PI_2),
            );
            let a2 = _mm256_mul_ps(a, a);
            let horner = |c: f32, acc: __m256| _mm256_add_ps(f(c), _mm256_mul_ps(a2, acc));
            let sin_poly = horner(SIN[0], horner(SIN[1], horner(SIN[2], f(SIN[3]))));
            let sin = _mm256_add_ps(a, _mm256_mul_ps(_mm256_mul_ps(a, a2), sin_poly));
            let cos_poly = horner(
                COS[0],
                horner(COS[1], horner(COS[2], horner(COS[3], f(COS[4])))),
            );
            let cos = _mm256_add_ps(one, _mm256_mul_ps(a2, cos_poly));
            let sign = f(-0.0);
            let odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, i(1)), i(1)));
            let (sin, cos) = (
                _mm256_blendv_ps(sin, cos, odd),
                _mm256_blendv_ps(cos, _mm256_xor_ps(sin, sign), odd),
            );
            let half_turn =
                _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, i(2)), i(2)));
            let flip = _mm256_and_ps(half_turn, sign);
            let (sin, cos) = (_mm256_xor_ps(sin, flip), _mm256_xor_ps(cos, flip));
            // SAFETY: the block holds 16 values
            unsafe {
                _mm256_storeu_ps(block.as_mut_ptr(), _mm256_mul_ps(r, cos));
                _mm256_storeu_ps(block.as_mut_ptr().add(8), _mm256_mul_ps(r, sin));
            }
        }
        for (w, v) in lanes.s.iter_mut().zip(s) {
            // SAFETY: `w` holds eight u32
            unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), v) };
        }
    }
}

/// [`normals_portable`] on AVX-512 registers: two blocks of sixteen at a
/// time, their draws side by side in one register (the streams still step
/// in AVX2 registers, one block after the other), so each value is the one
/// the portable code gives, operation for operation.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{ATANH, Lanes, TWO_POW_MINUS_31};
    use crate::kernels::fastmath::{COS, LN2_HI, LN2_LO, ROUNDER, SIN};
    use std::arch::x86_64::*;

    /// Fills `out` (a multiple of 16 long) with normals, advancing `lanes`
    /// exactly as [`super::normals_portable`] would.
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2")]
    pub(super) fn normals(lanes: &mut Lanes, out: &mut [f32]) {
        // SAFETY: each state word array holds eight u32, 32 bytes
        let load = |w: &[u32; 8]| unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
        let mut s = [
            load(&lanes.s[0]),
            load(&lanes.s[1]),
            load(&lanes.s[2]),
            load(&lanes.s[3]),
        ];
        let f = _mm512_set1_ps;
        let i = _mm512_set1_epi32;
        let (one, two, half) = (f(1.0), f(2.0), f(0.5));
        let mut pairs = out.chunks_exact_mut(32);
        for pair in &mut pairs {
            // block 1 draws a then b, block 2 after it; block 2 in the high half
            let (a1, b1) = (super::avx2::next(&mut s), super::avx2::next(&mut s));
            let (a2, b2) = (super::avx2::next(&mut s), super::avx2::next(&mut s));
            let join =
                |lo: __m256i, hi: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let (a, b) = (join(a1, a2), join(b1, b2));
            // the radius
            let u1 = _mm512_mul_ps(
                _mm512_add_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32::<1>(a)), half),
                f(TWO_POW_MINUS_31),
            );
            let bits = _mm512_castps_si512(u1);
            let k = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), i(127));
            let m = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(bits, i(0x007f_ffff)),
                i(0x3f80_0000),
            ));
            let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, f(std::f32::consts::SQRT_2));
            let m = _mm512_mask_blend_ps(big, m, _mm512_mul_ps(m, half));
            let kf = _mm512_cvtepi32_ps(_mm512_mask_add_epi32(k, big, k, i(1)));
            let t = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
            let t2 = _mm512_mul_ps(t, t);
            let horner = |c: f32, acc: __m512| _mm512_add_ps(f(c), _mm512_mul_ps(t2, acc));
            let series = horner(
                1.0,
                horner(ATANH[0], horner(ATANH[1], horner(ATANH[2], f(ATANH[3])))),
            );
            let ln_u1 = _mm512_add_ps(
                _mm512_mul_ps(kf, f(LN2_HI)),
                _mm512_add_ps(
                    _mm512_mul_ps(_mm512_mul_ps(two, t), series),
                    _mm512_mul_ps(kf, f(LN2_LO)),
                ),
            );
            let r = _mm512_sqrt_ps(_mm512_mul_ps(f(-2.0), ln_u1));
            // the angle: fastmath::sin_cos_turn
            let u2 = _mm512_sub_ps(
                _mm512_castsi512_ps(_mm512_or_si512(_mm512_srli_epi32::<9>(b), i(0x3f80_0000))),
                one,
            );
            let turns = _mm512_mul_ps(u2, f(4.0));
            let shifted = _mm512_add_ps(turns, f(ROUNDER));
            let q = _mm512_sub_epi32(_mm512_castps_si512(shifted), i(ROUNDER.to_bits() as i32));
            let a = _mm512_mul_ps(
                _mm512_sub_ps(turns, _mm512_sub_ps(shifted, f(ROUNDER))),
                f(std::f32::consts::FRAC_PI_2),
            );
            let a2 = _mm512_mul_ps(a, a);
            let horner = |c: f32, acc: __m512| _mm512_add_ps(f(c), _mm512_mul_ps(a2, acc));
            let sin_poly = horner(SIN[0], horner(SIN[1], horner(SIN[2], f(SIN[3]))));
            let sin = _mm512_add_ps(a, _mm512_mul_ps(_mm512_mul_ps(a, a2), sin_poly));
            let cos_poly = horner(
                COS[0],
                horner(COS[1], horner(COS[2], horner(COS[3], f(COS[4])))),
            );
            let cos = _mm512_add_ps(one, _mm512_mul_ps(a2, cos_poly));
            let sign = f(-0.0);
            let odd = _mm512_cmpeq_epi32_mask(_mm512_and_si512(q, i(1)), i(1));
            let (sin, cos) = (
                _mm512_mask_blend_ps(odd, sin, cos),
                _mm512_mask_blend_ps(odd, cos, _mm512_xor_ps(sin, sign)),
            );
            let half_turn = _mm512_cmpeq_epi32_mask(_mm512_and_si512(q, i(2)), i(2));
            let flip = _mm512_maskz_mov_ps(half_turn, sign);
            let (sin, cos) = (_mm512_xor_ps(sin, flip), _mm512_xor_ps(cos, flip));
            let (rc, rs) = (_mm512_mul_ps(r, cos), _mm512_mul_ps(r, sin));
            // SAFETY: the pair holds 32 values
            unsafe {
                let at = pair.as_mut_ptr();
                _mm256_storeu_ps(at, _mm512_castps512_ps256(rc));
                _mm256_storeu_ps(at.add(8), _mm512_castps512_ps256(rs));
                _mm256_storeu_ps(at.add(16), _mm512_extractf32x8_ps::<1>(rc));
                _mm256_storeu_ps(at.add(24), _mm512_extractf32x8_ps::<1>(rs));
            }
        }
        for (w, v) in lanes.s.iter_mut().zip(s) {
            // SAFETY: `w` holds eight u32
            unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), v) };
        }
        // a last block of sixteen
        super::avx2::normals(lanes, pairs.into_remainder());
    }
}

/// The normals of one thread's part of a [`standard_normal`] tensor, piece
/// by piece from the part's start, so that fused kernels use the values
/// `standard_normal` would give without writing them out first.
pub(crate) struct NormalStream {
    lanes: Lanes,
    buf: [f32; NormalStream::PIECE],
}

impl NormalStream {
    /// The length of a piece.
    pub(crate) const PIECE: usize = 256;

    /// The stream of the part starting at element `start` of a tensor drawn
    /// with `seed`: [`parallel::par_fill`](crate::kernels::parallel) hands out parts
    /// starting at 0 and, for long tensors, one more.
    pub(crate) fn new(seed: u64, start: usize) -> Self {
        NormalStream {
            lanes: Lanes::new(part_seed(seed, start)),
            buf: [0.0; Self::PIECE],
        }
    }

    /// The next `len` normals, `len <= PIECE`; a piece shorter than
    /// `PIECE` ends the part (the values of its last sixteen that it does
    /// not use are dropped).
    #[inline(always)]
    pub(crate) fn next_piece(&mut self, len: usize) -> &[f32] {
        let values = &mut self.buf[..len.next_multiple_of(16)];
        #[cfg(target_arch = "x86_64")]
        match super::parallel::tier() {
            super::parallel::Tier::Avx512 => {
                // SAFETY: the CPU has AVX-512 F, DQ, BW and VL, and AVX2
                // (the tier is one it supports)
                unsafe { avx512::normals(&mut self.lanes, values) };
                return &self.buf[..len];
            }
            super::parallel::Tier::Avx2Fma => {
                // SAFETY: the CPU has AVX2 (the tier is one it supports)
                unsafe { avx2::normals(&mut self.lanes, values) };
                return &self.buf[..len];
            }
            super::parallel::Tier::Portable => {}
        }
        for block in values.chunks_exact_mut(16) {
            normals_portable(&mut self.lanes, block.try_into().expect("16 values"));
        }
        &self.buf[..len]
    }
}

/// `len` `N(0, 1)` draws, seeded from `rng` (one `next_u64`).
pub(crate) fn standard_normal<F: Element>(len: usize, rng: &mut dyn Rng) -> Storage<F> {
    let seed = rng.next_u64();
    // SAFETY: `fill_normals` writes every element of each chunk
    unsafe { super::parallel::par_new(len, fill_normals(seed)) }
}

/// Writes into `out` the draws `standard_normal(out.len(), rng)` returns,
/// with no vector of its own (one `next_u64` of `rng`).
pub(crate) fn standard_normal_into<F: Element>(out: &mut [MaybeUninit<F>], rng: &mut dyn Rng) {
    let seed = rng.next_u64();
    super::parallel::par_fill(out, fill_normals(seed));
}

/// Writes the draws of positions `start..start + chunk.len()` of the
/// stream `seed` into `chunk`: the values do not depend on how a buffer
/// is cut into chunks.
fn fill_normals<F: Element>(seed: u64) -> impl Fn(usize, &mut [MaybeUninit<F>]) + Sync {
    #[inline(always)]
    move |start, chunk| {
        let mut stream = NormalStream::new(seed, start);
        for piece in chunk.chunks_mut(NormalStream::PIECE) {
            let values = stream.next_piece(piece.len());
            for (o, &z) in piece.iter_mut().zip(values) {
                o.write(F::lit(f64::from(z)));
            }
        }
    }
}

/// The standard draws that the bulk samplers of one-uniform families
/// compute from a uniform `u` in (0, 1) each ([`unit_draws`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// `u` itself (for `f32`, the nearest value inside (0, 1)).
    Uniform,
    /// `-ln u`: a standard exponential draw, in `[1.1e-16, 36.74]`.
    Exponential,
    /// `±(-ln u)`, the sign from a bit of its own: a standard Laplace draw.
    Laplace,
    /// `-ln(-ln u)`: a standard Gumbel draw, in `[-3.60, 36.74]`.
    Gumbel,
    /// `ln(-ln u)`: the logarithm of a standard exponential draw.
    LnExponential,
    /// `ln u - ln(1 - u)`: a standard logistic draw, within `±36.74`.
    Logistic,
    /// `tan(π (u - 1/2))`: a standard Cauchy draw, within `±2.9e15`.
    Cauchy,
    /// `tan(π u / 2)`: a standard half-Cauchy draw, in `[1.7e-16, 5.7e15]`.
    HalfCauchy,
}

impl Unit {
    /// Every kind, for the tests that go through them all.
    #[cfg(test)]
    pub(crate) const ALL: [Unit; 8] = [
        Unit::Uniform,
        Unit::Exponential,
        Unit::Laplace,
        Unit::Gumbel,
        Unit::LnExponential,
        Unit::Logistic,
        Unit::Cauchy,
        Unit::HalfCauchy,
    ];
}

/// `(-1)^k π^(2k+1) / (2k+1)!` for `k = 0..=10`: `sin(π x) = x Σ c_k
/// x^(2k)`, whose next term is below `1.2e-18` for `|x| <= 1/2`.
const SIN_PI: [f64; 11] = [
    std::f64::consts::PI,
    -5.16771278004997,
    2.5501640398773455,
    -0.5992645293207921,
    0.08214588661112823,
    -0.0073704309457143504,
    0.00046630280576761255,
    -2.1915353447830217e-05,
    7.952054001475513e-07,
    -2.2948428997269873e-08,
    5.392664662608129e-10,
];

/// `sin(π x) / sin(π y)` of each lane for `x` and `y` in `[0, 1/2]`: `tan`
/// of an angle through the sines of it and of its complement, each from
/// its Taylor series, so that both keep their relative accuracy down to
/// the smallest arguments (where `tan` near a pole has its digits in the
/// complement).
#[inline(always)]
fn sin_pi_ratio(x: &[f64; 8], y: &[f64; 8]) -> [f64; 8] {
    let sin_pi = |x: f64| {
        let z = x * x;
        let mut p = SIN_PI[10];
        for &c in SIN_PI[..10].iter().rev() {
            p = c + z * p;
        }
        x * p
    };
    let mut out = [0.0; 8];
    for l in 0..8 {
        out[l] = sin_pi(x[l]) / sin_pi(y[l]);
    }
    out
}

/// `2^52` and its bits.
const TWO_52: f64 = 4_503_599_627_370_496.0;
/// `1 / 2^52`.
const TWO_POW_MINUS_52: f64 = 1.0 / TWO_52;

/// Eight uniforms `u = (j + 1/2) / 2^52` in (0, 1), `j` 52 random bits
/// (32 of one step of the streams and the top 20 of the next), and the
/// second step's lowest bits, which `u` does not use. `u` and `1 - u` are
/// both exact, so `ln u` and `ln(1 - u)` keep their digits at both ends:
/// `u` is at least `2^-53` from 0 and from 1.
#[inline(always)]
fn unit_lanes(lanes: &mut impl Steps) -> ([f64; 8], [u32; 8]) {
    let (hi, lo) = (lanes.step(), lanes.step());
    let mut u = [0.0; 8];
    for l in 0..8 {
        let j = (u64::from(hi[l]) << 20) | u64::from(lo[l] >> 12);
        // 2^52 + j exactly, less 2^52: j as a float without a conversion
        // instruction (AVX2 has none from 64-bit integers)
        u[l] = (f64::from_bits(TWO_52.to_bits() | j) - TWO_52 + 0.5) * TWO_POW_MINUS_52;
    }
    (u, lo)
}

/// `-x` of each lane (a loop: `array::map` can stay out of line, without
/// the caller's wider instructions).
#[inline(always)]
fn negated(x: &[f64; 8]) -> [f64; 8] {
    let mut out = [0.0; 8];
    for l in 0..8 {
        out[l] = -x[l];
    }
    out
}

/// The draws of `kind` from the uniforms and spare bits of
/// [`unit_lanes`], in `f64` lanes ([`ln_lanes`](super::special::ln_lanes)
/// is within about an ulp).
#[inline(always)]
fn unit_transform(kind: Unit, u: &[f64; 8], spare: &[u32; 8]) -> [f64; 8] {
    use super::special::ln_lanes;
    match kind {
        Unit::Uniform => *u,
        Unit::Exponential => negated(&ln_lanes(u)),
        Unit::Laplace => {
            let e = negated(&ln_lanes(u));
            let mut out = [0.0; 8];
            for l in 0..8 {
                out[l] = if spare[l] & 1 == 1 { e[l] } else { -e[l] };
            }
            out
        }
        Unit::Gumbel | Unit::LnExponential => of_exponential(kind, &negated(&ln_lanes(u))),
        Unit::Cauchy => {
            // w = u - 1/2, |w| and 1/2 - |w| all exact (u is an odd
            // multiple of 2^-53, never 1/2)
            let (mut t, mut c) = ([0.0; 8], [0.0; 8]);
            for l in 0..8 {
                t[l] = (u[l] - 0.5).abs();
                c[l] = 0.5 - t[l];
            }
            let r = sin_pi_ratio(&t, &c);
            let mut out = [0.0; 8];
            for l in 0..8 {
                out[l] = if u[l] < 0.5 { -r[l] } else { r[l] };
            }
            out
        }
        Unit::HalfCauchy => {
            // u / 2 and (1 - u) / 2, both exact
            let (mut t, mut c) = ([0.0; 8], [0.0; 8]);
            for l in 0..8 {
                t[l] = 0.5 * u[l];
                c[l] = 0.5 * (1.0 - u[l]);
            }
            sin_pi_ratio(&t, &c)
        }
        Unit::Logistic => {
            // 1 - u is exact (see `unit_lanes`)
            let mut v = [0.0; 8];
            for l in 0..8 {
                v[l] = 1.0 - u[l];
            }
            let (a, b) = (ln_lanes(u), ln_lanes(&v));
            let mut out = [0.0; 8];
            for l in 0..8 {
                out[l] = a[l] - b[l];
            }
            out
        }
    }
}

/// The Gumbel draw `-ln e` or `ln e` ([`Unit::LnExponential`]) of each
/// lane from a standard exponential draw `e`.
#[inline(always)]
fn of_exponential(kind: Unit, e: &[f64; 8]) -> [f64; 8] {
    let ln_e = super::special::ln_lanes(e);
    if kind == Unit::Gumbel {
        negated(&ln_e)
    } else {
        ln_e
    }
}

/// `ln x` of sixteen positive normal `f64` lanes (`lo` then `hi`), as `f32`
/// within a few ulp of `ln x` rounded: `x = 2^k m` with `m` in `[√½, √2)`
/// and `f = m - 1` exactly in `f64`; `f` rounded to `f32` moves `ln(1 + f)`
/// by at most about half an ulp of it (the logarithm's condition number
/// is near 1 there), so the digits of an `x` near 1 are kept. Then `ln(1 +
/// f) = 2 atanh(s)`, `s = f / (2 + f)`, from five terms of the series
/// (`|s| < 0.172`: the next is below 2e-9 of the sum), and `k ln 2` in two
/// parts, the first exact. Half the vectors of
/// [`ln_lanes`](super::special::ln_lanes) and a shorter series, for the
/// `f32` draws whose last step is a logarithm.
#[inline(always)]
fn ln_to_f32(lo: &[f64; 8], hi: &[f64; 8]) -> [f32; 16] {
    // ln 2 with its 12 low bits cleared (0.693115234375: k ln 2 is exact
    // for |k| < 4096) and the rest
    const LN2_HI: f32 = f32::from_bits(0x3F31_7000);
    const LN2_LO: f32 = 3.194_618_5e-5;
    const SQRT_HALF: u64 = 0x3FE6_A09E_667F_3BCD;
    let reduce = |x: &[f64; 8]| {
        let (mut f, mut k) = ([0.0f32; 8], [0.0f32; 8]);
        for l in 0..8 {
            // the bits less those of √½: the top twelve hold k, and the
            // bits less k's exponent are those of m in [√½, √2)
            let bits = x[l].to_bits();
            let shifted = bits.wrapping_sub(SQRT_HALF);
            let exponent = shifted as i64 >> 52;
            let m = f64::from_bits(bits.wrapping_sub((exponent as u64) << 52));
            f[l] = (m - 1.0) as f32;
            k[l] = super::special::small_int_as_f64(exponent) as f32;
        }
        (f, k)
    };
    let ((f_lo, k_lo), (f_hi, k_hi)) = (reduce(lo), reduce(hi));
    let (mut f, mut k) = ([0.0f32; 16], [0.0f32; 16]);
    f[..8].copy_from_slice(&f_lo);
    f[8..].copy_from_slice(&f_hi);
    k[..8].copy_from_slice(&k_lo);
    k[8..].copy_from_slice(&k_hi);
    let mut ln = [0.0f32; 16];
    for l in 0..16 {
        let s = f[l] / (2.0 + f[l]);
        let z = s * s;
        let c = |j: i32| 2.0 / (2 * j + 1) as f32;
        let series = z.mul_add(
            z.mul_add(z.mul_add(z.mul_add(c(5), c(4)), c(3)), c(2)),
            c(1),
        );
        let ln_m = s.mul_add(z * series, 2.0 * s);
        ln[l] = k[l].mul_add(LN2_HI, k[l].mul_add(LN2_LO, ln_m));
    }
    ln
}

/// Writes the draws of `kind` for positions `start..start + chunk.len()`
/// of the stream `seed` into `chunk`, eight or sixteen at a time.
#[inline(always)]
fn fill_units<F: Element>(kind: Unit, seed: u64, start: usize, chunk: &mut [MaybeUninit<F>]) {
    let mut lanes = Lanes::new(part_seed(seed, start));
    let mut steps = [[0; 8]; UNIT_PIECE / 4];
    for piece in chunk.chunks_mut(UNIT_PIECE) {
        fill_piece(kind, &mut lanes, &mut steps, piece);
    }
}

/// Writes the draws of `kind` into `piece` (at most [`UNIT_PIECE`] long)
/// from the stream `lanes`, whose steps it takes (two for every eight
/// draws, sixteen at a time) are drawn into `steps` first, in a loop of
/// their own ([`Lanes::steps_into`]): drawn step by step inside the loop
/// of a long transform, the streams' state left the vector registers in
/// some builds (`bench -- draws` on AMD EPYC family 26 model 2: the
/// exponential draws' round took 2.6 times as long, the Kumaraswamy
/// draws' 1.5). Drawn ahead, the rounds of the one-uniform families took
/// 0.84 to 0.93 of their time step by step (exponential, Laplace,
/// uniform, Cauchy, half-Cauchy), 0.91 to 0.99 (Gumbel, Pareto) and 0.97
/// to 1.02 (Weibull), in three runs alternated.
#[inline(always)]
fn fill_piece<F: Element>(
    kind: Unit,
    lanes: &mut Lanes,
    steps: &mut [[u32; 8]; UNIT_PIECE / 4],
    piece: &mut [MaybeUninit<F>],
) {
    let steps = &mut steps[..piece.len().next_multiple_of(16) / 4];
    lanes.steps_into(steps);
    fill_from(kind, &mut DrawnSteps(steps.iter()), piece);
}

/// The draws of one part of a [`unit_draws`] tensor, piece by piece from
/// the part's start, so that a fused kernel takes the values `unit_draws`
/// would give without writing them out first (as [`NormalStream`] does for
/// normals).
pub(crate) struct UnitStream<F> {
    lanes: Lanes,
    steps: [[u32; 8]; UNIT_PIECE / 4],
    buf: [MaybeUninit<F>; UNIT_PIECE],
}

/// The longest piece of a [`UnitStream`].
pub(crate) const UNIT_PIECE: usize = 256;

impl<F: Element> UnitStream<F> {
    /// The stream of the part starting at element `start` of a tensor drawn
    /// with `seed` (`par_fill`'s parts, as for [`NormalStream::new`]).
    pub(crate) fn new(seed: u64, start: usize) -> Self {
        UnitStream {
            lanes: Lanes::new(part_seed(seed, start)),
            steps: [[0; 8]; UNIT_PIECE / 4],
            buf: [MaybeUninit::uninit(); UNIT_PIECE],
        }
    }

    /// The next `len` draws of `kind` (every piece of a part of the same
    /// kind), `len <= UNIT_PIECE` and a multiple of 16 but for the part's
    /// last piece: the draws take the stream eight or sixteen at a time,
    /// and a piece that ends inside such a group drops the rest of it
    /// ([`fill_piece`]).
    #[inline(always)]
    pub(crate) fn next_piece(&mut self, kind: Unit, len: usize) -> &[F] {
        let piece = &mut self.buf[..len];
        fill_piece(kind, &mut self.lanes, &mut self.steps, piece);
        // SAFETY: `fill_from` writes every element of `piece`, the first
        // `len` of `buf`
        unsafe { std::slice::from_raw_parts(piece.as_ptr().cast::<F>(), len) }
    }
}

/// Writes the draws of `kind` into `chunk` from the stream `lanes`, eight
/// or sixteen at a time (the last group's spare draws are dropped).
#[inline(always)]
fn fill_from<F: Element>(kind: Unit, lanes: &mut impl Steps, chunk: &mut [MaybeUninit<F>]) {
    if matches!(kind, Unit::Gumbel | Unit::LnExponential) {
        // the logarithm of a logarithm in two passes over a block, the
        // values of `unit_transform`: chained lane by lane, the second
        // waited on the first, and the chain of both filled the CPU's
        // window of instructions in flight (0.55 ns a logarithm a lane
        // alone, 1.65 for the chain of two, 1.16 in two passes, AVX-512)
        const BLOCK: usize = 256;
        for piece in chunk.chunks_mut(BLOCK) {
            let mut e = [[0.0; 8]; BLOCK / 8];
            for e in &mut e[..piece.len().div_ceil(8)] {
                let (u, _) = unit_lanes(lanes);
                *e = negated(&super::special::ln_lanes(&u));
            }
            if std::mem::size_of::<F>() == 4 {
                // `f32` draws: the outer logarithm in `f32` lanes, sixteen
                // at a time, from the exponential draws' exact reduction
                for (block, e) in piece.chunks_mut(16).zip(e.chunks_exact(2)) {
                    let x = ln_to_f32(&e[0], &e[1]);
                    for (o, &x) in block.iter_mut().zip(&x) {
                        let x = if kind == Unit::Gumbel { -x } else { x };
                        o.write(F::lit(f64::from(x)));
                    }
                }
                continue;
            }
            for (block, e) in piece.chunks_mut(8).zip(&e) {
                let x = of_exponential(kind, e);
                for (o, &x) in block.iter_mut().zip(&x) {
                    o.write(unit_element(kind, x));
                }
            }
        }
        return;
    }
    if std::mem::size_of::<F>() == 4 && matches!(kind, Unit::Exponential | Unit::Laplace) {
        // `f32` exponential draws (with a random sign for Laplace's): the
        // logarithm of the uniform in `f32` lanes, sixteen at a time; the
        // full blocks in a loop of their own, each sixteen stores of a
        // fixed length (with a short last block in the same loop, the
        // compiler merged the two copies into a call to `memmove` for
        // every block, 4 % of a Kumaraswamy draw's time)
        let mut blocks = chunk.chunks_exact_mut(16);
        for block in &mut blocks {
            let x = exponential_to_f32(kind, lanes);
            for (o, &x) in block.iter_mut().zip(&x) {
                o.write(F::lit(f64::from(x)));
            }
        }
        let rest = blocks.into_remainder();
        if !rest.is_empty() {
            let x = exponential_to_f32(kind, lanes);
            for (o, &x) in rest.iter_mut().zip(&x) {
                o.write(F::lit(f64::from(x)));
            }
        }
        return;
    }
    for block in chunk.chunks_mut(8) {
        let (u, spare) = unit_lanes(lanes);
        let x = unit_transform(kind, &u, &spare);
        for (o, &x) in block.iter_mut().zip(&x) {
            o.write(unit_element(kind, x));
        }
    }
}

/// Sixteen `f32` exponential draws (for [`Unit::Laplace`], with a random
/// sign) from the next four steps of `lanes`: the logarithm of each
/// uniform in `f32` lanes ([`ln_to_f32`]).
#[inline(always)]
fn exponential_to_f32(kind: Unit, lanes: &mut impl Steps) -> [f32; 16] {
    let (u0, spare0) = unit_lanes(lanes);
    let (u1, spare1) = unit_lanes(lanes);
    let ln = ln_to_f32(&u0, &u1);
    let mut spare = [0; 16];
    spare[..8].copy_from_slice(&spare0);
    spare[8..].copy_from_slice(&spare1);
    let mut x = [0.0f32; 16];
    for l in 0..16 {
        let negative = kind == Unit::Laplace && spare[l] & 1 == 0;
        x[l] = if negative { ln[l] } else { -ln[l] };
    }
    x
}

/// A draw of `kind` rounded to the element type: a uniform stays inside
/// (0, 1), which `f32` rounds those within `2^-25` of 1 out of.
#[inline(always)]
fn unit_element<F: Element>(kind: Unit, x: f64) -> F {
    let v = F::lit(x);
    match kind {
        Unit::Uniform => v.min(F::one() - F::epsilon() * F::lit(0.5)),
        _ => v,
    }
}

/// `len` draws of `kind` in the element type, seeded from `rng` (one
/// `next_u64`), eight lanes at a time and in [`standard_normal`]'s parts,
/// so that a seed gives the same values on any CPU and thread count. The
/// draws are computed in `f64` and rounded once, but for the `f32` draws
/// whose last step is a logarithm (exponential, Laplace, Gumbel and
/// ln-exponential), which take it in `f32` lanes from an exact `f64`
/// reduction ([`ln_to_f32`]: within two ulp).
pub(crate) fn unit_draws<F: Element>(kind: Unit, len: usize, rng: &mut dyn Rng) -> Storage<F> {
    let seed = rng.next_u64();
    // one body for each kind, with the transform chosen outside the loop
    macro_rules! each_kind {
        ($($k:ident),*) => {
            match kind {
                // SAFETY: `fill_units` writes every element of each chunk
                $(Unit::$k => unsafe {
                    super::parallel::par_new(
                        len,
                        #[inline(always)]
                        |start, chunk| fill_units(Unit::$k, seed, start, chunk),
                    )
                },)*
            }
        };
    }
    each_kind!(
        Uniform,
        Exponential,
        Laplace,
        Gumbel,
        LnExponential,
        Logistic,
        Cauchy,
        HalfCauchy
    )
}

/// xoshiro256++ seeded from one `u64` through PCG32 outputs: the generator
/// and the seeding of `rand` 0.8's `SmallRng::seed_from_u64` on 64-bit
/// targets, written out so that the signs (and the Gamma, Beta and
/// Dirichlet draws) of a seed do not change when a `rand` release changes
/// its small generator (0.9 did).
pub(crate) struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub(crate) fn new(mut state: u64) -> Self {
        let mut words = [0u32; 8];
        for w in &mut words {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(11_634_580_027_462_260_723);
            let xorshifted = (((state >> 18) ^ state) >> 27) as u32;
            *w = xorshifted.rotate_right((state >> 59) as u32);
        }
        let mut s: [u64; 4] =
            std::array::from_fn(|i| u64::from(words[2 * i]) | u64::from(words[2 * i + 1]) << 32);
        if s == [0; 4] {
            // the one state xoshiro cannot leave (never reached from a PCG sequence)
            s[0] = 1;
        }
        Xoshiro256 { s }
    }

    #[inline(always)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        xoshiro256pp(&mut self.s)
    }
}

/// One step of xoshiro256++ (Blackman and Vigna): the output, and the
/// state advanced.
#[inline(always)]
pub(crate) fn xoshiro256pp(s: &mut [u64; 4]) -> u64 {
    let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    out
}

/// The seed of the random stream of the part of a tensor that starts at
/// element `start`, for a tensor drawn with `seed`: `par_fill` hands out
/// parts starting at 0 and, for long tensors, one more.
fn part_seed(seed: u64, start: usize) -> u64 {
    if start == 0 {
        seed
    } else {
        seed ^ 0x9E37_79B9_7F4A_7C15
    }
}

/// `len` random signs ±1, one random bit each, seeded from `rng` (one
/// `next_u64`). Each of `par_fill`'s parts (one for a short tensor, two
/// halves on two threads for a long one) takes its signs from its own
/// xoshiro256++ stream, 64 from each draw, lowest bit first; the first
/// part's stream is the seed's. So the signs of a seed do not depend on
/// the thread count.
pub(crate) fn rademacher<F: Element>(len: usize, rng: &mut dyn Rng) -> Storage<F> {
    let seed = rng.next_u64();
    // written without a zero-fill first, 32 at a time: the loop over the
    // bits of a 32-bit word is arithmetic (2 bit - 1, as a float), so it
    // vectorizes
    #[inline(always)]
    fn signs<F: Element>(word: u32, out: &mut [MaybeUninit<F>]) {
        for (i, o) in out.iter_mut().enumerate() {
            let bit = ((word >> i) & 1) as i32;
            o.write(F::lit(f64::from(2 * bit - 1)));
        }
    }
    // SAFETY: the chunks of 64 cover each part, and `signs` writes every
    // element of both halves of a chunk
    unsafe {
        super::parallel::par_new(
            len,
            #[inline(always)]
            |start, part| {
                let mut local = Xoshiro256::new(part_seed(seed, start));
                for chunk in part.chunks_mut(64) {
                    let bits = local.next_u64();
                    let (low, high) = chunk.split_at_mut(chunk.len().min(32));
                    signs(bits as u32, low);
                    signs((bits >> 32) as u32, high);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Tensor, rademacher, standard_normal};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// The first draws of `rand` 0.8's `SmallRng::seed_from_u64(0)` and
    /// `(1)` on a 64-bit target, recorded from that release.
    #[test]
    fn xoshiro256_is_rand_0_8s_small_rng() {
        assert_eq!(Xoshiro256::new(0).next_u64(), 8_251_690_495_967_107_212);
        let mut one = Xoshiro256::new(1);
        assert_eq!(one.next_u64(), 13_159_342_511_175_687_856);
        assert_eq!(one.next_u64(), 711_931_187_601_865_195);
    }

    const KINDS: [Unit; 8] = Unit::ALL;

    /// The parts `par_fill` cuts a tensor of `len` elements into, as
    /// `(start, end)`: the whole, or the halves of a long one.
    fn fill_parts(len: usize) -> Vec<(usize, usize)> {
        use crate::kernels::parallel::{PARALLEL_MIN, halves};
        match halves(len, PARALLEL_MIN) {
            None => vec![(0, len)],
            Some(mid) => vec![(0, mid), (mid, len)],
        }
    }

    /// The distribution function of each kind, in `f64`.
    fn cdf(kind: Unit, x: f64) -> f64 {
        use std::f64::consts::PI;
        match kind {
            Unit::Uniform => x.clamp(0.0, 1.0),
            Unit::Exponential => -(-x.max(0.0)).exp_m1(),
            Unit::Laplace if x < 0.0 => 0.5 * x.exp(),
            Unit::Laplace => 1.0 - 0.5 * (-x).exp(),
            Unit::Gumbel => (-(-x).exp()).exp(),
            Unit::LnExponential => -(-x.exp()).exp_m1(),
            Unit::Logistic => 1.0 / (1.0 + (-x).exp()),
            Unit::Cauchy => 0.5 + x.atan() / PI,
            Unit::HalfCauchy => 2.0 * x.max(0.0).atan() / PI,
        }
    }

    /// The draws of every kind follow its distribution: the share below
    /// each decile within five standard errors, in `f32` and `f64`, and
    /// every draw finite (and inside (0, 1) for the uniforms).
    #[test]
    fn unit_draws_follow_their_distributions() {
        const N: usize = 200_000;
        for kind in KINDS {
            let x64: Storage<f64> = unit_draws(kind, N, &mut SmallRng::seed_from_u64(5));
            let x32: Storage<f32> = unit_draws(kind, N, &mut SmallRng::seed_from_u64(5));
            let x32: Vec<f64> = x32.iter().map(|&x| f64::from(x)).collect();
            for x in [&x64[..], &x32[..]] {
                assert!(x.iter().all(|x| x.is_finite()), "{kind:?}");
                if kind == Unit::Uniform {
                    assert!(x.iter().all(|&u| u > 0.0 && u < 1.0), "{kind:?}");
                }
                for p in [0.1, 0.25, 0.5, 0.75, 0.9] {
                    // the decile, by bisection of the distribution function
                    let (mut lo, mut hi) = (-1e3, 1e3);
                    for _ in 0..200 {
                        let mid = 0.5 * (lo + hi);
                        if cdf(kind, mid) < p {
                            lo = mid
                        } else {
                            hi = mid
                        }
                    }
                    let below = x.iter().filter(|&&v| v < lo).count() as f64 / N as f64;
                    let se = (p * (1.0 - p) / N as f64).sqrt();
                    assert!(
                        (below - p).abs() < 5.0 * se,
                        "{kind:?}: P(x < {lo}) = {below}, not {p}"
                    );
                }
            }
            // the two parts of a long tensor use different streams
            assert_ne!(x64[..8], x64[N / 2..N / 2 + 8], "{kind:?}");
        }
    }

    /// The bulk draws are the lane transforms of the uniforms in order,
    /// eight a step, whatever passes a kind takes (Gumbel's two), up to a
    /// length that ends inside a block and across the two threads' parts:
    /// the same bits, but for the `f32` exponential and Laplace draws and
    /// the logarithms of exponential draws, whose (outer) logarithm is
    /// taken in `f32` (within two ulp of the `f64` value rounded).
    #[test]
    fn unit_draws_are_the_lane_transforms_of_the_stream() {
        for kind in KINDS {
            for len in [
                13,
                256 + 8 + 3,
                3 * super::super::parallel::PARALLEL_MIN + 5,
            ] {
                let mut rng = SmallRng::seed_from_u64(3);
                let x64: Storage<f64> = unit_draws(kind, len, &mut rng.clone());
                let x32: Storage<f32> = unit_draws(kind, len, &mut rng.clone());
                let seed = rng.next_u64();
                let mut want = Vec::with_capacity(len);
                for (start, end) in fill_parts(len) {
                    let mut lanes = Lanes::new(part_seed(seed, start));
                    while want.len() < end {
                        let (u, spare) = unit_lanes(&mut lanes);
                        let x = unit_transform(kind, &u, &spare);
                        let take = (end - want.len()).min(8);
                        want.extend_from_slice(&x[..take]);
                    }
                }
                for i in 0..len {
                    assert_eq!(x64[i].to_bits(), want[i].to_bits(), "{kind:?}, {len}: {i}");
                    let w32: f32 = unit_element(kind, want[i]);
                    if matches!(
                        kind,
                        Unit::Gumbel | Unit::LnExponential | Unit::Exponential | Unit::Laplace
                    ) {
                        // a logarithm in `f32` (`ln_to_f32`)
                        let ulp = f32::from_bits(w32.abs().to_bits() + 1) - w32.abs();
                        assert!((x32[i] - w32).abs() <= 2.0 * ulp, "{kind:?}, {len}: {i}");
                    } else {
                        assert_eq!(x32[i].to_bits(), w32.to_bits(), "{kind:?}, {len}: {i}");
                    }
                }
            }
        }
    }

    /// `ln_to_f32` against the `f64` logarithm rounded to `f32`, over the
    /// exponential draws' range `[1.1e-16, 36.8]` (a thousand points a
    /// binade) and within `2^-20` of 1, where the result has its digits in
    /// the low bits of `x`: within two ulp of the rounded value.
    #[test]
    fn ln_to_f32_is_within_two_ulp() {
        let mut xs: Vec<f64> = Vec::new();
        let mut x = 1.1e-16;
        while x < 36.8 {
            xs.push(x);
            x *= 1.000_693;
        }
        xs.extend((1..4000).flat_map(|i| {
            let d = f64::from(i) * 2f64.powi(-32);
            [
                1.0 + d,
                1.0 - d,
                std::f64::consts::SQRT_2 + d,
                std::f64::consts::FRAC_1_SQRT_2 - d,
            ]
        }));
        let ulp = |v: f32| f64::from(f32::from_bits(v.abs().to_bits() + 1) - v.abs());
        let mut worst = 0.0f64;
        for x in xs.chunks(16) {
            let x: [f64; 16] = std::array::from_fn(|l| x[l.min(x.len() - 1)]);
            let got = ln_to_f32(x[..8].try_into().unwrap(), x[8..].try_into().unwrap());
            for l in 0..16 {
                let want = x[l].ln();
                let err = (f64::from(got[l]) - want).abs() / ulp(want as f32);
                assert!(
                    err <= 2.0,
                    "ln {}: {} against {want} ({err} ulp)",
                    x[l],
                    got[l]
                );
                worst = worst.max(err);
            }
        }
        assert!(worst > 0.5, "{worst}: the check checks nothing");
    }

    /// The transforms at the ends of the uniforms, `u = 2^-53` and `1 -
    /// 2^-53` (52 bits all 0 or all 1), and in between, against `f64`
    /// closed forms: finite, within a few ulp, and `f32`'s uniforms still
    /// inside (0, 1).
    #[test]
    fn unit_transforms_keep_their_digits_at_both_ends() {
        use std::f64::consts::PI;
        // u from 52 chosen bits, as `unit_lanes` forms it
        let u_of =
            |j: u64| (f64::from_bits(TWO_52.to_bits() | j) - TWO_52 + 0.5) * TWO_POW_MINUS_52;
        let (lowest, highest) = (u_of(0), u_of((1 << 52) - 1));
        assert_eq!((lowest, 1.0 - highest), (2f64.powi(-53), 2f64.powi(-53)));
        let mut js: Vec<u64> = vec![
            0,
            1,
            2,
            (1 << 51) - 1,
            1 << 51,
            (1 << 52) - 2,
            (1 << 52) - 1,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        js.extend((0..4000).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state >> 12
        }));
        for block in js.chunks(8) {
            let mut u = [0.5; 8];
            let mut spare = [0u32; 8];
            for (l, &j) in block.iter().enumerate() {
                u[l] = u_of(j);
                spare[l] = j as u32;
            }
            for kind in KINDS {
                let x = unit_transform(kind, &u, &spare);
                for l in 0..block.len() {
                    let (u, x) = (u[l], x[l]);
                    // the complement, exact
                    let v = 1.0 - u;
                    let e = -u.ln();
                    let want = match kind {
                        Unit::Uniform => u,
                        Unit::Exponential => e,
                        Unit::Laplace => {
                            if spare[l] & 1 == 1 {
                                e
                            } else {
                                -e
                            }
                        }
                        Unit::Gumbel => -e.ln(),
                        Unit::LnExponential => e.ln(),
                        Unit::Logistic => u.ln() - v.ln(),
                        // tan near its poles from the complement: tan(π(1/2 - c)) = 1/tan(π c)
                        Unit::Cauchy if u < 0.25 => -1.0 / (PI * u).tan(),
                        Unit::Cauchy if u > 0.75 => 1.0 / (PI * v).tan(),
                        Unit::Cauchy => (PI * (u - 0.5)).tan(),
                        Unit::HalfCauchy if u < 0.5 => (0.5 * PI * u).tan(),
                        Unit::HalfCauchy => 1.0 / (0.5 * PI * v).tan(),
                    };
                    assert!(x.is_finite(), "{kind:?} at u = {u}: {x}");
                    // a few ulp of the larger of the result and the terms it is made of
                    // (a logarithm of E near 1 carries E's rounding as an absolute error)
                    let scale = match kind {
                        Unit::Logistic => u.ln().abs().max(v.ln().abs()),
                        Unit::Gumbel | Unit::LnExponential => want.abs().max(1.0),
                        _ => want.abs(),
                    };
                    assert!(
                        (x - want).abs() <= 8.0 * f64::EPSILON * scale,
                        "{kind:?} at u = {u}: {x}, expected {want}"
                    );
                    let (x32, x64) = (unit_element::<f32>(kind, x), unit_element::<f64>(kind, x));
                    assert!(x32.is_finite() && x64 == x, "{kind:?} at u = {u}: {x32}");
                    if kind == Unit::Uniform {
                        assert!(x32 > 0.0 && x32 < 1.0, "u = {u} in f32: {x32}");
                    }
                }
            }
        }
    }

    /// A [`UnitStream`] read piece by piece over `par_fill`'s parts gives
    /// the draws of [`unit_draws`] bit for bit, for every kind, both
    /// element types and each instruction set (its steps are drawn ahead
    /// in AVX2 registers where the CPU has them), with a part that ends
    /// inside a group of sixteen and one that spans several pieces.
    #[test]
    fn unit_streams_give_the_unit_draws() {
        use crate::kernels::parallel::{PARALLEL_MIN, Tier, on_tier};
        fn check<F: Element>(kind: Unit, len: usize) {
            let mut rng = SmallRng::seed_from_u64(11);
            let want: Storage<F> = unit_draws(kind, len, &mut rng.clone());
            let seed = rng.next_u64();
            let mut got = Vec::with_capacity(len);
            for (start, end) in fill_parts(len) {
                let mut stream = UnitStream::<F>::new(seed, start);
                let mut at = start;
                while at < end {
                    let piece = UNIT_PIECE.min(end - at);
                    got.extend_from_slice(stream.next_piece(kind, piece));
                    at += piece;
                }
            }
            let bits = |x: &[F]| {
                x.iter()
                    .map(|x| x.to_f64().map(f64::to_bits))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&got), bits(&want), "{kind:?}, {len}");
        }
        for tier in [Tier::Avx512, Tier::Avx2Fma, Tier::Portable] {
            on_tier(tier, || {
                for kind in KINDS {
                    for len in [13, 2 * UNIT_PIECE + 40, 2 * PARALLEL_MIN + 1000 + 5] {
                        check::<f32>(kind, len);
                        check::<f64>(kind, len);
                    }
                }
            });
        }
    }

    /// The draws are the same bits on every instruction set.
    #[test]
    fn unit_draws_are_the_same_on_every_tier() {
        use crate::kernels::parallel::{Tier, on_tier};
        for kind in KINDS {
            let draw =
                || -> Storage<f32> { unit_draws(kind, 50_000, &mut SmallRng::seed_from_u64(2)) };
            let portable = on_tier(Tier::Portable, draw).expect("portable");
            for tier in [Tier::Avx2Fma, Tier::Avx512] {
                if let Some(other) = on_tier(tier, draw) {
                    assert!(
                        portable
                            .iter()
                            .zip(other.iter())
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kind:?} on {tier:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn normal_moments_and_reproducibility() {
        // mean within 5 se (1/sqrt(n)), variance within 5 se (sqrt(2/n))
        let mut rng = SmallRng::seed_from_u64(1);
        let t: Tensor<f64> = standard_normal(&[100_000], &mut rng);
        let n = t.len() as f64;
        let mean = t.sum_all() / n;
        let var = t.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 5.0 / n.sqrt() && (var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
            "{mean} {var}"
        );
        let again: Tensor<f64> = standard_normal(&[100_000], &mut SmallRng::seed_from_u64(1));
        assert_eq!(t, again);
        let halves_differ = t.data()[..10] != t.data()[50_000..50_010];
        assert!(halves_differ, "the two threads must use different streams");
    }

    #[test]
    fn normal_cdf_and_tails_match_in_f32() {
        // P(z < q) at a few quantiles, and E z^4 = 3, within 5 standard errors
        let t: Tensor<f32> = standard_normal(&[400_000], &mut SmallRng::seed_from_u64(9));
        let n = t.len() as f64;
        for (q, p) in [
            (-2.0, 0.022_750_131_948_179_2),
            (-1.0, 0.158_655_253_931_457_05),
            (0.0, 0.5),
            (0.5, 0.691_462_461_274_013_1),
            (2.5, 0.993_790_334_674_223_8),
        ] {
            let below = t.data().iter().filter(|&&z| (z as f64) < q).count() as f64 / n;
            let se = (p * (1.0 - p) / n).sqrt();
            assert!(
                (below - p).abs() < 5.0 * se,
                "P(z < {q}) = {below}, expected {p}"
            );
        }
        let m4 = t.data().iter().map(|&z| (z as f64).powi(4)).sum::<f64>() / n;
        assert!((m4 - 3.0).abs() < 5.0 * (96.0 / n).sqrt(), "E z^4 = {m4}"); // var z^4 = 105 - 9
        assert!(t.data().iter().all(|z| z.is_finite()));
    }

    #[test]
    fn box_muller_at_the_ends_of_the_uniforms() {
        // u1 = 1 (the largest draw rounds up to it): radius 0
        let (c, s) = box_muller(u32::MAX, 0);
        assert_eq!((c.abs(), s.abs()), (0.0, 0.0));
        // u1 = 2^-32 (draw 0): radius sqrt(64 ln 2) = 6.660, angle 0
        let (c, s) = box_muller(0, 0);
        let radius = (64.0 * std::f64::consts::LN_2).sqrt();
        assert!((f64::from(c) - radius).abs() < 1e-5 && s == 0.0, "{c} {s}");
        // the largest angle draw, u2 = 1 - 2^-23, is just below a full turn
        let (c, s) = box_muller(0, u32::MAX);
        let angle = std::f64::consts::TAU * (1.0 - 2f64.powi(-23));
        assert!((f64::from(c) - radius * angle.cos()).abs() < 1e-5, "{c}");
        assert!((f64::from(s) - radius * angle.sin()).abs() < 1e-5, "{s}");
    }

    #[test]
    fn box_muller_matches_the_double_precision_transform() {
        let mut lanes = Lanes::new(3);
        let mut worst: f64 = 0.0;
        for _ in 0..20_000 {
            let (a, b) = (lanes.next(), lanes.next());
            for i in 0..8 {
                let (c, s) = box_muller(a[i], b[i]);
                // u1 as the transform sees it (rounded to f32, which alone
                // moves the radius by up to 1e-4 near u1 = 1)
                let u1 = f64::from(((a[i] >> 1) as f32 + 0.5) / 2f32.powi(31));
                let u2 = f64::from(b[i] >> 9) / 2f64.powi(23);
                let r = (-2.0 * u1.ln()).sqrt();
                let (es, ec) = (std::f64::consts::TAU * u2).sin_cos();
                worst = worst
                    .max((f64::from(c) - r * ec).abs())
                    .max((f64::from(s) - r * es).abs());
            }
        }
        // two f32 ulp of the largest radius (6.7)
        assert!(worst < 1e-6, "worst absolute error {worst}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_path_gives_the_portable_values_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let (mut vector, mut scalar) = (Lanes::new(11), Lanes::new(11));
        let mut fast = vec![0.0f32; 1 << 20];
        // SAFETY: the CPU has AVX2 (checked above)
        unsafe { avx2::normals(&mut vector, &mut fast) };
        for block in fast.chunks_exact(16) {
            let mut expected = [0.0f32; 16];
            normals_portable(&mut scalar, &mut expected);
            let same = block
                .iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{block:?} vs {expected:?}");
        }
        assert_eq!(
            vector.s, scalar.s,
            "both paths leave the streams in the same state"
        );
    }

    #[test]
    fn rademacher_takes_64_signs_per_draw_lowest_bit_first() {
        for shape in [vec![150], vec![2, 64], vec![], vec![0, 3]] {
            let t: Tensor<f64> = rademacher(&shape, &mut SmallRng::seed_from_u64(3));
            let mut local = Xoshiro256::new(SmallRng::seed_from_u64(3).next_u64());
            let draws: Vec<u64> = (0..3).map(|_| local.next_u64()).collect();
            assert_eq!(t.shape(), &shape[..]);
            for (i, &x) in t.data().iter().enumerate() {
                let bit = (draws[i / 64] >> (i % 64)) & 1;
                assert_eq!(x, if bit == 1 { 1.0 } else { -1.0 }, "{shape:?} at {i}");
            }
        }
    }

    /// A long tensor's two halves (`par_fill`'s parts) take their signs
    /// from two streams: the seed's, and a second one from the middle on.
    #[test]
    fn long_rademacher_tensors_draw_each_half_from_its_own_stream() {
        let len = 3 * crate::kernels::parallel::PARALLEL_MIN + 13;
        let t: Tensor<f32> = rademacher(&[len], &mut SmallRng::seed_from_u64(5));
        let seed = SmallRng::seed_from_u64(5).next_u64();
        let mid = len / 2;
        for (start, part) in [(0, &t.data()[..mid]), (mid, &t.data()[mid..])] {
            let mut local = Xoshiro256::new(part_seed(seed, start));
            let mut bits = 0;
            for (i, &x) in part.iter().enumerate() {
                if i % 64 == 0 {
                    bits = local.next_u64();
                }
                let want = if (bits >> (i % 64)) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                };
                assert_eq!(x, want, "part at {start}, element {i}");
            }
        }
    }

    #[test]
    fn rademacher_is_balanced() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t: Tensor<f32> = rademacher(&[10_000], &mut rng);
        assert!(t.data().iter().all(|&x| x == 1.0 || x == -1.0));
        assert!(t.sum_all().abs() < 5.0 * 100.0); // se = sqrt(n) = 100
    }
}
