//! Document ids. An id is a string that names its table: `<table>_<16 base32
//! chars>` (80 bits), e.g. `todos_k3vq0h2m8x1c7rpa`. Table names may contain
//! `_`; the 80-bit part never does, so the id splits at its last `_`.
//!
//! New ids grow with time: the 80 bits are the milliseconds since the epoch
//! (42 bits) then a sequence (38 bits) that starts at a random point each
//! millisecond and counts up within it. The alphabet is in ASCII order, so
//! ids sort as they were made: a table's new documents are appended to the
//! end of the store's B-tree instead of scattered over it, and the documents
//! a query reads back (usually the recent ones) sit on a few pages instead of
//! one page each. Within a process ids never repeat, whatever the clock does.

use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RANDOM_LEN: usize = 16;
const SEQUENCE_BITS: u32 = 38;
const MILLIS_BITS: u32 = 42;

/// The last `(millisecond, sequence)` handed out in this process.
static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// The next 80-bit id value: after every earlier one of this process.
fn next_id_bits() -> u128 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & ((1 << MILLIS_BITS) - 1);
    // Starting each millisecond at a random point below half the range keeps
    // ids hard to guess and leaves 2^37 ids for the millisecond.
    let fresh = || rand::rng().random_range(0..1u64 << (SEQUENCE_BITS - 1));
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (ms, seq) = if now > last.0 {
        (now, fresh())
    } else if last.1 + 1 < 1 << SEQUENCE_BITS {
        (last.0, last.1 + 1)
    } else {
        (last.0 + 1, fresh())
    };
    *last = (ms, seq);
    (u128::from(ms) << SEQUENCE_BITS) | u128::from(seq)
}

/// A document id: the table it belongs to plus 80 bits that grow with time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentId(String);

impl DocumentId {
    /// A new id in `table`, after every id this process made before.
    pub fn generate(table: &str) -> DocumentId {
        let bits = next_id_bits();
        let mut s = String::with_capacity(table.len() + 1 + RANDOM_LEN);
        s.push_str(table);
        s.push('_');
        for i in (0..RANDOM_LEN).rev() {
            s.push(ALPHABET[((bits >> (5 * i)) & 31) as usize] as char);
        }
        DocumentId(s)
    }

    /// Parses an id string; `None` when it is not shaped like an id.
    pub fn parse(s: &str) -> Option<DocumentId> {
        let (table, random) = s.rsplit_once('_')?;
        let ok = !table.is_empty()
            && random.len() == RANDOM_LEN
            && random.bytes().all(|b| ALPHABET.contains(&b));
        ok.then(|| DocumentId(s.to_string()))
    }

    /// Parses an id that must belong to `table`.
    pub fn parse_in(s: &str, table: &str) -> Option<DocumentId> {
        DocumentId::parse(s).filter(|id| id.table() == table)
    }

    pub fn table(&self) -> &str {
        self.0.rsplit_once('_').map_or("", |(t, _)| t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<DocumentId> for crate::Value {
    fn from(id: DocumentId) -> Self {
        crate::Value::String(id.0)
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_table_and_parse_back() {
        let id = DocumentId::generate("user_profiles");
        assert_eq!(id.table(), "user_profiles");
        assert_eq!(DocumentId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(DocumentId::parse_in(id.as_str(), "todos"), None);
        assert_eq!(DocumentId::parse("todos_short"), None);
        assert_eq!(DocumentId::parse("nounderscore"), None);
    }

    #[test]
    fn new_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<DocumentId> = (0..10_000).map(|_| DocumentId::generate("t")).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        // Across tables too, the 80-bit part keeps growing.
        let a = DocumentId::generate("zebras");
        let b = DocumentId::generate("apes");
        let part = |id: &DocumentId| id.as_str().rsplit_once('_').unwrap().1.to_string();
        assert!(part(&a) < part(&b));
    }
}
