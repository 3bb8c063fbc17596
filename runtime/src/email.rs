//! Outgoing email: [`Templates`] renders a named handlebars template (a
//! subject, an HTML part and a text part) into an [`Email`], and the
//! [`Mailer`] delivers it — over SMTP with lettre when the server has an SMTP
//! URL (`--smtp`), otherwise as an `.eml` file in the outbox folder, which the
//! log names. Actions reach the mailer through
//! [`crate::registry::ActionCtx::mailer`]; the application keeps its
//! templates and its `emails:send` action.
//!
//! SMTP URLs are lettre's: `smtp://host:port` (plain, for local sinks),
//! `smtp://user:pass@host:587?tls=required` (STARTTLS; `tls=opportunistic`
//! uses it when offered), `smtps://user:pass@host:465` (implicit TLS) — TLS on
//! rustls, trusting Mozilla's roots plus an optional CA file
//! ([`MailOptions::smtp_ca_file`]). The URL's credentials never reach a log or
//! the dashboard: they see [`redact_url`]'s form. With a DKIM key
//! ([`MailOptions::dkim`]) every mail is signed.
//!
//! A mail sent for a scheduled job ([`Mailer::send_for_job`]) carries a
//! `Message-ID` derived from the job and the sender's domain, the same on
//! every attempt, so a repeat after a crash is recognisably the same mail. A
//! refused or failed delivery is an [`EMAIL_NOT_SENT`] error carrying the
//! SMTP server's reply — marked [`transient`] for a connection error, a
//! timeout or a `4xx` reply (the scheduler tries again), permanent for a
//! `5xx` (the job fails with the reply kept on it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handlebars::Handlebars;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use livebase_schema::{obj, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::scheduler::transient;

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

/// The DKIM selector when none is configured.
pub const DEFAULT_DKIM_SELECTOR: &str = "livebase";

/// How the server sends mail.
#[derive(Clone, Debug, Default)]
pub struct MailOptions {
    /// The relay's URL, as lettre reads it (see the module docs); `None`
    /// writes each mail to the outbox folder under the data folder.
    pub smtp: Option<String>,
    /// A PEM file of CA certificates to trust for the relay besides Mozilla's
    /// roots (a self-hosted relay, tests).
    pub smtp_ca_file: Option<PathBuf>,
    /// Sign every mail with DKIM.
    pub dkim: Option<DkimOptions>,
    /// The `From` of every mail; [`DEFAULT_FROM`] when `None`.
    pub from: Option<String>,
    /// Where links in mails point (a web app's origin); the server's own URL
    /// when `None`. Templates see it as `appUrl`.
    pub app_url: Option<String>,
}

/// A DKIM signing key and where its public half is published:
/// `<selector>._domainkey.<domain>`.
#[derive(Clone, Debug, Default)]
pub struct DkimOptions {
    /// The private key: RSA in PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`; `openssl
    /// genrsa -traditional`), or Ed25519 as the base64 of its 32 bytes.
    pub key_file: PathBuf,
    /// [`DEFAULT_DKIM_SELECTOR`] when `None`.
    pub selector: Option<String>,
    /// The signing domain; the sender's domain when `None`.
    pub domain: Option<String>,
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
    dkim: Option<DkimConfig>,
}

enum Delivery {
    Smtp {
        /// The URL with its credentials hidden ([`redact_url`]).
        shown: String,
        transport: AsyncSmtpTransport<Tokio1Executor>,
    },
    Outbox(PathBuf),
}

/// Where a mail went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the SMTP server, with its reply.
    Smtp { reply: String, message_id: String },
    /// Written to this `.eml` file.
    Outbox { path: PathBuf, message_id: String },
}

