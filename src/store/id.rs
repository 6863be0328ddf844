//! Identifiers for rollouts, incidents and reviews: `<prefix>-<time><random>`,
//! lowercase Crockford base32, sortable by creation time. The time comes
//! from the caller and the randomness from a seedable generator, so tests
//! and the simulator get the same IDs on every run.

use crate::time::Timestamp;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A splitmix64 generator: not cryptographic, only unlikely to collide.
#[derive(Clone, Debug)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    pub fn from_seed(seed: u64) -> IdGen {
        IdGen { state: seed }
    }

    /// Seeded from the OS's random source (falls back to a fixed seed only
    /// if the OS has none, which `getrandom` reports as an error).
    pub fn from_os() -> IdGen {
        IdGen::from_seed(getrandom::u64().unwrap_or(0x5eed_cafe_f00d_d00d))
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `prefix-` then 10 characters of milliseconds (48 bits) and 8 of
    /// randomness (40 bits): `r-01jd3x5k2m7q4w9zty6c`.
    pub fn next(&mut self, prefix: &str, now: Timestamp) -> String {
        let mut id = String::with_capacity(prefix.len() + 19);
        id.push_str(prefix);
        id.push('-');
        push_base32(&mut id, now.as_millis() & ((1 << 50) - 1), 10);
        push_base32(&mut id, self.next_u64() >> 24, 8);
        id
    }
}

fn push_base32(out: &mut String, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(ALPHABET[((value >> (5 * i)) & 31) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_repeat_with_the_seed() {
        let mut a = IdGen::from_seed(7);
        let mut b = IdGen::from_seed(7);
        let first = a.next("r", Timestamp::from_millis(1_700_000_000_000));
        assert_eq!(
            first,
            b.next("r", Timestamp::from_millis(1_700_000_000_000))
        );
        assert_eq!(first.len(), 2 + 18);
        let later = a.next("r", Timestamp::from_millis(1_700_000_000_001));
        assert!(later > first, "{later} sorts after {first}");
    }
}
