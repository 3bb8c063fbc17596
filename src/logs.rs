//! How the command logs. `serve` writes tracing's plain full format — UTC
//! timestamp, level, target, message, `key=value` fields, no colors — for
//! log collectors. `dev` writes one short, colored line per event for a
//! person watching a terminal: every function call with its duration and
//! outcome, every scheduled job run, every mail and where it went.
//!
//! The events are the runtime's own (targets `livebase::call`,
//! `livebase::scheduler`, `livebase::email`); only their rendering lives
//! here. `LIVEBASE_LOG` (an `EnvFilter`) overrides which are shown.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Set by `dev`'s supervisor for its server child: `1` to color the dev
/// lines, `0` not to (whether the supervisor's own output would be colored).
pub const COLOR_ENV: &str = "LIVEBASE_DEV_COLOR";

/// Whether `dev`'s lines on this process's standard output are colored.
pub fn stdout_colored() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Installs the global subscriber: [`DevFormat`] for `dev`, the plain
/// format for `serve` (where function calls are logged only when they fail).
pub fn init(dev: bool) {
    let default = if dev {
        "info"
    } else {
        "info,livebase::call=warn"
    };
    let filter =
        EnvFilter::try_from_env("LIVEBASE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if dev {
        let color = match std::env::var_os(COLOR_ENV) {
            // The server child of `dev` writes into its supervisor's pipe,
            // which passes the lines on to the terminal: the supervisor says.
            Some(forced) => forced == "1",
            None => stdout_colored(),
        };
        builder.with_ansi(color).event_format(DevFormat).init();
    } else {
        builder.with_ansi(false).with_target(true).init();
    }
}

/// `dev`'s one line per event, e.g.
///
/// ```text
/// call  mutation todos:create  2.31ms  ok
/// job   emails:send  14.02ms  success
/// mail  ada@example.com → .livebase/outbox/1718000000-1a2b3c4d.eml  http://127.0.0.1:3900/api/auth/verify-email?token=…
/// ```
pub struct DevFormat;

impl<S, N> FormatEvent<S, N> for DevFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = render(
            meta.target(),
            *meta.level(),
            &fields,
            writer.has_ansi_escapes(),
        );
        writeln!(writer, "{line}")
    }
}

/// An event's message and fields, values as they display (strings unquoted).
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.others
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            name => self.others.push((name, value.to_string())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields and `format_args!` messages arrive here; their Debug is
        // their Display.
        self.record_str(field, &format!("{value:?}"));
    }
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const MAGENTA: &str = "35";
const CYAN: &str = "36";
const DIM: &str = "2";

