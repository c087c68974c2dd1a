//! The bpf(2) commands this module needs and aya 0.14 does not offer for them:
//! BPF_PROG_LOAD with an expected attach type of Linux 6.6+, BPF_BTF_LOAD (the object's
//! types for those programs), BPF_LINK_CREATE with the `uprobe_multi` member, and
//! BPF_OBJ_GET_INFO_BY_FD on such a link (tests).
//!
//! Each attr struct is the prefix of `union bpf_attr` the command reads, laid out as in
//! `include/uapi/linux/bpf.h` of Linux 6.18 and checked field by field below. Passing a
//! prefix is how bpf(2) is meant to be used: the kernel zero-fills the rest.

use std::{
    ffi::CStr,
    io,
    mem::{offset_of, size_of},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya_obj::generated::bpf_insn;

/// Kernel constants (`include/uapi/linux/bpf.h`, Linux 6.18; the attach types were
/// checked against the running kernel's `enum bpf_attach_type`).
pub mod uapi {
    /// `enum bpf_cmd`
    pub const BPF_PROG_LOAD: u32 = 5;
    pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const BPF_BTF_LOAD: u32 = 18;
    pub const BPF_LINK_CREATE: u32 = 28;
    /// `enum bpf_prog_type`: uprobes of every kind are kprobe programs.
    pub const BPF_PROG_TYPE_KPROBE: u32 = 2;
    /// `enum bpf_attach_type`: uprobe_multi links (Linux 6.6).
    pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
    /// `enum bpf_attach_type`: uprobe session links (Linux 6.13).
    pub const BPF_TRACE_UPROBE_SESSION: u32 = 57;
    /// `link_create.uprobe_multi.flags`: the link's probes are return probes.
    pub const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
    /// `enum bpf_link_type` of uprobe_multi and uprobe session links.
    #[cfg(test)]
    pub const BPF_LINK_TYPE_UPROBE_MULTI: u32 = 12;
    /// `bpf_insn.src_reg` of a kfunc call: `imm` is the kfunc's BTF id, `off` 0 means
    /// vmlinux.
    pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
    /// `BPF_JMP | BPF_CALL`
    pub const BPF_CALL: u8 = 0x85;
    /// `MAX_UPROBE_MULTI_CNT` (kernel/trace/bpf_trace.c): offsets one link takes at most.
    pub const MAX_UPROBE_MULTI_CNT: usize = 1 << 20;
}

/// Runs bpf(2) `cmd` with `attr`; the syscall's value.
fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    let size = libc::c_ulong::try_from(size_of::<T>()).expect("an attr is small");
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] prefix of `union
    // bpf_attr` for `cmd`, and `size` is its size, so the kernel reads and writes within
    // it only. The pointers inside it were set by the callers to buffers that outlive
    // this call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd),
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size,
        )
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Like [`sys_bpf`] for the commands that return a new file descriptor.
fn sys_bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(sys_bpf(cmd, attr)?).map_err(io::Error::other)?;
    // SAFETY: on success these commands return a new descriptor nothing else owns; it is
    // taken over exactly once, here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel answers EAGAIN to loads under memory pressure; libbpf tries five times too.
fn retry_eagain<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// A pointer as the kernel takes it in an attr.
fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `log_true_size` (Linux 6.4).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}

const _: () = {
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);
    assert!(offset_of!(ProgLoadAttr, prog_btf_fd) == 72);
    assert!(offset_of!(ProgLoadAttr, func_info) == 80);
    assert!(offset_of!(ProgLoadAttr, line_info) == 96);
    assert!(offset_of!(ProgLoadAttr, attach_btf_id) == 108);
    assert!(offset_of!(ProgLoadAttr, fd_array) == 120);
    assert!(offset_of!(ProgLoadAttr, log_true_size) == 140);
    assert!(size_of::<ProgLoadAttr>() == 144);
    assert!(size_of::<bpf_insn>() == 8);
};

/// Debug information for a program: the object's BTF (loaded with [`btf_load`]) and
/// the program's `bpf_func_info` and `bpf_line_info` records. The verifier needs the
/// function records for any program that passes a callback (`bpf_loop`).
pub struct ProgBtf<'a> {
    pub btf: BorrowedFd<'a>,
    pub func_info: &'a [u8],
    pub func_info_rec_size: u32,
    pub line_info: &'a [u8],
    pub line_info_rec_size: u32,
}

