//! Reading back the `.eml` files [`crate::email::Mailer`] writes to the outbox:
//! just enough MIME for what lettre produces — unfolded headers, RFC 2047
//! encoded words, `multipart/*` bodies (nested or not), and the `base64` and
//! `quoted-printable` transfer encodings. Malformed input never fails: what
//! cannot be decoded is shown as it is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One mail, as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub date: String,
    /// The first `text/plain` part (or a body without a content type).
    pub text: Option<String>,
    /// The first `text/html` part.
    pub html: Option<String>,
}

/// How deep multiparts may nest before the rest is ignored.
const MAX_DEPTH: usize = 8;

pub fn parse(raw: &[u8]) -> Mail {
    let raw = String::from_utf8_lossy(raw);
    let (headers, body) = split_entity(&raw);
    let mut mail = Mail {
        from: header(&headers, "from")
            .map(decode_words)
            .unwrap_or_default(),
        to: header(&headers, "to").map(decode_words).unwrap_or_default(),
        subject: header(&headers, "subject")
            .map(decode_words)
            .unwrap_or_default(),
        date: header(&headers, "date").unwrap_or_default().to_string(),
        text: None,
        html: None,
    };
    collect_parts(&headers, body, &mut mail, 0);
    mail
}

/// `(name, value)` pairs, folded lines joined.
type Headers = Vec<(String, String)>;

/// Splits an entity into its headers and its body (after the blank line).
fn split_entity(raw: &str) -> (Headers, &str) {
    let (head, body) = match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (&raw[..lf], &raw[lf + 2..]),
        (Some(crlf), _) => (&raw[..crlf], &raw[crlf + 4..]),
        (None, Some(lf)) => (&raw[..lf], &raw[lf + 2..]),
        (None, None) => (raw, ""),
    };
    let mut headers: Headers = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    (headers, body)
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `text/html; charset=utf-8` → (`text/html`, its `name=value` parameters).
fn content_type(headers: &Headers) -> (String, Vec<(String, String)>) {
    let value = header(headers, "content-type").unwrap_or("text/plain");
    let mut pieces = value.split(';');
    let media = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    (media, params)
}

fn collect_parts(headers: &Headers, body: &str, mail: &mut Mail, depth: usize) {
    let (media, params) = content_type(headers);
    if media.starts_with("multipart/") {
        let boundary = params.iter().find(|(k, _)| k == "boundary");
        let Some((_, boundary)) = boundary else {
            return;
        };
        if depth >= MAX_DEPTH {
            return;
        }
        for part in multipart_parts(body, boundary) {
            let (part_headers, part_body) = split_entity(part);
            collect_parts(&part_headers, part_body, mail, depth + 1);
        }
        return;
    }
    let slot = match media.as_str() {
        "text/plain" => &mut mail.text,
        "text/html" => &mut mail.html,
        _ => return,
    };
    if slot.is_none() {
        let encoding = header(headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                STANDARD
                    .decode(compact.as_bytes())
                    .unwrap_or_else(|_| body.as_bytes().to_vec())
            }
            "quoted-printable" => decode_quoted_printable(body),
            _ => body.as_bytes().to_vec(),
        };
        let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        *slot = Some(text.trim_end_matches('\n').to_string());
    }
}

