//! Document ids. An id is a string that names its table: `<table>_<16 base32
//! chars>` (80 random bits), e.g. `todos_k3vq0h2m8x1c7rpa`. Table names may contain
//! `_`; the random part never does, so the id splits at its last `_`.

use std::fmt;

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RANDOM_LEN: usize = 16;

/// A document id: the table it belongs to plus a random part.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentId(String);

impl DocumentId {
    /// A fresh random id in `table`.
    pub fn generate(table: &str) -> DocumentId {
        let mut rng = rand::rng();
        let mut s = String::with_capacity(table.len() + 1 + RANDOM_LEN);
        s.push_str(table);
        s.push('_');
        for _ in 0..RANDOM_LEN {
            s.push(ALPHABET[rng.random_range(0..32)] as char);
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
}
