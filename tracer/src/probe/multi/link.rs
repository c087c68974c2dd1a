//! uprobe_multi and uprobe session links: many uprobes in one file, one descriptor.

use std::{
    ffi::CString,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use super::{
    MultiError,
    sys::{self, LinkInfo, uapi},
};

/// What a link runs its program at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultiKind {
    /// Function entries (uprobes).
    Entry,
    /// Function returns (uretprobes).
    Return,
    /// Entries, and the returns of the calls whose entry returned 0: one program for both
    /// halves, which tells them apart with `bpf_session_is_return()`.
    Session,
}

impl MultiKind {
    /// The attach type of the link, which its program must be loaded with.
    pub const fn attach_type(self) -> u32 {
        match self {
            Self::Entry | Self::Return => uapi::BPF_TRACE_UPROBE_MULTI,
            Self::Session => uapi::BPF_TRACE_UPROBE_SESSION,
        }
    }

    const fn flags(self) -> u32 {
        match self {
            Self::Return => uapi::BPF_F_UPROBE_MULTI_RETURN,
            Self::Entry | Self::Session => 0,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Entry => "uprobe_multi",
            Self::Return => "uprobe_multi (return)",
            Self::Session => "uprobe session",
        }
    }
}

/// Where a link attaches: file offsets (the unit of uprobes) in one file, each with its
/// attach cookie, for one process.
#[derive(Debug, Clone, Copy)]
pub struct UprobeMultiSpec<'a> {
    /// A regular file, or a path to one (symbolic links, `/proc/PID/map_files`, are
    /// followed).
    pub path: &'a Path,
    pub offsets: &'a [u64],
    /// `bpf_get_attach_cookie()` at `offsets[i]`: as many as offsets.
    pub cookies: &'a [u64],
    /// The process (the whole thread group, on kernels that filter by process: see
    /// `Features::pid_filter`).
    pub pid: u32,
}

/// One uprobe_multi or session link. Closing its descriptor (dropping it) detaches all
/// its uprobes, the kernel waiting once for handlers in flight rather than once per
/// uprobe. The link holds its program, so the program's own descriptor may go first.
#[derive(Debug)]
pub struct MultiLink {
    fd: OwnedFd,
    count: usize,
}

impl MultiLink {
    /// BPF_LINK_CREATE. `prog` must have been loaded with `kind.attach_type()`.
    pub fn attach(
        prog: BorrowedFd<'_>,
        kind: MultiKind,
        spec: &UprobeMultiSpec<'_>,
    ) -> Result<Self, MultiError> {
        let count = spec.offsets.len();
        if count == 0 || count > uapi::MAX_UPROBE_MULTI_CNT {
            return Err(MultiError::Offsets(count));
        }
        if spec.cookies.len() != count {
            return Err(MultiError::Cookies { offsets: count, cookies: spec.cookies.len() });
        }
        let path = CString::new(spec.path.as_os_str().as_bytes())
            .map_err(|_| MultiError::PathNul(spec.path.to_path_buf()))?;
        let create = sys::LinkCreate {
            prog,
            attach_type: kind.attach_type(),
            flags: kind.flags(),
            path: &path,
            offsets: spec.offsets,
            cookies: spec.cookies,
            pid: spec.pid,
        };
        let fd = sys::link_create(&create)
            .map_err(|cause| MultiError::Syscall { call: "BPF_LINK_CREATE", cause })?;
        Ok(Self { fd, count })
    }

    /// Uprobes in the link.
    pub fn count(&self) -> usize {
        self.count
    }

    /// What the kernel says about the link.
    pub fn info(&self) -> Result<LinkInfo, MultiError> {
        sys::link_info(self.fd.as_fd(), self.count)
            .map_err(|cause| MultiError::Syscall { call: "BPF_OBJ_GET_INFO_BY_FD", cause })
    }
}

impl AsFd for MultiLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
