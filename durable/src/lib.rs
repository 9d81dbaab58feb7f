//! `wasmfleet-durable`: the one way wasmfleet replaces a file on disk, so that a crash or a
//! power loss at any moment leaves either the old content or the new one under the name,
//! never a mix, an empty file or nothing.
//!
//! Every replacement goes the same way: the bytes are written to a temporary file in the same
//! directory (a rename is atomic only within one file system), the file is fsynced, renamed
//! over the target, and the directory is fsynced so the rename itself survives a power loss.
//! The file is created with the given mode from the start ([`PRIVATE`] for keys and tokens),
//! never widened afterwards.
//!
//! - [`write`]: a whole file from bytes in memory;
//! - [`AtomicFile`]: a file written piece by piece (a streamed upload) and published by
//!   [`AtomicFile::commit`]; dropped uncommitted, it removes its temporary file;
//! - [`rename`]: publishes a file that was written elsewhere in the same directory (a partial
//!   download that turned out whole).
//!
//! Used by the runtime (compiled-code cache), the cluster (certificates and keys) and the node
//! (store blobs, tokens, peer lists). It depends on std alone and must not depend on any other
//! wasmfleet crate: `runtime` and `cluster` both use it and must not depend on each other.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Readable and writable by the owner only: keys, tokens, anything secret.
pub const PRIVATE: u32 = 0o600;
/// Readable by everyone, writable by the owner (the umask may narrow it): certificates, caches.
pub const PUBLIC: u32 = 0o644;

/// What failed, on which path (the temporary file's for [`Step::Create`] and [`Step::Write`],
/// the target's otherwise).
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct WriteError {
    pub step: Step,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The step of a replacement that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Write,
    Sync,
    Rename,
    SyncDir,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Create => "creating",
            Step::Write => "writing",
            Step::Sync => "syncing",
            Step::Rename => "renaming into",
            Step::SyncDir => "syncing the directory of",
        })
    }
}

impl From<WriteError> for io::Error {
    /// Keeps the kind of the underlying error (`NotFound`, `PermissionDenied`, ...).
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn fail(step: Step, path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError { step, path: path.to_path_buf(), source }
}

/// Replaces `path` with `bytes`, durably and atomically, as a file of mode `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_all(bytes).map_err(fail(Step::Write, &file.tmp))?;
    file.commit()
}

/// Renames `from` over `to` durably: fsyncs `from` first and the directory of `to` after.
/// Both must be in the same file system (best: the same directory).
pub fn rename(from: &Path, to: &Path) -> Result<(), WriteError> {
    File::open(from).and_then(|f| f.sync_all()).map_err(fail(Step::Sync, from))?;
    fs::rename(from, to).map_err(fail(Step::Rename, to))?;
    sync_dir(to)
}