/// A program for [`prog_load`].
pub struct ProgLoad<'a> {
    /// Shown by `bpftool prog` (15 bytes at most).
    pub name: &'a str,
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub insns: &'a [bpf_insn],
    pub license: &'a CStr,
    pub btf: Option<ProgBtf<'a>>,
}

/// Why the kernel refused a program, with the verifier's log when it gave one.
#[derive(Debug)]
pub struct LoadFailure {
    pub errno: io::Error,
    pub log: String,
}

/// Records of `rec_size` bytes each in `bytes`.
fn records(bytes: &[u8], rec_size: u32) -> u32 {
    if rec_size == 0 { 0 } else { u32::try_from(bytes.len() / rec_size as usize).unwrap_or(u32::MAX) }
}

/// BPF_PROG_LOAD. When the kernel refuses, loads again with the verifier log on, so that
/// the failure says why.
pub fn prog_load(p: &ProgLoad<'_>) -> Result<OwnedFd, LoadFailure> {
    let mut attr = ProgLoadAttr {
        prog_type: p.prog_type,
        insn_cnt: u32::try_from(p.insns.len()).unwrap_or(u32::MAX),
        insns: ptr(p.insns.as_ptr()),
        license: ptr(p.license.as_ptr()),
        expected_attach_type: p.expected_attach_type,
        ..Default::default()
    };
    let name = &p.name.as_bytes()[..p.name.len().min(15)];
    attr.prog_name[..name.len()].copy_from_slice(name);
    if let Some(b) = &p.btf {
        attr.prog_btf_fd = b.btf.as_raw_fd() as u32;
        attr.func_info = ptr(b.func_info.as_ptr());
        attr.func_info_cnt = records(b.func_info, b.func_info_rec_size);
        attr.func_info_rec_size = b.func_info_rec_size;
        attr.line_info = ptr(b.line_info.as_ptr());
        attr.line_info_cnt = records(b.line_info, b.line_info_rec_size);
        attr.line_info_rec_size = b.line_info_rec_size;
    }
    let errno = match retry_eagain(|| sys_bpf_fd(uapi::BPF_PROG_LOAD, &mut attr)) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 22];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = ptr(log.as_mut_ptr());
    // Only for the log: the second attempt normally fails the same way.
    if let Ok(fd) = retry_eagain(|| sys_bpf_fd(uapi::BPF_PROG_LOAD, &mut attr)) {
        return Ok(fd);
    }
    Err(LoadFailure { errno, log: c_text(&log) })
}

/// The text up to the first NUL.
fn c_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim_end().to_string()
}

/// `union bpf_attr` for BPF_BTF_LOAD, up to `btf_log_true_size` (Linux 6.4).
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    btf_log_true_size: u32,
}

const _: () = {
    assert!(offset_of!(BtfLoadAttr, btf_size) == 16);
    assert!(offset_of!(BtfLoadAttr, btf_log_level) == 24);
    assert!(size_of::<BtfLoadAttr>() == 32);
};

/// BPF_BTF_LOAD of a raw BTF blob; with the kernel's log when it refuses.
pub fn btf_load(btf: &[u8]) -> Result<OwnedFd, LoadFailure> {
    let mut attr = BtfLoadAttr {
        btf: ptr(btf.as_ptr()),
        btf_size: u32::try_from(btf.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let errno = match retry_eagain(|| sys_bpf_fd(uapi::BPF_BTF_LOAD, &mut attr)) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 16];
    attr.btf_log_level = 1;
    attr.btf_log_size = log.len() as u32;
    attr.btf_log_buf = ptr(log.as_mut_ptr());
    if let Ok(fd) = retry_eagain(|| sys_bpf_fd(uapi::BPF_BTF_LOAD, &mut attr)) {
        return Ok(fd);
    }
    Err(LoadFailure { errno, log: c_text(&log) })
}

/// `union bpf_attr` for BPF_LINK_CREATE with its `uprobe_multi` member (Linux 6.6).
#[repr(C)]
#[derive(Default)]
struct LinkCreateUprobeMultiAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    uprobe_multi_flags: u32,
    pid: u32,
    _pad: u32,
}

