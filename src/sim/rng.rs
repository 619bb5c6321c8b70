//! The simulator's seeded randomness: SplitMix64, small, fast and the same on every platform,
//! so one seed always gives the same drive, byte for byte.
//!
//! Each concern of a drive (motion, sky, corruption) draws from its own stream, so turning
//! corruption on never changes where the car goes. Not for anything that needs security.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough mixing
/// for a simulator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream for one concern of the drive: the same seed and `stream` always give the same
    /// sequence; different streams are unrelated.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        // Mixing the stream id through one round keeps nearby seeds from giving nearby streams.
        let mut mixer = SplitMix64 {
            state: stream.wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        SplitMix64 {
            state: seed ^ mixer.next_u64(),
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n`; 0 when `n` is 0 (there is nothing to choose from).
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for n far below 2^32, and no division.
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_give_the_same_sequence() {
        let mut a = SplitMix64::new(42, 1);
        let mut b = SplitMix64::new(42, 1);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn different_streams_of_one_seed_differ() {
        let mut a = SplitMix64::new(42, 1);
        let mut b = SplitMix64::new(42, 2);
        let same = (0..100).filter(|_| a.next_u64() == b.next_u64()).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn draws_stay_in_their_ranges_and_cover_them() {
        let mut r = SplitMix64::new(7, 0);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let x = r.range(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
            let k = r.below(10) as usize;
            assert!(k < 10);
            seen[k] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of below(10) turns up");
        assert_eq!(r.below(0), 0);
    }
}
