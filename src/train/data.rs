//! Minibatches: a seeded shuffle and an iterator over shuffled batches of
//! row indices, to pair with [`Tensor::select_rows`](crate::Tensor::select_rows).

use rand::Rng;

/// Fisher–Yates, each index drawn below `i + 1` by Lemire's multiply with
/// rejection on 32-bit draws (the shuffle of `rand` 0.8, written out so that
/// a seed gives the same order whatever `rand` release draws it).
///
/// # Panics
/// On slices of 2^32 elements or more.
pub fn shuffle<T>(items: &mut [T], rng: &mut dyn Rng) {
    for i in (1..items.len()).rev() {
        let range = u32::try_from(i + 1).expect("fewer than 2^32 items");
        let zone = (range << range.leading_zeros()).wrapping_sub(1);
        let j = loop {
            let wide = u64::from(rng.next_u32()) * u64::from(range);
            if wide as u32 <= zone {
                break (wide >> 32) as usize;
            }
        };
        items.swap(i, j);
    }
}

/// The rows `0..rows` in a fresh shuffled order, cut into batches of
/// `batch_size` (the last one may be shorter); one epoch.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::train::Minibatches;
/// let x = Tensor::from_rows(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])?;
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut seen = 0;
/// for rows in Minibatches::new(3, 2, &mut rng)? {
///     let batch = x.select_rows(&rows)?;
///     seen += batch.shape()[0];
/// }
/// assert_eq!(seen, 3);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Minibatches {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Minibatches {
    /// One epoch over `rows` rows in batches of `batch_size`, shuffled by `rng`.
    ///
    /// # Errors
    /// A `batch_size` of 0.
    pub fn new(rows: usize, batch_size: usize, rng: &mut dyn Rng) -> crate::Result<Self> {
        if batch_size == 0 {
            return Err(crate::Error::invalid(
                "Minibatches::new",
                "batch_size must be at least 1",
            ));
        }
        let mut order: Vec<usize> = (0..rows).collect();
        shuffle(&mut order, rng);
        Ok(Minibatches {
            order,
            batch_size,
            next: 0,
        })
    }

    /// The number of batches in the epoch.
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

impl Iterator for Minibatches {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let rows = self.order[self.next..end].to_vec();
        self.next = end;
        Some(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// rand 0.8's `SliceRandom::shuffle` of 0..10 with `StdRng::seed_from_u64(5)`,
    /// recorded from that release.
    #[test]
    fn shuffle_is_rand_0_8s() {
        let mut v: Vec<usize> = (0..10).collect();
        shuffle(&mut v, &mut StdRng::seed_from_u64(5));
        assert_eq!(v, [7, 8, 6, 5, 2, 1, 9, 4, 0, 3]);
    }

    #[test]
    fn every_row_once_per_epoch() {
        let mut rng = StdRng::seed_from_u64(1);
        let batches: Vec<Vec<usize>> = Minibatches::new(10, 4, &mut rng).unwrap().collect();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(Minibatches::new(10, 0, &mut rng).is_err());
    }
}
