//! The data folder: private to its owner — the folder [`DIR_MODE`] and every
//! file livebase writes there [`FILE_MODE`], whatever the umask, and files
//! left with wider modes by older versions narrowed when it is opened — and
//! held by one process at a time, through an OS lock on [`LOCK_FILE`] that
//! the kernel releases when the process ends (however it ends).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::auth::tokens::SECRET_FILE;
use crate::email::OUTBOX_DIR;
use crate::error::{Error, Result};
use crate::store::sqlite::DATABASE_FILE;

/// The lock file in the data folder; it holds the pid of the process that
/// has the folder, for the error another process shows.
pub const LOCK_FILE: &str = "LOCK";
/// Mode of the data folder and the folders in it: the owner's only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file livebase writes (the store's [`FILE_MODE`], with its
/// [`create_private_file`]).
pub use livebase_store::files::{create_private_file, FILE_MODE};

/// A data folder this process holds; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates the data folder if missing, makes it and the files livebase
/// keeps in it private, and takes its lock. Fails at once, naming the
/// folder, if another process holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock> {
    let io = |what: &str, path: &Path, e: io::Error| {
        Error::internal(format!("{what} {}: {e}", path.display()))
    };
    create_private_dir(dir).map_err(|e| io("creating", dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("opening", &path, e))?;
    set_mode(&path, FILE_MODE).map_err(|e| io("restricting", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(Error::conflict(format!(
                "the data folder {} is in use by another livebase process{holder}; \
                 stop it first, or use another data folder",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io("locking", &path, e)),
    }
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    make_contents_private(dir);
    Ok(DataDirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

/// Narrows the modes of what livebase keeps in `dir` (earlier versions left
/// them to the umask). A file that cannot be changed is logged, not fatal.
fn make_contents_private(dir: &Path) {
    let db = dir.join(DATABASE_FILE);
    let mut files = vec![
        sidecar(&db, "-wal"),
        sidecar(&db, "-shm"),
        db,
        dir.join(SECRET_FILE),
    ];
    let outbox = dir.join(OUTBOX_DIR);
    if outbox.is_dir() {
        narrow(&outbox, DIR_MODE);
        if let Ok(entries) = fs::read_dir(&outbox) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    for file in files {
        if file.exists() {
            narrow(&file, FILE_MODE);
        }
    }
}

/// `<db>-wal` beside `<db>`.
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn narrow(path: &Path, mode: u32) {
    if let Err(e) = set_mode(path, mode) {
        tracing::warn!(
            "cannot make {} private (mode {mode:o}): {e}",
            path.display()
        );
    }
}

/// Creates `dir` (and missing parents) and sets it to [`DIR_MODE`].
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)?;
    set_mode(dir, DIR_MODE).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("making it private (mode {DIR_MODE:o}): {e}"),
        )
    })
}

/// Writes `bytes` to the new file `path`, private from its first byte.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_private_file(path)?.write_all(bytes)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn a_second_lock_on_the_folder_fails_naming_it_until_the_first_is_dropped() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("data");
        let first = lock(&dir).expect("the first lock");
        let refused = lock(&dir).expect_err("held").to_string();
        assert!(refused.contains(&dir.display().to_string()), "{refused}");
        assert!(
            refused.contains("in use by another livebase process"),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        lock(&dir).expect("free again");
    }

    #[test]
    fn opening_narrows_the_folder_and_the_files_livebase_keeps_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = dir.path().join(OUTBOX_DIR);
        fs::create_dir(&outbox).unwrap();
        let db = dir.path().join(DATABASE_FILE);
        let files = [
            db.clone(),
            sidecar(&db, "-wal"),
            sidecar(&db, "-shm"),
            dir.path().join(SECRET_FILE),
            outbox.join("1-a.eml"),
        ];
        for f in &files {
            fs::write(f, b"x").unwrap();
            set_mode(f, 0o644).unwrap();
        }
        set_mode(&outbox, 0o755).unwrap();
        set_mode(dir.path(), 0o755).unwrap();
        let _held = lock(dir.path()).expect("locks");
        assert_eq!(mode(dir.path()), DIR_MODE);
        assert_eq!(mode(&outbox), DIR_MODE);
        for f in files.iter().chain([&dir.path().join(LOCK_FILE)]) {
            assert_eq!(mode(f), FILE_MODE, "{}", f.display());
        }
    }
}