const _: () = {
    assert!(offset_of!(LinkCreateUprobeMultiAttr, attach_type) == 8);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, path) == 16);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, offsets) == 24);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, cookies) == 40);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, cnt) == 48);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, uprobe_multi_flags) == 52);
    assert!(offset_of!(LinkCreateUprobeMultiAttr, pid) == 56);
    assert!(size_of::<LinkCreateUprobeMultiAttr>() == 64);
};

/// What one uprobe_multi or uprobe session link attaches to.
pub struct LinkCreate<'a> {
    pub prog: BorrowedFd<'a>,
    pub attach_type: u32,
    /// `link_create.uprobe_multi.flags`
    pub flags: u32,
    pub path: &'a CStr,
    pub offsets: &'a [u64],
    /// As many as offsets, or none.
    pub cookies: &'a [u64],
    /// 0: every process that maps the file.
    pub pid: u32,
}

/// BPF_LINK_CREATE of a uprobe_multi or uprobe session link. The caller checked the
/// lengths: the kernel reads `offsets.len()` entries of `cookies` when it is not empty.
pub fn link_create(l: &LinkCreate<'_>) -> io::Result<OwnedFd> {
    assert!(l.cookies.is_empty() || l.cookies.len() == l.offsets.len(), "a cookie per offset");
    let mut attr = LinkCreateUprobeMultiAttr {
        prog_fd: l.prog.as_raw_fd() as u32,
        attach_type: l.attach_type,
        path: ptr(l.path.as_ptr()),
        offsets: ptr(l.offsets.as_ptr()),
        cookies: if l.cookies.is_empty() { 0 } else { ptr(l.cookies.as_ptr()) },
        cnt: u32::try_from(l.offsets.len()).unwrap_or(u32::MAX),
        uprobe_multi_flags: l.flags,
        pid: l.pid,
        ..Default::default()
    };
    sys_bpf_fd(uapi::BPF_LINK_CREATE, &mut attr)
}

/// `struct bpf_link_info` with its `uprobe_multi` member (Linux 6.8), padded to the
/// union's size.
#[repr(C)]
#[derive(Default)]
struct LinkInfoUprobeMulti {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    path_size: u32,
    count: u32,
    flags: u32,
    pid: u32,
    _tail: [u64; 4],
}

const _: () = {
    assert!(offset_of!(LinkInfoUprobeMulti, path) == 16);
    assert!(offset_of!(LinkInfoUprobeMulti, cookies) == 40);
    assert!(offset_of!(LinkInfoUprobeMulti, count) == 52);
    assert!(offset_of!(LinkInfoUprobeMulti, pid) == 60);
};

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct ObjInfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// What the kernel says about a uprobe_multi link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    pub path: String,
    pub offsets: Vec<u64>,
    pub cookies: Vec<u64>,
    pub flags: u32,
    pub pid: u32,
}

/// BPF_OBJ_GET_INFO_BY_FD of a uprobe_multi link with `count` offsets.
pub fn link_info(fd: BorrowedFd<'_>, count: usize) -> io::Result<LinkInfo> {
    let mut path = vec![0u8; libc::PATH_MAX as usize];
    let (mut offsets, mut cookies) = (vec![0u64; count], vec![0u64; count]);
    let mut info = LinkInfoUprobeMulti {
        path: ptr(path.as_mut_ptr()),
        path_size: path.len() as u32,
        offsets: ptr(offsets.as_mut_ptr()),
        cookies: ptr(cookies.as_mut_ptr()),
        count: u32::try_from(count).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let mut attr = ObjInfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfoUprobeMulti>() as u32,
        info: ptr(&raw mut info),
    };
    sys_bpf(uapi::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    offsets.truncate(info.count as usize);
    cookies.truncate(info.count as usize);
    Ok(LinkInfo {
        link_type: info.link_type,
        id: info.id,
        prog_id: info.prog_id,
        path: c_text(&path),
        offsets,
        cookies,
        flags: info.flags,
        pid: info.pid,
    })
}
