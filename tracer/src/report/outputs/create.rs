//! Creating output files as root in directories other users may write to.
//!
//! Rules (what `fs.protected_symlinks` and logrotate do, and more): a symbolic link owned
//! by another user is never followed, at the final name or on the way there; new files
//! are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, relative to a directory
//! descriptor opened once (so the path cannot change under us); nothing is opened in a
//! way that can block (a FIFO without a reader is refused, not waited for); a file that
//! must appear complete is written unnamed (`O_TMPFILE`) and linked into place when done.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path} is a symbolic link owned by user {owner}; refusing to write through it")]
    ForeignLink { path: PathBuf, owner: u32 },
    #[error("{path} is a FIFO with no reader; refusing to wait for one")]
    FifoWithoutReader { path: PathBuf },
    #[error("{path} is not a file, a terminal, a FIFO or /dev/null")]
    Unwritable { path: PathBuf },
    #[error("{path}: too many symbolic links")]
    Loop { path: PathBuf },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> CreateError + '_ {
    move |cause| CreateError::Io { path: path.to_path_buf(), cause }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A directory, opened once, that files are created in.
pub struct Dir {
    fd: OwnedFd,
    pub path: PathBuf,
}

impl Dir {
    /// Opens `path` as a directory, refusing other users' symbolic links on the way.
    pub fn open(path: &Path) -> Result<Self, CreateError> {
        let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let resolved = resolve(path, 0)?;
        let c = cstring(&resolved).map_err(io_err(path))?;
        // SAFETY: a NUL-terminated path and plain flags.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io_err(path)(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor, owned from here on.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: resolved })
    }

    /// A new file `name` that did not exist (`O_EXCL`); `None` if the name is taken.
    /// The same directory, by a second descriptor.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    pub fn create_new(&self, name: &str) -> Result<Option<File>, CreateError> {
        let path = self.path.join(name);
        let c = cstring(Path::new(name)).map_err(io_err(&path))?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid directory descriptor, a NUL-terminated name, plain flags.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o600) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::AlreadyExists { Ok(None) } else { Err(io_err(&path)(e)) };
        }
        // SAFETY: a fresh descriptor, owned from here on.
        Ok(Some(unsafe { File::from_raw_fd(fd) }))
    }

    /// An unnamed file in this directory (`O_TMPFILE`): it vanishes unless linked.
    pub fn unnamed(&self) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_TMPFILE | libc::O_CLOEXEC;
        // SAFETY: a valid directory descriptor, a literal name, plain flags.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c".".as_ptr(), flags, 0o600) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned from here on.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Gives an unnamed file the name `name`, which must not exist. Returns false when
    /// it does.
    pub fn link(&self, file: &File, name: &str) -> io::Result<bool> {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
        let to = cstring(Path::new(name))?;
        // SAFETY: NUL-terminated paths and valid descriptors.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                self.fd.as_raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::AlreadyExists { Ok(false) } else { Err(e) }
    }

    /// Renames `from` to `to` in this directory, replacing whatever entry `to` is (a
    /// symbolic link there is replaced, never followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (cstring(Path::new(from))?, cstring(Path::new(to))?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: NUL-terminated names relative to a valid directory descriptor.
        if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn remove(&self, name: &str) {
        if let Ok(c) = cstring(Path::new(name)) {
            // SAFETY: a NUL-terminated name relative to a valid directory descriptor.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    /// Opens an existing entry `name` to write over, without following a link and
    /// without blocking: a regular file (truncated), a terminal or /dev/null, or a FIFO
    /// that has a reader. `Ok(None)` when there is no such entry.
    pub fn open_existing(&self, name: &str) -> Result<Option<(File, Existing)>, CreateError> {
        let path = self.path.join(name);
        let c = cstring(Path::new(name)).map_err(io_err(&path))?;
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: a valid directory descriptor, a NUL-terminated name, plain flags.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ENXIO) => Err(CreateError::FifoWithoutReader { path }),
                _ => Err(io_err(&path)(e)),
            };
        }
        // SAFETY: a fresh descriptor, owned from here on.
        let file = unsafe { File::from_raw_fd(fd) };
        let kind = existing_kind(&file, &path)?;
        clear_nonblocking(&file);
        if kind == Existing::Regular {
            file.set_len(0).map_err(io_err(&path))?;
        }
        Ok(Some((file, kind)))
    }
}

/// What is at an output name now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Regular,
    /// A terminal, /dev/null, a FIFO: written in place, never replaced.
    Stream,
    /// A symbolic link of our own, to this path.
    OwnLink(PathBuf),
}

impl Dir {
    /// What `name` is, without following it; another user's symbolic link is refused.
    pub fn inspect(&self, name: &str) -> Result<Entry, CreateError> {
        let path = self.path.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
            Err(e) => return Err(io_err(&path)(e)),
        };
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_symlink() {
            // SAFETY: geteuid has no preconditions.
            if meta.uid() != unsafe { libc::geteuid() } {
                return Err(CreateError::ForeignLink { path, owner: meta.uid() });
            }
            let target = std::fs::read_link(&path).map_err(io_err(&path))?;
            return Ok(Entry::OwnLink(self.path.join(target)));
        }
        if t.is_file() {
            Ok(Entry::Regular)
        } else if t.is_fifo() || t.is_char_device() {
            Ok(Entry::Stream)
        } else {
            Err(CreateError::Unwritable { path })
        }
    }
}

/// What an existing output entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Regular,
    /// A terminal, /dev/null, a FIFO: written in place, never replaced.
    Stream,
}

fn existing_kind(file: &File, path: &Path) -> Result<Existing, CreateError> {
    let meta = file.metadata().map_err(io_err(path))?;
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_file() {
        Ok(Existing::Regular)
    } else if t.is_fifo() || t.is_char_device() {
        Ok(Existing::Stream)
    } else {
        Err(CreateError::Unwritable { path: path.to_path_buf() })
    }
}

fn clear_nonblocking(file: &File) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// `path` with every symbolic link on the way resolved, refusing links owned by another
/// user (as root, only root's own links are followed).
pub fn resolve(path: &Path, depth: u32) -> Result<PathBuf, CreateError> {
    if depth > 16 {
        return Err(CreateError::Loop { path: path.to_path_buf() });
    }
    let mut done = PathBuf::new();
    let mut components = path.components().peekable();
    while let Some(component) = components.next() {
        done.push(component);
        let Ok(meta) = std::fs::symlink_metadata(&done) else {
            // Missing: the rest is what we will create (or fail to, with its error).
            done.extend(components);
            return Ok(done);
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(CreateError::ForeignLink { path: done, owner: meta.uid() });
        }
        let target = std::fs::read_link(&done).map_err(io_err(&done))?;
        let base = done.parent().map(Path::to_path_buf).unwrap_or_default();
        let rest: PathBuf = components.collect();
        return resolve(&base.join(target).join(rest), depth + 1);
    }
    Ok(done)
}

/// The directory part and file name of an output path.
pub fn split(path: &Path) -> (PathBuf, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir, name)
}

/// A random name for a file on its way into place.
pub fn temp_name(final_name: &str) -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: filling a local buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if n == 8 { u64::from_ne_bytes(bytes) } else { crate::clock::monotonic_ns() };
    format!(".{final_name}.{random:016x}.tmp")
}
