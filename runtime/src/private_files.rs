//! Files and folders private to their owner: created with [`DIR_MODE`] and
//! [`FILE_MODE`] whatever the umask. A leaf: the data folder
//! ([`crate::datadir`]), the store, the token secret and the outbox all
//! create their files through it.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Mode of the data folder and the folders in it: the owner's only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file livebase writes, and how it creates them: the store's
/// (it creates the database files), one definition for both.
pub use livebase_store::files::{create_private_file, FILE_MODE};

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
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
pub(crate) fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}
