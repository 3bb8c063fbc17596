//! Decoded documents kept across reads, so re-running a live query over rows
//! that did not change copies them instead of parsing them again.
//!
//! An entry is found by id and used only if the stored text read now is
//! byte for byte the text it was decoded from: the text the snapshot holds is
//! the proof, so no invalidation (and no knowledge of commits or snapshots)
//! is needed, and a connection can never be handed a version its snapshot
//! does not hold.

use std::collections::HashMap;

use livebase_schema::table::{CREATION_TIME_FIELD, ID_FIELD};
use livebase_schema::{DocumentId, SharedObject, Value};

use super::Document;
use crate::error::StoreResult as Result;

/// Most bytes one connection's cache holds, counted as four times the
/// stored text (about what the decoded fields and, once a result has
/// encoded the document, its JSON text take). Past it, the cache starts
/// over.
pub const DECODED_CACHE_BYTES: usize = 8 << 20;

/// Stored texts longer than this are decoded every time (one such document
/// would take a large share of the cache).
const MAX_CACHED_TEXT: usize = 64 << 10;

/// One connection's decoded documents, by id.
#[derive(Default)]
pub struct DecodedDocuments {
    entries: HashMap<Box<str>, Entry>,
    bytes: usize,
}

/// A document as it was decoded from `text`: its value as functions see it
/// (system fields included), shared with every value read from it since.
struct Entry {
    text: Box<str>,
    id: DocumentId,
    creation_time: f64,
    value: SharedObject,
}

impl Entry {
    fn holds(&self, creation_time: f64, text: &str) -> bool {
        *self.text == *text && self.creation_time.to_bits() == creation_time.to_bits()
    }

    fn document(&self) -> Document {
        Document {
            id: self.id.clone(),
            creation_time: self.creation_time,
            fields: self
                .value
                .iter()
                .filter(|(name, _)| *name != ID_FIELD && *name != CREATION_TIME_FIELD)
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }
    }
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
        if let Some(entry) = self.entries.get(id) {
            if entry.holds(creation_time, text) {
                return Ok(entry.document());
            }
        }
        let doc = decode()?;
        if let Some(cost) = self.admit(id, text) {
            if let Value::Object(object) = doc.to_value() {
                self.insert(id, text, doc.id.clone(), doc.creation_time, object, cost);
            }
        }
        Ok(doc)
    }

    /// [`DecodedDocuments::get_or_decode`], as the document's value
    /// ([`Document::into_value`]): the cached value itself, shared, not a
    /// copy.
    pub fn value_or_decode(
        &mut self,
        id: &str,
        creation_time: f64,
        text: &str,
        decode: impl FnOnce() -> Result<Document>,
    ) -> Result<Value> {
        if let Some(entry) = self.entries.get(id) {
            if entry.holds(creation_time, text) {
                return Ok(Value::Object(entry.value.clone()));
            }
        }
        let doc = decode()?;
        let Some(cost) = self.admit(id, text) else {
            return Ok(doc.into_value());
        };
        let (doc_id, creation_time) = (doc.id.clone(), doc.creation_time);
        let value = doc.into_value();
        if let Value::Object(object) = &value {
            self.insert(id, text, doc_id, creation_time, object.clone(), cost);
        }
        Ok(value)
    }

    /// The cost of caching `text` under `id`, if it is cached at all (room
    /// made for it).
    fn admit(&mut self, id: &str, text: &str) -> Option<usize> {
        if text.len() > MAX_CACHED_TEXT {
            return None;
        }
        let cost = 4 * (text.len() + id.len());
        if self.bytes + cost > DECODED_CACHE_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        Some(cost)
    }

    fn insert(
        &mut self,
        id: &str,
        text: &str,
        doc_id: DocumentId,
        creation_time: f64,
        value: SharedObject,
        cost: usize,
    ) {
        let entry = Entry {
            text: text.into(),
            id: doc_id,
            creation_time,
            value,
        };
        if let Some(old) = self.entries.insert(id.into(), entry) {
            self.bytes -= 4 * (old.text.len() + id.len());
        }
        self.bytes += cost;
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
            fields: fields.into_fields(),
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
    fn a_value_read_again_is_shared_and_changing_it_leaves_the_cache_alone() {
        let id = DocumentId::generate("notes");
        let mut cache = DecodedDocuments::default();
        let read = |cache: &mut DecodedDocuments, text: &str, n: f64| {
            cache
                .value_or_decode(id.as_str(), 1.0, text, || Ok(doc(&id, n)))
                .expect("decodes")
        };
        let first = read(&mut cache, r#"{"n":1}"#, 1.0);
        let mut second = read(&mut cache, r#"{"n":1}"#, 1.0);
        let (Value::Object(a), Value::Object(b)) = (&first, &second) else {
            panic!("a document is an object");
        };
        assert!(a.ptr_eq(b), "the second read shares the first's fields");
        assert_eq!(first, doc(&id, 1.0).into_value());
        // A function changing the value it read changes its own copy.
        let Value::Object(fields) = &mut second else {
            unreachable!()
        };
        fields.insert("n".into(), Value::Float64(9.0));
        assert_eq!(
            read(&mut cache, r#"{"n":1}"#, 1.0),
            doc(&id, 1.0).into_value()
        );
        // The document as a `Document` is the same one, without system fields.
        let got = cache
            .get_or_decode(id.as_str(), 1.0, r#"{"n":1}"#, || panic!("cached"))
            .expect("cached");
        assert_eq!(got, doc(&id, 1.0));
        // Another text is decoded, not taken from the cache.
        assert_eq!(
            read(&mut cache, r#"{"n":2}"#, 2.0),
            doc(&id, 2.0).into_value()
        );
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
            cache
                .value_or_decode(id.as_str(), 1.0, &text, || Ok(doc(&id, 0.0)))
                .expect("decodes");
            assert!(cache.bytes() <= DECODED_CACHE_BYTES);
        }
    }
}
