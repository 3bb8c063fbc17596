//! Outgoing email: [`Templates`] renders a named handlebars template (a
//! subject, an HTML part and a text part) into an [`Email`], and the
//! [`Mailer`] delivers it — over SMTP with lettre when the server has an SMTP
//! URL (`--smtp`), otherwise as an `.eml` file in the outbox folder, which the
//! log names. Actions reach the mailer through
//! [`crate::registry::ActionCtx::mailer`]; the application keeps its
//! templates and its `emails:send` action.
//!
//! Plain SMTP only (`smtp://host:port`, no credentials): no TLS stack is
//! linked yet. A refused or failed delivery is an error carrying the SMTP
//! server's reply, so the job that sent it fails visibly instead of losing the
//! mail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handlebars::Handlebars;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use livebase_schema::{obj, Value};

use crate::error::{Error, ErrorCode, Result};

/// The sender when none is configured.
pub const DEFAULT_FROM: &str = "livebase <noreply@localhost>";
/// The folder under the data folder that receives mail when no SMTP server is
/// configured.
pub const OUTBOX_DIR: &str = "outbox";
/// How long one SMTP command may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The error code of a mail the SMTP server refused or could not take.
pub const EMAIL_NOT_SENT: &str = "EMAIL_NOT_SENT";

/// A rendered mail, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// The three parts of one template, as handlebars source.
#[derive(Clone, Copy, Debug)]
pub struct Template<'a> {
    pub subject: &'a str,
    pub html: &'a str,
    pub text: &'a str,
}

/// Named email templates. Rendering is strict: a variable the data lacks is an
/// error naming it, never an empty gap in a sent mail. The HTML part escapes
/// what it inserts; the subject and text parts insert it as it is.
pub struct Templates {
    /// Subjects and text parts: no escaping.
    plain: Handlebars<'static>,
    /// HTML parts: handlebars' HTML escaping.
    html: Handlebars<'static>,
    names: Vec<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        Templates {
            plain,
            html,
            names: Vec::new(),
        }
    }

    /// Adds template `name`; a syntax error in any part is reported with the
    /// part's name.
    pub fn add(&mut self, name: &str, template: Template) -> Result<()> {
        let parts = [
            (false, "subject", template.subject),
            (false, "text", template.text),
            (true, "html", template.html),
        ];
        for (is_html, part, source) in parts {
            let registry = if is_html {
                &mut self.html
            } else {
                &mut self.plain
            };
            registry
                .register_template_string(&format!("{name}.{part}"), source)
                .map_err(|e| Error::internal(format!("email template `{name}.{part}`: {e}")))?;
        }
        self.names.push(name.to_string());
        Ok(())
    }

    /// The names of the templates, in the order they were added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Renders template `name` with `data` into a mail to `to`. An unknown
    /// template or a variable missing from `data` is `INVALID_ARGUMENT`.
    pub fn render(&self, name: &str, to: &str, data: &serde_json::Value) -> Result<Email> {
        if !self.names.iter().any(|n| n == name) {
            return Err(Error::invalid(format!(
                "there is no email template `{name}` (the templates: {})",
                self.names.join(", ")
            )));
        }
        let render = |registry: &Handlebars, part: &str| {
            registry
                .render(&format!("{name}.{part}"), data)
                .map_err(|e| Error::invalid(format!("email template `{name}.{part}`: {e}")))
        };
        let subject = render(&self.plain, "subject")?;
        Ok(Email {
            to: to.to_string(),
            // One line: a template's trailing newline is not part of a subject.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html: render(&self.html, "html")?,
            text: render(&self.plain, "text")?,
        })
    }
}

/// How the server sends mail.
#[derive(Clone, Debug, Default)]
pub struct MailOptions {
    /// `smtp://host:port` of the relay; `None` writes each mail to the outbox
    /// folder under the data folder.
    pub smtp: Option<String>,
    /// The `From` of every mail; [`DEFAULT_FROM`] when `None`.
    pub from: Option<String>,
    /// Where links in mails point (a web app's origin); the server's own URL
    /// when `None`. Templates see it as `appUrl`.
    pub app_url: Option<String>,
}

