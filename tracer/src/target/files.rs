//! Opening files the target names, as root, without trusting it.
//!
//! The target chooses the paths of its mappings and what is at them: a FIFO (an open
//! would block forever), a device (a read would never end), an absolute symlink inside
//! its own mount namespace (resolved against the host's root it would open a host file
//! the target cannot see). So: a mapped file is opened through `/proc/PID/map_files/`,
//! which is the mapped file itself whatever its path now says, or else resolved inside
//! the target's root (`openat2` with `RESOLVE_IN_ROOT`); always non-blocking; only
//! regular files are accepted, and only up to a size; reads never go past the size the
//! file had when opened (a file that grows meanwhile cannot make us read forever).

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
        unix::fs::FileExt as _,
    },
    path::Path,
};

/// Files larger than this are not read (no code object is anywhere near it).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {} MiB", MAX_FILE_BYTES >> 20)]
    TooLarge,
}

/// Opens the file mapped at `[start, end)` in process `pid`, or `path` inside the
/// process's root when the mapping's entry cannot be opened (fewer privileges).
pub fn open_mapped(pid: u32, start: u64, end: u64, path: &Path) -> Result<File, FileError> {
    let entry = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    match open_regular(Path::new(&entry), 0) {
        Ok(file) => Ok(file),
        Err(FileError::Io(_)) => open_in_root(pid, path),
        Err(e) => Err(e),
    }
}

/// Opens `path` as process `pid` sees it: resolved inside its root, symlinks included.
pub fn open_in_root(pid: u32, path: &Path) -> Result<File, FileError> {
    let root = open_regular_dir(Path::new(&format!("/proc/{pid}/root")))?;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let file = openat2_in_root(&root, relative)?;
    check_regular(file)
}

/// Opens a path of our own choosing (the command `run` starts, the libraries its loader
/// lists): non-blocking, regular files only.
pub fn open_local(path: &Path) -> Result<File, FileError> {
    open_regular(path, 0)
}

/// Reads a whole file opened by the functions above, refusing one larger than `max`.
pub fn read_bounded(file: &mut File, max: u64) -> Result<Vec<u8>, FileError> {
    let size = file.metadata()?.len();
    if size > max.min(MAX_FILE_BYTES) {
        return Err(FileError::TooLarge);
    }
    let mut data = vec![0; usize::try_from(size).map_err(|_| FileError::TooLarge)?];
    // Positional reads from the start, wherever the descriptor stands: a kept descriptor
    // is shared by its clones, which may be read at the same time.
    let mut done = 0;
    while done < data.len() {
        match file.read_at(&mut data[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    data.truncate(done);
    Ok(data)
}

fn open_regular(path: &Path, extra_flags: i32) -> Result<File, FileError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY | extra_flags;
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    check_regular(unsafe { File::from_raw_fd(fd) })
}

fn open_regular_dir(path: &Path) -> Result<OwnedFd, FileError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2 relative to `root`, with `root` as `/` for every path component and symlink.
fn openat2_in_root(root: &OwnedFd, relative: &Path) -> io::Result<File> {
    let c = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a valid directory fd, a NUL-terminated path, and `how` with its size.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, root.as_raw_fd(), c.as_ptr(), &raw const how, size_of::<OpenHow>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

fn check_regular(file: File) -> Result<File, FileError> {
    if file.metadata()?.file_type().is_file() { Ok(file) } else { Err(FileError::NotRegular) }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lt-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        assert!(matches!(open_local(Path::new("/dev/zero")), Err(FileError::NotRegular)));
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        assert!(matches!(open_local(&fifo), Err(FileError::NotRegular)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_are_bounded_by_the_size_allowed() {
        let dir = scratch("bounded");
        let path = dir.join("f");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let mut file = open_local(&path).unwrap();
        assert!(matches!(read_bounded(&mut file, 100), Err(FileError::TooLarge)));
        let mut file = open_local(&path).unwrap();
        assert_eq!(read_bounded(&mut file, 4096).unwrap().len(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Symlinks in the target's root resolve inside that root, never against ours: an
    /// absolute link and a relative one escaping with `..` both land inside (a scratch
    /// directory stands in for the target's root).
    #[test]
    fn links_cannot_escape_the_root() {
        let dir = scratch("root");
        std::fs::write(dir.join("inside"), "inside").unwrap();
        symlink("../../../../../../../../inside", dir.join("escape")).unwrap();
        symlink("/inside", dir.join("absolute")).unwrap();
        let root = open_regular_dir(&dir).unwrap();
        for link in ["escape", "absolute"] {
            let mut file = openat2_in_root(&root, Path::new(link)).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).unwrap();
            assert_eq!(text, "inside", "{link}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mapped_files_open_through_map_files_or_the_root() {
        let maps = super::super::maps::read(std::process::id()).unwrap();
        let exe = maps.iter().find(|m| m.executable && m.file_path().is_some()).unwrap();
        let file = open_mapped(std::process::id(), exe.start, exe.end, &exe.file_path().unwrap()).unwrap();
        assert!(file.metadata().unwrap().len() > 0);
    }
}