/// Fsyncs the directory that holds `path`, so a rename or creation in it is durable.
fn sync_dir(path: &Path) -> Result<(), WriteError> {
    let dir = parent(path);
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        // Some file systems cannot fsync a directory (EINVAL); there is nothing more to do.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        Err(source) => Err(WriteError { step: Step::SyncDir, path: path.to_path_buf(), source }),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A replacement of a file being written: bytes go to a temporary file beside the target
/// (`.<name>.tmp-<pid>-<n>`), and [`AtomicFile::commit`] makes them the file's content.
/// Dropped without a commit (an error on the way, a digest that did not match), it removes
/// the temporary file and the target keeps its old content.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file for replacing `path`, with mode `mode`.
    pub fn create(path: &Path, mode: u32) -> Result<AtomicFile, WriteError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Some(name) = path.file_name() else {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "the path names no file");
            return Err(WriteError { step: Step::Create, path: path.to_path_buf(), source });
        };
        let name = name.to_string_lossy();
        let mut attempt = 0;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let tmp = parent(path).join(format!(".{name}.tmp-{}-{n}", std::process::id()));
            // `create_new`: never write into a file someone else holds open (a leftover of a
            // crashed process with the same pid, or a racing writer).
            match OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp) {
                Ok(file) => return Ok(AtomicFile { file, tmp, path: path.to_path_buf(), committed: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(source) => return Err(WriteError { step: Step::Create, path: tmp, source }),
            }
        }
    }

    /// Where the bytes go until the commit.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file this replaces.
    pub fn target(&self) -> &Path {
        &self.path
    }

    /// Fsyncs the bytes, renames them over the target and fsyncs its directory.
    pub fn commit(mut self) -> Result<(), WriteError> {
        self.file.flush().map_err(fail(Step::Write, &self.tmp))?;
        self.file.sync_all().map_err(fail(Step::Sync, &self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(fail(Step::Rename, &self.path))?;
        self.committed = true;
        sync_dir(&self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Names in `dir` other than `keep`.
    fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"first", PUBLIC).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write(&path, b"second, longer than the first", PUBLIC).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer than the first");
        write(&path, b"", PUBLIC).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(others(dir.path(), &["state.json"]), Vec::<String>::new());
    }

    #[test]
    fn a_bare_name_lives_in_the_working_directory() {
        assert_eq!(parent(Path::new("token")), Path::new("."));
        assert_eq!(parent(Path::new("data/token")), Path::new("data"));
    }

    #[test]
    fn private_files_are_0600_from_the_start_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let file = AtomicFile::create(&path, PRIVATE).unwrap();
        assert_eq!(mode_of(file.temp_path()), 0o600, "the temporary file is never readable by others");
        drop(file);
        write(&path, b"secret", PRIVATE).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        let fresh = dir.path().join("node.key");
        write(&fresh, b"key", PRIVATE).unwrap();
        assert_eq!(mode_of(&fresh), 0o600);
    }

    #[test]
    fn a_crash_between_write_and_rename_leaves_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        write(&path, b"old key", PRIVATE).unwrap();
        let mut file = AtomicFile::create(&path, PRIVATE).unwrap();
        file.write_all(b"new key, never committed").unwrap();
        file.flush().unwrap();
        let tmp = file.temp_path().to_path_buf();
        // A crash: no commit and no clean-up either (the destructor never runs).
        std::mem::forget(file);
        assert_eq!(fs::read(&path).unwrap(), b"old key");
        assert_eq!(tmp.parent(), Some(dir.path()), "the temporary file is in the target's directory");
        let tmp_name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(tmp_name.starts_with(".ca.key.tmp-"), "{tmp_name}");
        // The next writer is not disturbed by the leftover.
        write(&path, b"newer key", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"newer key");
    }

    #[test]
    fn an_error_before_the_commit_keeps_the_old_content_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        write(&path, b"old", PUBLIC).unwrap();
        let result: io::Result<()> = (|| {
            let mut file = AtomicFile::create(&path, PUBLIC)?;
            file.write_all(b"half of the new")?;
            // e.g. the digest did not match, or the peer went away mid-transfer.
            Err(io::Error::other("the source failed"))?;
            file.commit()?;
            Ok(())
        })();
        assert_eq!(result.unwrap_err().to_string(), "the source failed");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(others(dir.path(), &["blob"]), Vec::<String>::new());
    }

    #[test]
    fn a_failed_rename_keeps_what_was_there_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "kept").unwrap();
        let err = write(&path, b"new", PUBLIC).unwrap_err();
        assert_eq!(err.step, Step::Rename);
        assert_eq!(err.path, path);
        assert!(err.to_string().starts_with(&format!("renaming into {}: ", path.display())), "{err}");
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "kept");
        assert_eq!(others(dir.path(), &["taken"]), Vec::<String>::new());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere").join("file");
        let err = write(&path, b"x", PUBLIC).unwrap_err();
        assert_eq!(err.step, Step::Create);
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nowhere/.file.tmp-"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
        assert_eq!(write(Path::new("/"), b"x", PUBLIC).unwrap_err().source.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn concurrent_writers_never_mix_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write(path, c, PUBLIC).unwrap();
                        let now = fs::read(path).unwrap();
                        assert!(contents_contains(&now), "a torn file");
                    }
                });
            }
        });
        fn contents_contains(bytes: &[u8]) -> bool {
            bytes.len() == 64 * 1024 && bytes.iter().all(|b| *b == bytes[0])
        }
        assert!(contents.contains(&fs::read(&path).unwrap()));
        assert_eq!(others(dir.path(), &["shared"]), Vec::<String>::new());
    }

    #[test]
    fn rename_publishes_a_file_written_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, whole) = (dir.path().join("abc.partial"), dir.path().join("abc"));
        fs::write(&partial, "bytes").unwrap();
        rename(&partial, &whole).unwrap();
        assert_eq!(fs::read_to_string(&whole).unwrap(), "bytes");
        assert!(!partial.exists());
        let err = rename(&partial, &whole).unwrap_err();
        assert_eq!((err.step, err.source.kind()), (Step::Sync, io::ErrorKind::NotFound));
        assert_eq!(fs::read_to_string(&whole).unwrap(), "bytes");
    }
}
