//! The application livebase ships, laid out as the seed's backend guidelines
//! say: `features/<name>/{schema.rs, logic.rs}` plus the registered functions of
//! each module (paths `module:name`), and `shared/auth/` for the three levels
//! of permission checks.

pub mod features;

use livebase_runtime::registry::Registry;
use livebase_schema::Schema;

use features::items::schema::{items_table, ITEMS};
use features::todos::schema::{todos_table, TODOS};
use features::user_profiles::schema::{user_profiles_table, USER_PROFILES};

/// The application's tables.
pub fn schema() -> Schema {
    Schema::new()
        .table(ITEMS, items_table())
        .table(TODOS, todos_table())
        .table(USER_PROFILES, user_profiles_table())
}

/// The application: its schema and every registered function.
pub fn app() -> Registry {
    Registry::new(schema())
}
