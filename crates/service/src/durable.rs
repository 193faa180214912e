//! Files written so that a crash leaves either the old content or the new, never a mix:
//! the server's checkpoints and the client's memory of rounds both go through here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Who may read a file written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The platform's default permissions.
    Shared,
    /// Its owner only (mode 0600 on Unix): for secrets.
    Private,
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, flushed to disk,
/// renamed into place, and the directory synced so that the rename itself survives.
pub fn write_atomically(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::Private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = access;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Not every platform can open a directory; the rename happened either way.
        if let Ok(dir) = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("privagg-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory.json");
        write_atomically(&path, b"first", Access::Shared).unwrap();
        write_atomically(&path, b"second", Access::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let secret = dir.join("key.der");
            write_atomically(&secret, b"k", Access::Private).unwrap();
            assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
