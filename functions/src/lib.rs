//! The application livebase ships, laid out as the seed's backend guidelines
//! say: `features/<name>/{schema.rs, logic.rs}`, the registered functions of
//! each module beside them (`items.rs` registers `items:*`, as the seed's
//! `convex/items.ts`), and `shared/auth/` for the role table and the three
//! levels of permission checks.
//!
//! Users, sessions, organizations, members and invitations are the runtime's
//! tables (`livebase_runtime::auth::tables`); this crate adds the application's
//! own and the functions over both.

pub mod emails;
pub mod features;
pub mod files;
pub mod http;
pub mod items;
pub mod organizations;
pub mod shared;
pub mod todos;
pub mod user_profiles;

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

/// The application: its schema, every registered function and its HTTP
/// routes, with the webhook secret of `LIVEBASE_WEBHOOK_SECRET` (read now).
pub fn app() -> Registry {
    app_with_webhook_secret(http::WebhookSecret::from_env())
}

/// [`app`] with the webhook secret given (`None`: `POST /webhooks/items`
/// answers `503`).
pub fn app_with_webhook_secret(secret: Option<http::WebhookSecret>) -> Registry {
    let mut app = Registry::new(schema());
    organizations::register(&mut app);
    items::register(&mut app);
    todos::register(&mut app);
    user_profiles::register(&mut app);
    emails::register(&mut app);
    http::register(&mut app, secret);
    files::register(&mut app);
    app
}