fn paint(ansi: bool, code: &str, text: &str) -> String {
    if ansi {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// One event as `dev` shows it: a tag column, then what happened.
fn render(target: &str, level: Level, f: &Fields, ansi: bool) -> String {
    // A failed call is an INFO event with an `error` field; a failed job, a WARN.
    let outcome = |message: &str| match (level, f.get("error")) {
        (_, Some(e)) => paint(ansi, RED, &format!("{message}: {e}")),
        (Level::ERROR | Level::WARN, None) => paint(ansi, RED, message),
        _ => paint(ansi, GREEN, message),
    };
    let (tag, color, body) = match (target, f.get("path"), f.get("function")) {
        ("livebase::call", Some(path), _) => {
            let kind = f.get("kind").unwrap_or("call");
            let ms = f.get("ms").unwrap_or("?");
            let body = format!("{kind:<8} {path}  {ms}ms  {}", outcome(&f.message));
            ("call", CYAN, body)
        }
        ("livebase::scheduler", _, Some(function)) => {
            let mut body = function.to_string();
            if let Some(ms) = f.get("ms") {
                let _ = write!(body, "  {ms}ms");
            }
            let _ = write!(body, "  {}", outcome(&f.message));
            if let Some(job) = f.get("job") {
                let _ = write!(body, "  {}", paint(ansi, DIM, job));
            }
            ("job", MAGENTA, body)
        }
        ("livebase::email", Some(path), _) => {
            let to = f.get("to").unwrap_or("?");
            let mut body = format!("{to} → {path}");
            if let Some(link) = f.get("link").filter(|l| !l.is_empty()) {
                let _ = write!(body, "  {link}");
            }
            ("mail", YELLOW, body)
        }
        _ => {
            let tag = match target {
                "livebase::call" => "call",
                "livebase::scheduler" => "job",
                "livebase::email" => "mail",
                _ => "",
            };
            let mut body = match level {
                Level::ERROR => paint(ansi, RED, &format!("error: {}", f.message)),
                Level::WARN => paint(ansi, YELLOW, &format!("warning: {}", f.message)),
                _ => f.message.clone(),
            };
            for (name, value) in &f.others {
                let _ = write!(body, " {}", paint(ansi, DIM, &format!("{name}={value}")));
            }
            (tag, DIM, body)
        }
    };
    format!("{}  {body}", paint(ansi, color, &format!("{tag:<4}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, others: &[(&'static str, &str)]) -> Fields {
        Fields {
            message: message.to_string(),
            others: others.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        }
    }

    #[test]
    fn dev_lines_say_what_ran_how_long_and_how_it_ended() {
        let cases = [
            (
                "livebase::call",
                Level::INFO,
                fields(
                    "ok",
                    &[
                        ("path", "todos:create"),
                        ("kind", "mutation"),
                        ("ms", "2.31"),
                    ],
                ),
                "call  mutation todos:create  2.31ms  ok",
            ),
            (
                "livebase::call",
                Level::INFO,
                fields(
                    "201",
                    &[
                        ("path", "POST /webhooks/items"),
                        ("request", "/webhooks/items"),
                        ("kind", "http"),
                        ("ms", "3.02"),
                    ],
                ),
                "call  http     POST /webhooks/items  3.02ms  201",
            ),
            (
                "livebase::call",
                Level::INFO,
                fields(
                    "failed",
                    &[
                        ("path", "todos:list"),
                        ("kind", "query"),
                        ("ms", "0.40"),
                        ("error", "FORBIDDEN: not a member"),
                    ],
                ),
                "call  query    todos:list  0.40ms  failed: FORBIDDEN: not a member",
            ),
            (
                "livebase::scheduler",
                Level::WARN,
                fields(
                    "failed",
                    &[
                        ("job", "_scheduled_functions_x"),
                        ("function", "emails:send"),
                        ("ms", "3"),
                        ("error", "boom"),
                    ],
                ),
                "job   emails:send  3ms  failed: boom  _scheduled_functions_x",
            ),
            (
                "livebase::email",
                Level::INFO,
                fields(
                    "mail written to the outbox",
                    &[
                        ("to", "ada@example.com"),
                        ("path", ".livebase/outbox/1.eml"),
                    ],
                ),
                "mail  ada@example.com → .livebase/outbox/1.eml",
            ),
            (
                "livebase::email",
                Level::INFO,
                fields(
                    "mail written to the outbox",
                    &[
                        ("to", "ada@example.com"),
                        ("path", ".livebase/outbox/2.eml"),
                        ("link", "http://127.0.0.1:3900/api/auth/verify-email?token=t"),
                    ],
                ),
                "mail  ada@example.com → .livebase/outbox/2.eml  http://127.0.0.1:3900/api/auth/verify-email?token=t",
            ),
            (
                "livebase::scheduler",
                Level::INFO,
                fields("cron scheduled", &[("cron", "cleanup"), ("next_run", "1")]),
                "job   cron scheduled cron=cleanup next_run=1",
            ),
            (
                "livebase",
                Level::ERROR,
                fields("server stopped", &[]),
                "      error: server stopped",
            ),
        ];
        for (target, level, f, expected) in cases {
            assert_eq!(render(target, level, &f, false), expected);
        }
    }

    #[test]
    fn colors_only_when_asked() {
        let f = fields("ok", &[("path", "a:b"), ("kind", "query"), ("ms", "1")]);
        assert!(render("livebase::call", Level::INFO, &f, true).contains("\x1b[32mok\x1b[0m"));
        assert!(!render("livebase::call", Level::INFO, &f, false).contains('\x1b'));
    }
}