/// Delivers mail; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    from: Mailbox,
    app_url: String,
    delivery: Delivery,
}

enum Delivery {
    Smtp {
        url: String,
        transport: AsyncSmtpTransport<Tokio1Executor>,
    },
    Outbox(PathBuf),
}

/// Where a mail went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the SMTP server, with its reply.
    Smtp { reply: String },
    /// Written to this `.eml` file.
    Outbox { path: PathBuf },
}

impl Sent {
    /// The outcome as a value, for an action to return.
    pub fn to_value(&self) -> Value {
        match self {
            Sent::Smtp { reply } => obj! { "via" => "smtp", "reply" => reply.as_str() },
            Sent::Outbox { path } => {
                obj! { "via" => "outbox", "path" => path.display().to_string() }
            }
        }
    }
}

impl Mailer {
    /// The mailer `options` describe, for a server with data in `data_dir`
    /// answering on `server_url`.
    pub fn from_options(
        options: &MailOptions,
        data_dir: &Path,
        server_url: &str,
    ) -> Result<Mailer> {
        let from = options.from.as_deref().unwrap_or(DEFAULT_FROM);
        let app_url = options.app_url.as_deref().unwrap_or(server_url);
        match &options.smtp {
            Some(url) => Mailer::smtp(url, from, app_url),
            None => Mailer::outbox(data_dir.join(OUTBOX_DIR), from, app_url),
        }
    }

    /// A mailer that writes each mail to `dir` as an `.eml` file.
    pub fn outbox(dir: PathBuf, from: &str, app_url: &str) -> Result<Mailer> {
        Mailer::new(from, app_url, Delivery::Outbox(dir))
    }

    /// A mailer that sends through the SMTP relay at `url` (`smtp://host:port`,
    /// port 25 when absent).
    pub fn smtp(url: &str, from: &str, app_url: &str) -> Result<Mailer> {
        let (host, port) = parse_smtp_url(url)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let url = url.to_string();
        Mailer::new(from, app_url, Delivery::Smtp { url, transport })
    }

    fn new(from: &str, app_url: &str, delivery: Delivery) -> Result<Mailer> {
        let from = from
            .parse()
            .map_err(|e| Error::invalid(format!("the sender address `{from}`: {e}")))?;
        Ok(Mailer {
            inner: Arc::new(Inner {
                from,
                app_url: app_url.trim_end_matches('/').to_string(),
                delivery,
            }),
        })
    }

    /// Where links in mails point, without a trailing `/`.
    pub fn app_url(&self) -> &str {
        &self.inner.app_url
    }

    /// Where mail goes: the SMTP URL, or the outbox folder.
    pub fn destination(&self) -> String {
        match &self.inner.delivery {
            Delivery::Smtp { url, .. } => url.clone(),
            Delivery::Outbox(dir) => dir.display().to_string(),
        }
    }

    /// Sends `email`. A recipient that is not an address is
    /// `INVALID_ARGUMENT`; a mail the SMTP server refuses, or a server that
    /// cannot be reached, is [`EMAIL_NOT_SENT`] with the server's reply.
    pub async fn send(&self, email: &Email) -> Result<Sent> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| Error::invalid(format!("`{}` is not an email address: {e}", email.to)))?;
        let message = Message::builder()
            .from(self.inner.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .message_id(None)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| Error::internal(format!("building the mail to {}: {e}", email.to)))?;
        match &self.inner.delivery {
            Delivery::Smtp { url, transport } => match transport.send(message).await {
                Ok(response) => {
                    let reply = format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    );
                    tracing::info!(target: "livebase::email", to = %email.to, smtp = %url, %reply, "mail sent");
                    Ok(Sent::Smtp { reply })
                }
                Err(e) => {
                    // The relay's address goes to the log only: the job's
                    // error is readable by application queries.
                    tracing::warn!(target: "livebase::email", to = %email.to, smtp = %url, "mail not sent: {e}");
                    Err(Error::app(
                        ErrorCode::Custom(EMAIL_NOT_SENT.into()),
                        format!("the SMTP server did not take the mail to {}: {e}", email.to),
                    ))
                }
            },
            Delivery::Outbox(dir) => {
                let path = dir.join(outbox_file_name());
                let bytes = message.formatted();
                let (write_dir, write_path) = (dir.clone(), path.clone());
                tokio::task::spawn_blocking(move || {
                    crate::datadir::create_private_dir(&write_dir)?;
                    crate::datadir::write_private(&write_path, &bytes)
                })
                .await
                .map_err(|e| Error::internal(format!("writing to the outbox: {e}")))?
                .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
                // The mail's first link (a verification or reset link), so
                // that `livebase dev` shows it and local work stays one click.
                let link = first_link(&email.text).unwrap_or_default();
                tracing::info!(target: "livebase::email", to = %email.to, path = %path.display(), link, "mail written to the outbox");
                Ok(Sent::Outbox { path })
            }
        }
    }
}

