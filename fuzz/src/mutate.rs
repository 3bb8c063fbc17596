//! The mutator: a small seeded random generator and the byte-level mutations
//! the fuzzer applies to corpus inputs — bit flips, interesting bytes and
//! numbers, block deletes, duplicates and swaps, splices with another input,
//! truncations, and tokens from the target's dictionary (`{"$integer":`,
//! `"type":"Connect"`, …) that random bytes would almost never spell.

/// SplitMix64: tiny, fast and good enough to pick mutations; a seed makes a
/// run reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that often matter at the edges of parsers.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':',
    b'\n', b'-', b'0', b'9', b'e', b'.', b'$', b'=', b'+', b'/',
];

/// Numbers written as text, for JSON inputs: the edges of u32, i64, u64, f64.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "1e308",
    "1e309",
    "-1e309",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e-400",
    "0.0000001",
];

/// The longest input the mutator produces; beyond this, inputs only get
/// slower, not more interesting.
pub const MAX_INPUT_LEN: usize = 64 * 1024;

/// Applies one to four random mutations to `data` in place.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate_once(rng, data, corpus, dictionary);
    }
    data.truncate(MAX_INPUT_LEN);
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    let len = data.len();
    match rng.below(12) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Overwrite a byte with an interesting one, or a random one.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = if rng.chance(2) {
                *rng.pick(INTERESTING_BYTES)
            } else {
                rng.next_u64() as u8
            };
        }
        // Insert an interesting byte.
        2 => {
            let i = rng.below(len + 1);
            data.insert(i, *rng.pick(INTERESTING_BYTES));
        }
        // Delete a block.
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(16));
            data.drain(i..i + n);
        }
        // Duplicate a block in place (grows arrays, nesting, repeated keys).
        4 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            let block = data[i..i + n].to_vec();
            let at = rng.below(data.len() + 1);
            data.splice(at..at, block);
        }
        // Swap two bytes.
        5 if len > 1 => {
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        // Truncate.
        6 if len > 0 => data.truncate(rng.below(len)),
        // Splice: our head with another input's tail.
        7 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            let head = rng.below(len + 1);
            let tail = rng.below(other.len() + 1);
            data.truncate(head);
            data.extend_from_slice(&other[tail..]);
        }
        // Insert a block of another input (nests one frame inside another).
        8 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(256));
                let at = rng.below(len + 1);
                data.splice(at..at, other[i..i + n].iter().copied());
            }
        }
        // Insert or overwrite with a dictionary token.
        9 | 10 if !dictionary.is_empty() => {
            let token = *rng.pick(dictionary);
            let at = rng.below(len + 1);
            if rng.chance(2) || at == len {
                data.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token.iter().copied());
            }
        }
        // Replace a whole number (or insert one where there is none).
        11 => {
            let number = rng.pick(INTERESTING_NUMBERS).as_bytes();
            let in_number =
                |b: &u8| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
            let mut at = rng.below(len + 1);
            while at > 0 && at < len && in_number(&data[at]) && in_number(&data[at - 1]) {
                at -= 1;
            }
            let end = data[at..]
                .iter()
                .position(|b| !in_number(b))
                .map_or(len, |p| at + p);
            data.splice(at..end, number.iter().copied());
        }
        // A guarded arm did not apply (e.g. an empty input): add a random byte.
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.next_u64() as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_mutations() {
        let corpus = vec![b"{\"a\":1}".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut data = b"{\"type\":\"Connect\"}".to_vec();
            for _ in 0..100 {
                mutate(&mut rng, &mut data, &corpus, &[b"$integer"]);
            }
            data
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_stay_under_the_length_cap_and_never_panic_on_empty_input() {
        let mut rng = Rng::new(1);
        let mut data = Vec::new();
        for _ in 0..20_000 {
            mutate(&mut rng, &mut data, &[], &[b"0123456789abcdef"]);
            assert!(data.len() <= MAX_INPUT_LEN);
        }
    }
}
