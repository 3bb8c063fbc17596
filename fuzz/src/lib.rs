//! Fuzz targets for livebase's hostile-input edges, and the coverage-free
//! mutation fuzzer that runs them on the stable toolchain (`cargo fuzz` needs
//! nightly sanitizers, which this project does not build with).
//!
//! Each target takes arbitrary bytes, feeds them to one decoder, and states
//! its invariant in code: it panics when the invariant breaks, and a panic in
//! the code under test is a finding too. It returns a short *outcome label*
//! ("ok:Connect", "err:expected a string"); the fuzzer keeps a mutated input
//! whose label it has not seen yet, which steers it past the first error
//! towards deeper ones without coverage instrumentation.
//!
//! `fuzz/corpus/<target>/` holds each target's seeds; `cargo test -p
//! livebase-fuzz` replays every one of them (see `tests/corpus.rs`).

pub mod driver;
pub mod keycodec;
pub mod mutate;
pub mod targets;

use std::path::PathBuf;

/// One fuzz target.
pub struct Target {
    /// The name on the command line and of its corpus folder.
    pub name: &'static str,
    /// What it checks, one line.
    pub checks: &'static str,
    /// Runs one input; panics when an invariant breaks; returns the outcome
    /// label.
    pub run: fn(&[u8]) -> String,
    /// Tokens the mutator splices in (JSON keys, tags, numbers).
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, in the order `all` runs them.
pub const TARGETS: &[Target] = &[
    targets::frame::TARGET,
    targets::value_json::TARGET,
    targets::index_key::TARGET,
    targets::cursor::TARGET,
    targets::import::TARGET,
];

/// The target of that name.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// `fuzz/corpus/<name>/`, the checked-in seeds of a target.
pub fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// Every file of a target's corpus folder, sorted by name.
pub fn load_corpus(name: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(corpus_dir(name))? {
        let path = entry?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path)?;
            files.push((path, bytes));
        }
    }
    files.sort();
    Ok(files)
}

/// A label that groups messages of one kind: quoted parts and numbers
/// collapsed, so an attacker-chosen name or number in an error
/// does not make every input look new.
pub fn normalize(message: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut last_digit = false;
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            // Inside a quoted part: skip to its closing quote. A JSON string
            // in a message escapes its own quotes; a name in backticks is not
            // escaped, so only a backtick before a space, punctuation or the
            // end closes it.
            let closes = match q {
                '"' => !escaped && c == '"',
                _ => {
                    c == q
                        && chars
                            .peek()
                            .is_none_or(|n| !n.is_alphanumeric() && *n != '`')
                }
            };
            escaped = !escaped && c == '\\';
            if closes {
                quote = None;
                out.push(c);
            }
            continue;
        }
        match c {
            '"' | '`' => {
                quote = Some(c);
                out.push(c);
                out.push('…');
            }
            '0'..='9' => {
                if !last_digit {
                    out.push('#');
                }
            }
            _ => out.push(c),
        }
        last_digit = c.is_ascii_digit();
    }
    out
}

/// The label of an error message: its last part (after the last `": "`,
/// which follows the path of where the problem is), normalized, cut to 60
/// characters.
pub fn error_label(message: &str) -> String {
    let shown = normalize(message);
    // Between the first and the last quote a name from the input may still
    // hide (a backtick inside a backticked name): leave all of it out.
    let shown = match (shown.find(['"', '`']), shown.rfind(['"', '`'])) {
        (Some(first), Some(last)) if first < last => {
            format!("{}…{}", &shown[..first], &shown[last + 1..])
        }
        _ => shown,
    };
    let last = shown.rsplit(": ").next().unwrap_or(&shown);
    last.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_ignore_names_and_numbers() {
        assert_eq!(
            normalize(r#"unknown message type "Foo" at line 12 column 3"#),
            normalize(r#"unknown message type "Barbaz" at line 1 column 99"#),
        );
        assert_ne!(
            normalize("expected a string"),
            normalize("expected an array")
        );
    }

    #[test]
    fn every_target_has_a_corpus() {
        for t in TARGETS {
            let files = load_corpus(t.name).unwrap();
            assert!(!files.is_empty(), "{} has no corpus", t.name);
        }
    }
}
