//! The registered `emails:*` functions — the seed's `convex/emails.ts`. One
//! internal action, `emails:send {to, template, data}`, renders a template of
//! `functions/emails/templates/` (`<name>.subject.hbs`, `<name>.html.hbs`,
//! `<name>.text.hbs`, compiled into the binary) and sends it through the
//! server's mailer: SMTP with `--smtp`, the outbox folder otherwise. Mutations
//! never send mail themselves; they schedule this action, so a mail goes out
//! only if the mutation commits:
//!
//! ```text
//! ctx.scheduler().run_after(Duration::ZERO, emails::SEND, obj! {
//!     "to" => email, "template" => "welcome", "data" => obj! { "name" => name },
//! })?;
//! ```
//!
//! Besides `data`, every template sees `appUrl`, where the mail's links point.
//! See `docs/how-to/send-emails.md`.
//!
//! `emails:send` is retryable ([`RETRY`]): a mail cut short by a crash, a
//! refused connection, a timeout or a `4xx` reply is sent again, with the same
//! `Message-ID` (derived from its job), until the SMTP server accepts it or
//! refuses it for good (`5xx`, kept as the job's `error`).

use std::sync::OnceLock;
use std::time::Duration;

use livebase_runtime::email::{Template, Templates};
use livebase_runtime::registry::Registry;
use livebase_runtime::scheduler::RetryPolicy;
use livebase_schema::typed::Type;
use livebase_schema::Value;
use serde_json::Value as Json;

/// The path of the send action.
pub const SEND: &str = "emails:send";

/// How a mail is retried: up to 12 attempts, 1 s after the first failure,
/// doubling to at most 15 min between attempts (about 35 min in all, which
/// outlasts a relay's restart or greylisting), none after a day.
pub const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 12,
    initial_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(15 * 60),
    deadline: Duration::from_secs(24 * 60 * 60),
};

/// A template's three parts, read from `functions/emails/templates/` at
/// compile time.
macro_rules! template {
    ($name:literal) => {
        (
            $name,
            Template {
                subject: include_str!(concat!("../emails/templates/", $name, ".subject.hbs")),
                html: include_str!(concat!("../emails/templates/", $name, ".html.hbs")),
                text: include_str!(concat!("../emails/templates/", $name, ".text.hbs")),
            },
        )
    };
}

/// Every template, by name.
///
/// - `invitation`: `organizationName`, `inviterName`, `role`, `invitationId`
///   (scheduled by `organizations:invite`).
/// - `welcome`: `name` (scheduled when a user verifies their email).
/// - `verify-email`: `name`, `url` (scheduled by sign-up and
///   `POST /api/auth/send-verification-email`; `url` is the one-time link).
/// - `reset-password`: `name`, `url` (scheduled by
///   `POST /api/auth/request-password-reset`; `url` is the one-time link).
pub const TEMPLATES: &[(&str, Template<'static>)] = &[
    template!("invitation"),
    template!("welcome"),
    template!("verify-email"),
    template!("reset-password"),
];

/// The compiled templates. A template that does not parse is a bug caught by
/// this crate's tests, so it panics here with the template's name.
pub fn templates() -> &'static Templates {
    static COMPILED: OnceLock<Templates> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let mut templates = Templates::new();
        for (name, template) in TEMPLATES {
            if let Err(e) = templates.add(name, *template) {
                panic!("{e}");
            }
        }
        templates
    })
}

/// `emails:send {to, template, data}`: `data` is any value, the template's
/// variables.
#[derive(Type)]
pub struct SendArgs {
    pub to: String,
    pub template: String,
    pub data: Value,
}

pub fn register(app: &mut Registry) {
    app.typed_internal_action(SEND, |ctx, args: SendArgs| async move {
        let SendArgs { to, template, data } = args;
        let mailer = ctx.mailer()?;
        let mut data = template_data(&data);
        if let Json::Object(fields) = &mut data {
            fields
                .entry("appUrl")
                .or_insert_with(|| Json::from(mailer.app_url()));
        }
        let email = templates().render(&template, &to, &data)?;
        let sent = match ctx.job() {
            Some(job) => mailer.send_for_job(&email, job.id.as_str()).await?,
            None => mailer.send(&email).await?,
        };
        Ok(sent.to_value())
    });
    app.retryable(SEND, RETRY);
    // A verification or reset link carries a one-time token: the job keeps it
    // until the mail is sent (or given up on), and not a moment longer.
    app.forget_args_when_done(SEND, &["data.url"]);
}

/// A value as plain JSON for a template: numbers as numbers (an int64
/// included), bytes as their length — never Convex's tagged `{"$integer": …}`.
fn template_data(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int64(i) => Json::from(*i),
        Value::Float64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Boolean(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::from(b.len()),
        Value::Array(items) => Json::Array(items.iter().map(template_data).collect()),
        Value::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), template_data(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_renders_with_the_data_its_sender_gives() {
        let invitation = templates()
            .render(
                "invitation",
                "bob@example.com",
                &json!({
                    "invitationId": "invitations_0123456789abcdef",
                    "organizationName": "Acme & Co",
                    "inviterName": "Ada",
                    "role": "admin",
                    "appUrl": "https://app.example.com",
                }),
            )
            .expect("the invitation renders");
        assert_eq!(invitation.subject, "Ada invited you to join Acme & Co");
        let link = "https://app.example.com/accept-invitation/invitations_0123456789abcdef";
        assert!(invitation.text.contains(link), "{}", invitation.text);
        assert!(invitation.text.contains("as admin"), "{}", invitation.text);
        assert!(
            invitation.html.contains(&format!("href=\"{link}\"")),
            "{}",
            invitation.html
        );
        assert!(
            invitation.html.contains("Acme &amp; Co"),
            "{}",
            invitation.html
        );

        let welcome = templates()
            .render(
                "welcome",
                "ada@example.com",
                &json!({"name": "Ada", "appUrl": "http://127.0.0.1:3900"}),
            )
            .expect("the welcome mail renders");
        assert_eq!(welcome.subject, "Welcome, Ada");
        assert!(welcome.text.contains("Hello Ada"), "{}", welcome.text);

        for (template, subject) in [
            ("verify-email", "Confirm your email address"),
            ("reset-password", "Reset your password"),
        ] {
            let link = "https://app.example.com/x?token=abc&y=1";
            let mail = templates()
                .render(
                    template,
                    "ada@example.com",
                    &json!({"name": "Ada", "url": link, "appUrl": "https://app.example.com"}),
                )
                .expect("the mail renders");
            assert_eq!(mail.subject, subject);
            assert!(mail.text.contains(link), "{}", mail.text);
            assert!(
                mail.html
                    .contains("href=\"https://app.example.com/x?token&#x3D;abc&amp;y&#x3D;1\"")
                    || mail
                        .html
                        .contains("href=\"https://app.example.com/x?token=abc&amp;y=1\""),
                "{}",
                mail.html
            );
        }
    }

    #[test]
    fn a_template_missing_a_value_fails_instead_of_sending_a_gap() {
        let err = templates()
            .render(
                "invitation",
                "bob@example.com",
                &json!({"inviterName": "Ada"}),
            )
            .expect_err("organizationName is missing");
        assert!(err.to_string().contains("invitation"), "{err}");
    }

    #[test]
    fn int64_values_reach_templates_as_numbers() {
        let data = livebase_schema::obj! { "n" => Value::Int64(3), "s" => "x" };
        assert_eq!(template_data(&data), json!({"n": 3, "s": "x"}));
    }
}