/// The first `http://` or `https://` URL in `text`, up to whitespace.
fn first_link(text: &str) -> Option<&str> {
    let start = text.find("http://").or_else(|| text.find("https://"))?;
    let end = text[start..]
        .find(char::is_whitespace)
        .map_or(text.len(), |i| start + i);
    Some(&text[start..end])
}

/// `<ms since the epoch>-<random>.eml`: files sort in the order they were
/// written.
fn outbox_file_name() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:013}-{:08x}.eml", rand::random::<u32>())
}

/// `smtp://host[:port][/]` → (host, port). Anything that would need TLS or
/// credentials is refused with the reason, rather than sent in the clear.
fn parse_smtp_url(url: &str) -> Result<(String, u16)> {
    let refuse = |why: &str| Err(Error::invalid(format!("the SMTP URL `{url}`: {why}")));
    let Some(rest) = url.strip_prefix("smtp://") else {
        return refuse(
            "only plain `smtp://host:port` is supported; TLS (smtps://, STARTTLS) is not supported yet",
        );
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return refuse("credentials are not supported yet (they would travel without TLS)");
    }
    if rest.contains(['/', '?', '#']) {
        return refuse("expected only a host and a port");
    }
    let (host, port) = match rest.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, port.strip_prefix(':')),
            None => return refuse("an unclosed `[`"),
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return refuse("no host");
    }
    let port = match port {
        None => 25,
        Some(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => return refuse("the port is not a number"),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_name_a_host_and_port_and_refuse_what_needs_tls() {
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".to_string(), 2525)
        );
        assert_eq!(
            parse_smtp_url("smtp://mail.example.com/").unwrap(),
            ("mail.example.com".to_string(), 25)
        );
        assert_eq!(
            parse_smtp_url("smtp://[::1]:25").unwrap(),
            ("::1".to_string(), 25)
        );
        for bad in [
            "smtps://mail.example.com",
            "smtp://user:pass@mail.example.com",
            "smtp://host:port",
            "smtp://",
            "mail.example.com:25",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render_strictly_and_escape_only_html() {
        let mut templates = Templates::new();
        templates
            .add(
                "hello",
                Template {
                    subject: "Hello {{name}}\n",
                    html: "<p>Hello {{name}}</p>",
                    text: "Hello {{name}}",
                },
            )
            .unwrap();
        let data = serde_json::json!({"name": "Ada & <Bob>"});
        let email = templates.render("hello", "ada@example.com", &data).unwrap();
        assert_eq!(email.subject, "Hello Ada & <Bob>");
        assert_eq!(email.text, "Hello Ada & <Bob>");
        assert_eq!(email.html, "<p>Hello Ada &amp; &lt;Bob&gt;</p>");

        let missing = templates
            .render("hello", "ada@example.com", &serde_json::json!({}))
            .unwrap_err();
        assert_eq!(
            missing.code(),
            Some(&ErrorCode::InvalidArgument),
            "{missing}"
        );
        let unknown = templates.render("nope", "a@b.c", &data).unwrap_err();
        assert!(unknown.to_string().contains("hello"), "{unknown}");
        let syntax = templates.add(
            "broken",
            Template {
                subject: "{{#if}}",
                html: "",
                text: "",
            },
        );
        assert!(syntax.is_err());
    }
}
