//! Decoded documents kept across reads, so re-running a live query over rows
//! that did not change copies them instead of parsing them again.
//!
//! An entry is found by id and used only if the stored text read now is
//! byte for byte the text it was decoded from: the text the snapshot holds is
//! the proof, so no invalidation (and no knowledge of commits or snapshots)
//! is needed, and a connection can never be handed a version its snapshot
//! does not hold.

use std::collections::HashMap;

use super::Document;
use crate::error::StoreResult as Result;

/// Most bytes one connection's cache holds, counted as three times the
/// stored text (about what the decoded fields take). Past it, the cache
/// starts over.
pub const DECODED_CACHE_BYTES: usize = 8 << 20;

/// Stored texts longer than this are decoded every time (one such document
/// would take a large share of the cache).
const MAX_CACHED_TEXT: usize = 64 << 10;

/// One connection's decoded documents, by id.
#[derive(Default)]
pub struct DecodedDocuments {
    entries: HashMap<Box<str>, (Box<str>, Document)>,
    bytes: usize,
}

impl DecodedDocuments {
    /// The document stored as `text` under `id` (created at `creation_time`):
    /// a copy of the cached one if `text` is what it was decoded from,
    /// otherwise `decode`'s, which is then cached.
    pub fn get_or_decode(
        &mut self,
        id: &str,
        creation_time: f64,
        text: &str,
        decode: impl FnOnce() -> Result<Document>,
    ) -> Result<Document> {
        if let Some((cached_text, doc)) = self.entries.get(id) {
            if **cached_text == *text && doc.creation_time.to_bits() == creation_time.to_bits() {
                return Ok(doc.clone());
            }
        }
        let doc = decode()?;
        if text.len() <= MAX_CACHED_TEXT {
            let cost = 3 * (text.len() + id.len());
            if self.bytes + cost > DECODED_CACHE_BYTES {
                self.entries.clear();
                self.bytes = 0;
            }
            if let Some((old_text, _)) = self.entries.insert(id.into(), (text.into(), doc.clone()))
            {
                self.bytes -= 3 * (old_text.len() + id.len());
            }
            self.bytes += cost;
        }
        Ok(doc)
    }

    /// Bytes held, as counted against [`DECODED_CACHE_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use livebase_schema::{obj, DocumentId, Value};

    use super::*;

    fn doc(id: &DocumentId, n: f64) -> Document {
        let Value::Object(fields) = obj!("n" => n) else {
            unreachable!()
        };
        Document {
            id: id.clone(),
            creation_time: 1.0,
            fields,
        }
    }

    #[test]
    fn a_cached_document_is_used_only_for_the_text_it_was_decoded_from() {
        let id = DocumentId::generate("notes");
        let mut cache = DecodedDocuments::default();
        let mut decodes = 0;
        let mut read = |cache: &mut DecodedDocuments, text: &str, n: f64| {
            cache
                .get_or_decode(id.as_str(), 1.0, text, || {
                    decodes += 1;
                    Ok(doc(&id, n))
                })
                .expect("decodes")
        };
        assert_eq!(read(&mut cache, r#"{"n":1}"#, 1.0), doc(&id, 1.0));
        assert_eq!(read(&mut cache, r#"{"n":1}"#, 1.0), doc(&id, 1.0));
        // Another text under the same id (a newer or an older version): decoded.
        assert_eq!(read(&mut cache, r#"{"n":2}"#, 2.0), doc(&id, 2.0));
        assert_eq!(read(&mut cache, r#"{"n":1}"#, 1.0), doc(&id, 1.0));
        assert_eq!(decodes, 3);
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let mut cache = DecodedDocuments::default();
        let text = "x".repeat(1000);
        for _ in 0..(DECODED_CACHE_BYTES / 3000 + 10) {
            let id = DocumentId::generate("notes");
            cache
                .get_or_decode(id.as_str(), 1.0, &text, || Ok(doc(&id, 0.0)))
                .expect("decodes");
            assert!(cache.bytes() <= DECODED_CACHE_BYTES);
        }
    }
}
