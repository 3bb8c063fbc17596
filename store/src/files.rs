//! Files the store creates: private to their owner from their first byte
//! ([`FILE_MODE`], whatever the umask). The data folder around them is the
//! runtime's (`datadir`), which uses the same helper for its own files.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of every file livebase writes: the database and its `-wal` and
/// `-shm`, the token secret, outbox mails, exports.
pub const FILE_MODE: u32 = 0o600;

/// Creates the new file `path` with [`FILE_MODE`] (`create_new`: it fails
/// if the file exists). The mode is set after creating, so the umask does
/// not matter.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    set_file_mode(&file, FILE_MODE)?;
    Ok(file)
}

#[cfg(unix)]
fn set_file_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_file_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}
