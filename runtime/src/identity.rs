//! [`Identity`]: who is calling a function. A leaf: the function contexts,
//! the executor, the subscription worker and auth all name it, and it names
//! nothing of theirs.

/// Who is calling: nobody, or a signed-in user with a live session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Identity {
    #[default]
    Anonymous,
    User {
        user_id: String,
        session_id: String,
    },
}

impl Identity {
    /// A stable key for sharing query evaluations between identical callers.
    pub fn cache_key(&self) -> String {
        match self {
            Identity::Anonymous => String::new(),
            Identity::User { session_id, .. } => session_id.clone(),
        }
    }
}
