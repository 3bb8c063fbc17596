//! The source watcher of `livebase dev`: a thread that scans the watched
//! files' modification times and sizes every [`POLL`], and reports a change
//! once the files have been still for [`DEBOUNCE`] — an editor's save or a
//! `git checkout` of many files is one change, not many.
//!
//! Polling with std, not the OS's notification APIs: a few hundred source
//! files are scanned in well under a millisecond, it behaves the same on
//! every platform and file system (network and container mounts included),
//! and it adds no crate.
//!
//! Skipped while scanning: names starting with `.` (editor swap files, the
//! data folder `.livebase`, `.git`), names ending with `~` (backups), and
//! folders named `target` (build output, which every build rewrites).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

/// How often the watched files are scanned.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the files must stay unchanged before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What a scan sees of one file.
type Stamp = (Option<SystemTime>, u64);

/// Starts the watcher thread over `roots` (files or folders; a missing one
/// is watched for appearing), as they are when this returns. Each report
/// names one changed path. The thread ends when the receiver is dropped.
pub fn start(roots: Vec<PathBuf>) -> mpsc::Receiver<PathBuf> {
    let (tx, rx) = mpsc::channel(1);
    // The first scan is taken before this returns, not by the thread: a
    // save made as soon as this returns is a change.
    let mut seen = scan(&roots);
    std::thread::Builder::new()
        .name("livebase-watch".into())
        .spawn(move || {
            // A change seen but not yet reported: which path, and the scan
            // that saw the files still changing last.
            let mut pending: Option<(PathBuf, std::time::Instant)> = None;
            loop {
                std::thread::sleep(POLL);
                if tx.is_closed() {
                    return;
                }
                let now = scan(&roots);
                if let Some(path) = first_difference(&seen, &now) {
                    seen = now;
                    let first = pending.map(|(p, _)| p).unwrap_or(path);
                    pending = Some((first, std::time::Instant::now()));
                    continue;
                }
                if let Some((path, since)) = &pending {
                    if since.elapsed() >= DEBOUNCE {
                        // A full channel means a report is already waiting:
                        // the build it starts will see this change too.
                        let _ = tx.try_send(path.clone());
                        pending = None;
                    }
                }
            }
        })
        .expect("spawning the watcher thread");
    rx
}

/// Every watched file under `roots` with its stamp.
fn scan(roots: &[PathBuf]) -> BTreeMap<PathBuf, Stamp> {
    let mut files = BTreeMap::new();
    for root in roots {
        visit(root, &mut files);
    }
    files
}

fn visit(path: &Path, files: &mut BTreeMap<PathBuf, Stamp>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            let child = entry.path();
            if name == "target" && child.is_dir() {
                continue;
            }
            visit(&child, files);
        }
    } else {
        files.insert(path.to_path_buf(), (meta.modified().ok(), meta.len()));
    }
}

/// A path that was added, removed or changed between two scans.
fn first_difference(
    before: &BTreeMap<PathBuf, Stamp>,
    after: &BTreeMap<PathBuf, Stamp>,
) -> Option<PathBuf> {
    for (path, stamp) in after {
        if before.get(path) != Some(stamp) {
            return Some(path.clone());
        }
    }
    before.keys().find(|p| !after.contains_key(*p)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_sees_edits_additions_and_removals_but_not_skipped_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "a").unwrap();
        let roots = vec![root.clone()];
        let first = scan(&roots);
        assert_eq!(first.len(), 1);

        for skipped in [".lib.rs.swp", "lib.rs~", "target/out"] {
            std::fs::write(root.join(skipped), "x").unwrap();
        }
        assert_eq!(first_difference(&first, &scan(&roots)), None);

        std::fs::write(root.join("src/lib.rs"), "ab").unwrap();
        let edited = scan(&roots);
        assert_eq!(
            first_difference(&first, &edited),
            Some(root.join("src/lib.rs"))
        );

        std::fs::write(root.join("src/new.rs"), "").unwrap();
        let added = scan(&roots);
        assert_eq!(
            first_difference(&edited, &added),
            Some(root.join("src/new.rs"))
        );

        std::fs::remove_file(root.join("src/new.rs")).unwrap();
        assert_eq!(
            first_difference(&added, &scan(&roots)),
            Some(root.join("src/new.rs"))
        );
    }

    /// `livebase dev` starts serving, a client sees the first build's
    /// result, and its author saves at once: that save is a change, however
    /// soon after `start` it comes (the first scan is not left to the
    /// watcher thread, which may run it after the save).
    #[tokio::test]
    async fn a_change_made_as_soon_as_the_watcher_starts_is_reported() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("lib.rs");
            std::fs::write(&file, "a").unwrap();
            let mut changes = start(vec![dir.path().to_path_buf()]);
            std::fs::write(&file, format!("changed {round}")).unwrap();
            let reported = tokio::time::timeout(POLL * 4 + DEBOUNCE * 2, changes.recv()).await;
            assert_eq!(
                reported.ok().flatten(),
                Some(file),
                "round {round}: the save right after start was missed"
            );
        }
    }
}
