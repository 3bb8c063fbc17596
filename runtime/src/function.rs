//! What names a function and what it is called with: its path
//! ([`canonical_path`]), its [`FunctionKind`] and [`Visibility`], who may
//! look it up ([`Access`]), and its validated [`Args`]. A leaf below the
//! registry, the contexts and the system tables, which all speak of paths.

use livebase_schema::{DocumentId, SharedObject, Value};

use crate::error::{Error, Result};

/// The canonical form of a function path: `module:name`, a module's `.js`
/// suffix dropped (the npm client may send it) and `default` when no name is
/// given.
pub fn canonical_path(path: &str) -> String {
    let (module, name) = path.rsplit_once(':').unwrap_or((path, "default"));
    let module = module.strip_suffix(".js").unwrap_or(module);
    format!("{module}:{name}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FunctionKind {
    Query,
    Mutation,
    Action,
}

impl FunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Query => "query",
            FunctionKind::Mutation => "mutation",
            FunctionKind::Action => "action",
        }
    }
}

/// Whether clients may call a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Visibility {
    Public,
    /// Callable only from actions and the scheduler; to clients it looks
    /// exactly like a function that does not exist.
    Internal,
}

/// Which functions a lookup may find: a client's finds only public ones
/// (an internal function is reported exactly as a missing one), the
/// server's — actions calling functions, the scheduler — any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    PublicOnly,
    Any,
}

impl Access {
    /// Whether a function of `visibility` is found.
    pub fn allows(self, visibility: Visibility) -> bool {
        match self {
            Access::PublicOnly => visibility == Visibility::Public,
            Access::Any => true,
        }
    }
}

/// Validated arguments of a call, with typed accessors whose errors name the
/// argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Args(SharedObject);

impl Args {
    pub fn new(fields: impl Into<SharedObject>) -> Args {
        Args(fields.into())
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn string(&self, name: &str) -> Result<String> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            other => Err(Error::invalid(format!(
                "args.{name}: expected a string, found {}",
                describe(other)
            ))),
        }
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.string(name).map(Some),
        }
    }

    pub fn f64(&self, name: &str) -> Result<f64> {
        self.0.get(name).and_then(Value::as_f64).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: expected a number, found {}",
                describe(self.0.get(name))
            ))
        })
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        self.0.get(name).and_then(Value::as_bool).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: expected a boolean, found {}",
                describe(self.0.get(name))
            ))
        })
    }

    /// An id argument that must name a document of `table`.
    pub fn id(&self, name: &str, table: &str) -> Result<DocumentId> {
        let s = self.string(name)?;
        DocumentId::parse_in(&s, table).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: `{s}` is not an id of table `{table}`"
            ))
        })
    }
}

fn describe(v: Option<&Value>) -> String {
    v.map_or("nothing".into(), |v| v.value_type().to_string())
}
