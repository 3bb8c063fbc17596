//! The registered `files:*` functions: stored files (Convex's
//! `ctx.storage`), for signed-in users only.

use livebase_runtime::registry::Registry;
use livebase_schema::typed::Type;

use crate::shared::auth::validations::ensure_user;

/// `files:generateUploadUrl {}`.
#[derive(Type)]
pub struct NoArgs {}

pub fn register(app: &mut Registry) {
    // A one-time URL, valid for an hour, that the client `POST`s one file
    // to; the answer is `{storageId}`.
    app.typed_mutation("files:generateUploadUrl", |ctx, _args: NoArgs| {
        ensure_user(ctx)?;
        ctx.storage().generate_upload_url()
    });
}