impl Sent {
    /// The outcome as a value, for an action to return.
    pub fn to_value(&self) -> Value {
        match self {
            Sent::Smtp { reply, message_id } => obj! {
                "via" => "smtp", "reply" => reply.as_str(), "messageId" => message_id.as_str(),
            },
            Sent::Outbox { path, message_id } => obj! {
                "via" => "outbox",
                "path" => path.display().to_string(),
                "messageId" => message_id.as_str(),
            },
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
        let delivery = match &options.smtp {
            Some(url) => smtp_delivery(url, options.smtp_ca_file.as_deref())?,
            None => Delivery::Outbox(data_dir.join(OUTBOX_DIR)),
        };
        let mut mailer = Mailer::new(from, app_url, delivery)?;
        if let Some(dkim) = &options.dkim {
            let config = dkim_config(dkim, &mailer.inner.from)?;
            if let Some(inner) = Arc::get_mut(&mut mailer.inner) {
                inner.dkim = Some(config);
            }
        }
        Ok(mailer)
    }

    /// A mailer that writes each mail to `dir` as an `.eml` file.
    pub fn outbox(dir: PathBuf, from: &str, app_url: &str) -> Result<Mailer> {
        Mailer::new(from, app_url, Delivery::Outbox(dir))
    }

    /// A mailer that sends through the SMTP relay at `url` (see the module
    /// docs for its forms).
    pub fn smtp(url: &str, from: &str, app_url: &str) -> Result<Mailer> {
        Mailer::new(from, app_url, smtp_delivery(url, None)?)
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
                dkim: None,
            }),
        })
    }

    /// Where links in mails point, without a trailing `/`.
    pub fn app_url(&self) -> &str {
        &self.inner.app_url
    }

    /// Where mail goes: the SMTP URL (credentials hidden), or the outbox
    /// folder.
    pub fn destination(&self) -> String {
        match &self.inner.delivery {
            Delivery::Smtp { shown, .. } => shown.clone(),
            Delivery::Outbox(dir) => dir.display().to_string(),
        }
    }

    /// The `Message-ID` of the mail sent for `key` (a job id): `<key@domain>`,
    /// the domain the sender's, so every attempt of one job sends the same.
    pub fn message_id_for(&self, key: &str) -> String {
        format!("<{key}@{}>", self.inner.from.email.domain())
    }

    /// Sends `email` with a fresh `Message-ID`. A recipient that is not an
    /// address is `INVALID_ARGUMENT`; a mail the SMTP server refuses, or a
    /// server that cannot be reached, is [`EMAIL_NOT_SENT`] with the server's
    /// reply (see the module docs for which are [`transient`]).
    pub async fn send(&self, email: &Email) -> Result<Sent> {
        let id = format!("{:032x}", rand::random::<u128>());
        self.deliver(email, self.message_id_for(&id)).await
    }

    /// Sends `email` for scheduled job `job` (its id): its `Message-ID` is
    /// [`Mailer::message_id_for`] the job, the same on every attempt.
    pub async fn send_for_job(&self, email: &Email, job: &str) -> Result<Sent> {
        self.deliver(email, self.message_id_for(job)).await
    }

    async fn deliver(&self, email: &Email, message_id: String) -> Result<Sent> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| Error::invalid(format!("`{}` is not an email address: {e}", email.to)))?;
        let mut message = Message::builder()
            .from(self.inner.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| Error::internal(format!("building the mail to {}: {e}", email.to)))?;
        if let Some(dkim) = &self.inner.dkim {
            message.sign(dkim);
        }
        match &self.inner.delivery {
            Delivery::Smtp { shown, transport } => match transport.send(message).await {
                Ok(response) => {
                    let reply = format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    );
                    tracing::info!(target: "livebase::email", to = %email.to, smtp = %shown, message_id, %reply, "mail sent");
                    Ok(Sent::Smtp { reply, message_id })
                }
                Err(e) => {
                    // The relay's address goes to the log only: the job's
                    // error is readable by application queries.
                    let permanent = e.is_permanent() || e.is_client();
                    tracing::warn!(target: "livebase::email", to = %email.to, smtp = %shown, message_id, permanent, "mail not sent: {e}");
                    let error = Error::app(
                        ErrorCode::Custom(EMAIL_NOT_SENT.into()),
                        format!("the SMTP server did not take the mail to {}: {e}", email.to),
                    );
                    Err(if permanent { error } else { transient(error) })
                }
            },
            Delivery::Outbox(dir) => {
                let path = dir.join(outbox_file_name());
                let bytes = message.formatted();
                let (write_dir, write_path) = (dir.clone(), path.clone());
                tokio::task::spawn_blocking(move || {
                    crate::private_files::create_private_dir(&write_dir)?;
                    crate::private_files::write_private(&write_path, &bytes)
                })
                .await
                .map_err(|e| Error::internal(format!("writing to the outbox: {e}")))?
                .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
                // The mail's first link (a verification or reset link), so
                // that `livebase dev` shows it and local work stays one click.
                let link = first_link(&email.text).unwrap_or_default();
                tracing::info!(target: "livebase::email", to = %email.to, path = %path.display(), message_id, link, "mail written to the outbox");
                Ok(Sent::Outbox { path, message_id })
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

/// `url` with its credentials (user and password) replaced by `***`, for
/// logs and the dashboard. Text that is not a URL is hidden whole after its
/// scheme, in case it is a URL with a typo.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("***");
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".into(),
        },
    }
}

/// How a URL asks for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    None,
    StartTls { required: bool },
    Implicit,
}

