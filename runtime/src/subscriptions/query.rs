//! What identifies a shared live query, and its result as the wire carries
//! it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use livebase_schema::protocol::{FunctionError, ResultValue};
use livebase_schema::Value;

use crate::error::Result;

/// A query's latest result. The value is shared: every subscriber's
/// Transition points at the same one instead of holding a copy.
pub type SharedResult = std::result::Result<Arc<ResultValue>, FunctionError>;

/// What identifies a shared query: its canonical path, its arguments and its
/// caller. The state and the lookup map share one copy of it.
#[derive(PartialEq, Eq)]
pub struct QueryKey {
    pub path: String,
    pub args: Arc<Vec<Value>>,
    pub identity: String,
    /// A page re-added with a journal keeps its own end: it shares only
    /// with subscriptions that sent the same journal.
    pub journal: Option<String>,
}

impl Hash for QueryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
        self.identity.hash(state);
        self.journal.hash(state);
        for arg in self.args.iter() {
            hash_value(arg, state);
        }
    }
}

/// Hashes a value consistently with its `Eq` (floats by their bits, as
/// `total_cmp` compares them).
fn hash_value<H: Hasher>(value: &Value, state: &mut H) {
    std::mem::discriminant(value).hash(state);
    match value {
        Value::Null => {}
        Value::Int64(i) => i.hash(state),
        Value::Float64(f) => f.to_bits().hash(state),
        Value::Boolean(b) => b.hash(state),
        Value::String(s) => s.hash(state),
        Value::Bytes(b) => b.hash(state),
        Value::Array(items) => {
            items.len().hash(state);
            for item in items {
                hash_value(item, state);
            }
        }
        Value::Object(fields) => {
            fields.len().hash(state);
            for (name, item) in fields {
                name.hash(state);
                hash_value(item, state);
            }
        }
    }
}

/// A query's outcome as subscribers are sent it.
pub fn to_wire(result: Result<Value>) -> SharedResult {
    match result {
        Ok(v) => Ok(v.into()),
        Err(e) => Err(e.to_function_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equally_and_floats_are_told_apart_by_their_bits() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::Hasher;
        let key = |n: f64| QueryKey {
            path: "notes:list".into(),
            args: Arc::new(vec![livebase_schema::obj! { "a" => n, "b" => "x" }]),
            identity: String::new(),
            journal: None,
        };
        let hash = |k: &QueryKey| {
            let mut h = DefaultHasher::new();
            k.hash(&mut h);
            h.finish()
        };
        assert!(key(1.0) == key(1.0));
        assert_eq!(hash(&key(1.0)), hash(&key(1.0)));
        assert!(key(0.0) != key(-0.0));
        assert_ne!(hash(&key(0.0)), hash(&key(-0.0)));
    }
}