/// The parts between `--boundary` lines, up to `--boundary--`.
fn multipart_parts<'b>(body: &'b str, boundary: &str) -> Vec<&'b str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    // The preamble, before the first delimiter, is not a part.
    let Some(start) = rest.find(&delimiter) else {
        return parts;
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with("--") {
            break;
        }
        let Some(end) = rest.find(&delimiter) else {
            break;
        };
        let part = rest[..end]
            .strip_prefix("\r\n")
            .or_else(|| rest[..end].strip_prefix('\n'))
            .unwrap_or(&rest[..end]);
        // The line break before a delimiter belongs to the delimiter.
        let part = part
            .strip_suffix("\r\n")
            .or_else(|| part.strip_suffix('\n'))
            .unwrap_or(part);
        parts.push(part);
        rest = &rest[end + delimiter.len()..];
    }
    parts
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `=XX` escapes and `=` soft line breaks; a stray `=` stays as it is.
fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let at = |k: usize| bytes.get(i + k).copied();
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
        } else if at(1) == Some(b'\r') && at(2) == Some(b'\n') {
            i += 3;
        } else if at(1) == Some(b'\n') {
            i += 2;
        } else if let (Some(h), Some(l)) = (at(1).and_then(hex), at(2).and_then(hex)) {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// A header value with its RFC 2047 encoded words (`=?utf-8?b?…?=`,
/// `=?utf-8?q?…?=`) decoded; the space between two encoded words goes.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let Some(decoded) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&decoded.0);
        rest = &rest[start + decoded.1..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// The text of the encoded word `s` starts with, and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let data = &inner[..end];
    if data.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => STANDARD.decode(data).ok()?,
        "q" | "Q" => decode_quoted_printable(&data.replace('_', " ")),
        _ => return None,
    };
    let len = s.len() - inner.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::{Email, Mailer};

    #[test]
    fn encoded_words_and_quoted_printable_decode() {
        assert_eq!(
            decode_words("=?utf-8?b?V2VsY29tZSwgw4lsaXNl?= =?utf-8?q?_=E2=9C=93?= !"),
            "Welcome, Élise ✓ !"
        );
        assert_eq!(decode_words("plain =? not a word"), "plain =? not a word");
        assert_eq!(
            decode_quoted_printable("a=3Db=\r\nc =E2=9C=93="),
            "a=bc ✓=".as_bytes()
        );
    }

    #[test]
    fn bodies_without_multipart_are_text() {
        let mail = parse(b"Subject: Hi\nTo: a@b.c\n\nHello\n");
        assert_eq!(mail.subject, "Hi");
        assert_eq!(mail.to, "a@b.c");
        assert_eq!(mail.text.as_deref(), Some("Hello"));
        assert_eq!(mail.html, None);
        assert_eq!(parse(b"").subject, "");
    }

    /// Whatever lettre chooses (7bit, quoted-printable, base64; encoded
    /// subjects; folded headers), the outbox file reads back as it was sent.
    #[tokio::test]
    async fn the_mailers_outbox_files_read_back_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mailer =
            Mailer::outbox(dir.path().to_path_buf(), "livebase <noreply@localhost>", "").unwrap();
        let long_line = "word ".repeat(60);
        let cases = [
            (
                "ada@example.com",
                Email {
                    to: "ada@example.com".into(),
                    subject: "Welcome, Ada".into(),
                    html: "<p>Hello <b>Ada</b></p>".into(),
                    text: "Hello Ada,\nwelcome.".into(),
                },
            ),
            (
                "elise@example.com",
                Email {
                    to: "\"Élise Ü\" <elise@example.com>".into(),
                    subject: format!("Bienvenue, Élise — ✓ {}", "très long ".repeat(8)),
                    html: format!("<p>{long_line}</p>\n<p>é = ü</p>"),
                    text: format!("{long_line}\nÉlise ✓ = 100%"),
                },
            ),
            (
                "bin@example.com",
                Email {
                    to: "bin@example.com".into(),
                    subject: "ünïcödé".into(),
                    html: "日本語のメール".repeat(20),
                    text: "日本語のメール".repeat(20),
                },
            ),
        ];
        for (address, email) in &cases {
            let sent = mailer.send(email).await.unwrap();
            let crate::email::Sent::Outbox { path, .. } = sent else {
                panic!("an outbox mailer writes files");
            };
            let raw = std::fs::read(&path).unwrap();
            let shown = String::from_utf8_lossy(&raw);
            let mail = parse(&raw);
            assert_eq!(mail.subject, email.subject.trim(), "{shown}");
            assert!(mail.to.contains(address), "{shown}");
            assert_eq!(mail.text.as_deref(), Some(email.text.as_str()), "{shown}");
            assert_eq!(mail.html.as_deref(), Some(email.html.as_str()), "{shown}");
            assert!(mail.from.contains("noreply@localhost"), "{shown}");
            assert!(!mail.date.is_empty(), "{shown}");
        }
    }
}