/// The SMTP delivery `url` describes, checked: lettre reads it; a CA file,
/// when given, is added to the roots its TLS trusts. Credentials over a
/// connection that is never encrypted are refused.
fn smtp_delivery(url: &str, ca_file: Option<&Path>) -> Result<Delivery> {
    let shown = redact_url(url);
    let refuse = |why: String| Error::invalid(format!("the SMTP URL `{shown}`: {why}"));
    let parsed = url::Url::parse(url).map_err(|e| refuse(e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| refuse("no host".into()))?;
    // An IPv6 host comes bracketed; TLS names it without the brackets.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let mode = match (parsed.scheme(), tls.as_deref()) {
        ("smtp", None) => TlsMode::None,
        ("smtp", Some("required")) => TlsMode::StartTls { required: true },
        ("smtp", Some("opportunistic")) => TlsMode::StartTls { required: false },
        ("smtps", None) => TlsMode::Implicit,
        (scheme, tls) => {
            return Err(refuse(format!(
                "expected `smtp://`, `smtp://…?tls=required`, `smtp://…?tls=opportunistic` or \
                 `smtps://`, not scheme `{scheme}` with tls={tls:?}"
            )))
        }
    };
    if mode == TlsMode::None && (!parsed.username().is_empty() || parsed.password().is_some()) {
        return Err(refuse(
            "credentials would travel unencrypted: add `?tls=required` (STARTTLS) or use \
             `smtps://` (implicit TLS)"
                .into(),
        ));
    }
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| refuse(e.to_string()))?
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(ca_file) = ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| Error::invalid(format!("the SMTP CA file {}: {e}", ca_file.display())))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| Error::invalid(format!("the SMTP CA file {}: {e}", ca_file.display())))?;
        let parameters = TlsParameters::builder(host)
            .add_root_certificate(certificate)
            .build()
            .map_err(|e| Error::invalid(format!("TLS for the SMTP server `{shown}`: {e}")))?;
        builder = match mode {
            TlsMode::None => {
                return Err(refuse(
                    "a CA file is set but the URL asks for no TLS (add `?tls=required` or use \
                     `smtps://`)"
                        .into(),
                ))
            }
            TlsMode::StartTls { required: true } => builder.tls(Tls::Required(parameters)),
            TlsMode::StartTls { required: false } => builder.tls(Tls::Opportunistic(parameters)),
            TlsMode::Implicit => builder.tls(Tls::Wrapper(parameters)),
        };
    }
    Ok(Delivery::Smtp {
        shown,
        transport: builder.build(),
    })
}

/// The DKIM signing configuration `options` describe for mail from `from`:
/// the headers a receiver shows and threads by, canonicalized relaxed.
fn dkim_config(options: &DkimOptions, from: &Mailbox) -> Result<DkimConfig> {
    let path = options.key_file.display();
    let text = std::fs::read_to_string(&options.key_file)
        .map_err(|e| Error::invalid(format!("the DKIM key {path}: {e}")))?;
    let algorithm = if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        DkimSigningAlgorithm::Rsa
    } else if text.contains("-----BEGIN") {
        return Err(Error::invalid(format!(
            "the DKIM key {path}: expected an RSA key in PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`; \
             convert with `openssl rsa -in KEY -traditional`) or an Ed25519 key as the base64 \
             of its 32 bytes"
        )));
    } else {
        DkimSigningAlgorithm::Ed25519
    };
    let key = DkimSigningKey::new(text.trim(), algorithm)
        .map_err(|e| Error::invalid(format!("the DKIM key {path}: {e}")))?;
    let selector = options
        .selector
        .clone()
        .unwrap_or_else(|| DEFAULT_DKIM_SELECTOR.to_string());
    let domain = options
        .domain
        .clone()
        .unwrap_or_else(|| from.email.domain().to_string());
    let headers = ["From", "To", "Subject", "Date", "Message-ID"]
        .into_iter()
        .map(HeaderName::new_from_ascii_str)
        .collect();
    let relaxed = DkimCanonicalization {
        header: DkimCanonicalizationType::Relaxed,
        body: DkimCanonicalizationType::Relaxed,
    };
    Ok(DkimConfig::new(selector, domain, key, headers, relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_take_lettres_forms_and_refuse_credentials_in_the_clear() {
        for good in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com/",
            "smtp://[::1]:25",
            "smtp://user:pass@mail.example.com:587?tls=required",
            "smtp://user:pass@mail.example.com?tls=opportunistic",
            "smtps://user:pass@mail.example.com",
        ] {
            assert!(smtp_delivery(good, None).is_ok(), "{good}");
        }
        for bad in [
            "smtp://user:pass@mail.example.com",
            "smtp://mail.example.com?tls=sometimes",
            "http://mail.example.com",
            "smtp://",
            "mail.example.com:25",
        ] {
            let Err(e) = smtp_delivery(bad, None) else {
                panic!("{bad} is refused");
            };
            assert!(!e.to_string().contains("pass"), "{e}");
        }
    }

    #[test]
    fn a_ca_file_must_be_readable_pem_and_wants_a_tls_url() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = smtp_delivery("smtps://mail.example.com", Some(&missing))
            .err()
            .expect("a missing file is refused");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        assert!(smtp_delivery("smtps://mail.example.com", Some(&garbage)).is_err());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = smtp_delivery("smtp://127.0.0.1:2525", Some(&empty))
            .err()
            .expect("a CA file with plain SMTP is a mistake");
        assert!(e.to_string().contains("no TLS"), "{e}");
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(
            redact_url("smtps://AKIA123:s3cr%2Ft@email-smtp.eu-west-1.amazonaws.com:465"),
            "smtps://***:***@email-smtp.eu-west-1.amazonaws.com:465"
        );
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert_eq!(redact_url("smtp//user:secret@host"), "***");
        assert_eq!(redact_url("smtp://user:sec ret@ho st"), "smtp://***");
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
