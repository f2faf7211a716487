//! The data file as redb sees it: redb's own file backend, except that
//! when the file grows its new part is written with zeros at once.
//!
//! A commit that writes into a part of the file that the file system has
//! not yet allocated makes its fsync also record the allocation (on ext4,
//! a journal commit of its own), which about doubles the time a commit
//! waits on the disk. Written once when the file grows, the pages are
//! allocated, and every later commit into them pays only for its data.
//! redb asks that new positions read as zeros, which they do.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// Zeros written per call while the file grows.
const CHUNK: usize = 1 << 20;

/// Opens (or creates) the database at `path` on the backend below.
pub fn create(path: &Path) -> Result<Database, DatabaseError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    // Cases, transcripts and token hashes: readable by the broker's user
    // alone (a file made by an older version is narrowed too).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    redb::Builder::new().create_with_backend(Allocated::new(file)?)
}

/// redb's file backend, with the file's growth written out.
#[derive(Debug)]
pub struct Allocated {
    inner: FileBackend,
}

impl Allocated {
    pub fn new(file: File) -> Result<Allocated, DatabaseError> {
        Ok(Allocated {
            inner: FileBackend::new(file)?,
        })
    }
}

impl StorageBackend for Allocated {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let old = self.inner.len()?;
        self.inner.set_len(len)?;
        if len > old {
            let zeros = vec![0u8; CHUNK.min((len - old) as usize)];
            let mut at = old;
            while at < len {
                let n = ((len - at) as usize).min(zeros.len());
                self.inner.write(at, &zeros[..n])?;
                at += n as u64;
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_file_is_allocated_and_reads_as_zeros() {
        let dir = std::env::temp_dir().join(format!("casebroker-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let backend = Allocated::new(file).unwrap();
        backend.write(0, b"head").unwrap();
        let len = 3 * CHUNK as u64 + 4096;
        backend.set_len(len).unwrap();
        assert_eq!(backend.len().unwrap(), len);
        let mut out = vec![1u8; 4096];
        backend.read(len - 4096, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 0));
        let mut head = [0u8; 4];
        backend.read(0, &mut head).unwrap();
        assert_eq!(&head, b"head", "growing keeps what was there");
        // Every block of the grown file is allocated: no holes left.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.blocks() * 512 >= len,
            "{} blocks for {len} bytes",
            meta.blocks()
        );
        // Shrinking is redb's own.
        backend.set_len(4096).unwrap();
        assert_eq!(backend.len().unwrap(), 4096);
        drop(backend);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_data_file_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("casebroker-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("casebroker.redb");
        // A file left readable by an older version is narrowed too.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
