//! A tiny deterministic PRNG so every allocator sees the same request stream.

/// xorshift64* generator: fast, deterministic, good enough for picking sizes
/// and slots (not for anything statistical).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator; different seeds give independent-looking streams.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 step so small consecutive seeds do not start correlated,
        // and the state is never zero (xorshift would stay at zero).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform value in `0..n` (`n > 0`); the slight modulo bias is irrelevant here.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 16) % n as u64) as usize
    }

    /// Uniform value in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Log-uniform size in `lo..=hi`: each power-of-two band is equally
    /// likely, so small sizes dominate by count as in real programs.
    #[inline]
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let lo_bits = usize::BITS - lo.leading_zeros();
        // Bit length of hi-1, so the top band is never clipped to a sliver.
        let hi_bits = (usize::BITS - (hi - 1).leading_zeros()).max(lo_bits);
        let bits = lo_bits + self.below((hi_bits - lo_bits + 1) as usize) as u32;
        let bottom = (1usize << (bits - 1)).max(lo);
        let top = ((1usize << bits) - 1).min(hi).max(bottom);
        self.range(bottom, top)
    }
}
