//! The mail outbox (`<data>/outbox`, where mail goes without an SMTP relay),
//! read as a person reads a mail: the newest one to an address, its text
//! with quoted-printable undone, the link in it.

use std::path::Path;

use crate::{eventually, PATIENCE};

/// The path and query of a link (`https://host/p?q` → `/p?q`): mailed links
/// point at the app's URL, which forwards `/api` to the server; upload and
/// file URLs are absolute too.
pub fn path_of(link: &str) -> String {
    let after_scheme = link.split_once("://").map_or(link, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("/".to_string(), |i| after_scheme[i..].to_string())
}

/// Undoes quoted-printable (what lettre uses for text parts with long lines).
pub fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first link containing `marker` in a mail text, up to whitespace.
pub fn link_in(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)?;
    let start = text[..at]
        .rfind(|c: char| c.is_whitespace() || c == '"')
        .map_or(0, |i| i + 1);
    let end = text[at..]
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .map_or(text.len(), |i| at + i);
    Some(text[start..end].to_string())
}

/// The link containing `marker` in the newest outbox mail to `to`, waiting
/// (up to [`PATIENCE`]) for the job that writes it.
pub async fn outbox_link(data_dir: &Path, to: &str, marker: &str) -> String {
    let outbox = data_dir.join("outbox");
    let what = format!("a mail to {to} with a link containing {marker}");
    eventually(&what, PATIENCE, || async {
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files.iter().rev() {
            let raw = std::fs::read_to_string(file).unwrap_or_default();
            let addressed = raw
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")));
            if !addressed {
                continue;
            }
            if let Some(link) = link_in(&decode_quoted_printable(&raw), marker) {
                return Ok(link);
            }
        }
        Err(format!("{} file(s) in {}", files.len(), outbox.display()))
    })
    .await
}
