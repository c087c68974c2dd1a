//! uprobe_multi links and uprobe sessions with aya 0.14, through raw bpf(2): everything
//! aya does not do for them is here, and nowhere else.
//!
//! aya 0.14 attaches uprobes one perf event at a time, which the kernel takes down one
//! at a time too (about 0.1 s each here, serialized by a global lock: 19 uprobes took
//! 2 s to detach). It always loads uprobe programs with expected attach type 0, which no
//! multi link accepts, and cannot call kfuncs. Filled in here:
//!
//! - [`features::probe`]: whether this kernel has uprobe_multi links (6.6), with process
//!   filtering (6.10), uprobe sessions (6.13) and the session kfuncs.
//! - [`ObjectPrograms`]: a program of the object aya loaded, relocated against aya's
//!   maps and loaded with the attach type of a multi or session link.
//! - [`kfunc`]: kfunc calls, written in the programs as placeholder helper calls,
//!   rewritten with the running kernel's BTF ids.
//! - [`MultiLink`]: BPF_LINK_CREATE of a uprobe_multi or session link, any number of
//!   offsets in one file, for one process; closing it detaches them all with one wait.
//!
//! Kernel constants and struct layouts are those of Linux 6.18's uapi header, with
//! compile-time offset checks (`sys`).

pub mod features;
pub mod kfunc;
mod link;
mod object;
mod sys;

use std::{io, path::PathBuf};

pub use self::{
    features::{Features, Support},
    kfunc::Kfuncs,
    link::{MultiKind, MultiLink, UprobeMultiSpec},
    object::ObjectPrograms,
    sys::LoadFailure,
};

#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("{call} failed: {cause}")]
    Syscall { call: &'static str, cause: io::Error },
    #[error("the kernel rejected program {program} for {} links ({}){}", .kind.name(), .failure.errno, log_tail(&.failure.log))]
    Load { program: String, kind: MultiKind, failure: LoadFailure },
    #[error("the kernel rejected the eBPF object's BTF ({}){}", .0.errno, log_tail(&.0.log))]
    Btf(LoadFailure),
    #[error("cannot prepare the eBPF object's programs: {0}")]
    Object(String),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("aya did not create the eBPF object's map {0}")]
    MissingMap(String),
    #[error("program {program} calls kernel function {name}, which this kernel does not have")]
    Kfunc { program: String, name: &'static str },
    #[error("a multi-uprobe link takes 1 to {max} offsets, not {0}", max = sys::uapi::MAX_UPROBE_MULTI_CNT)]
    Offsets(usize),
    #[error("{cookies} cookies for {offsets} offsets")]
    Cookies { offsets: usize, cookies: usize },
    #[error("path {0:?} contains a NUL byte")]
    PathNul(PathBuf),
}

/// The end of a verifier log, where it says what went wrong (the whole log can run to
/// megabytes).
fn log_tail(log: &str) -> String {
    const LINES: usize = 20;
    if log.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(LINES);
    format!("\nverifier log (last {} lines):\n{}", lines.len() - from, lines[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use std::{fs, os::fd::AsFd as _, path::Path};

    use super::*;
    use crate::stacks::elf::ElfFile;

    #[test]
    fn kinds_have_the_kernels_numbers() {
        assert_eq!(MultiKind::Entry.attach_type(), 48);
        assert_eq!(MultiKind::Return.attach_type(), 48);
        assert_eq!(MultiKind::Session.attach_type(), 57);
    }

    #[test]
    fn bad_specs_are_refused_before_any_syscall() {
        let file = fs::File::open("/dev/null").unwrap();
        let spec = |offsets, cookies| UprobeMultiSpec { path: Path::new("/x"), offsets, cookies, pid: 1 };
        let err = MultiLink::attach(file.as_fd(), MultiKind::Session, &spec(&[], &[])).unwrap_err();
        assert!(matches!(err, MultiError::Offsets(0)), "{err}");
        let err = MultiLink::attach(file.as_fd(), MultiKind::Entry, &spec(&[1, 2], &[1])).unwrap_err();
        assert!(matches!(err, MultiError::Cookies { offsets: 2, cookies: 1 }), "{err}");
    }

    #[test]
    fn a_verifier_log_is_cut_to_its_end() {
        let log: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let tail = log_tail(&log.join("\n"));
        assert!(
            tail.contains("line 99") && tail.contains("line 80") && !tail.contains("line 79\n"),
            "{tail}"
        );
        assert_eq!(log_tail(""), "");
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A real session link on this test binary's own code, for this process, read back
    /// from the kernel; and the refusal of a program loaded without the attach type.
    /// Needs root and a kernel with uprobe sessions: ignored by `cargo test`, run by
    /// `cargo xtask test` (which fails without them).
    #[test]
    #[ignore = "needs root and uprobe sessions: cargo xtask test runs it"]
    fn a_session_link_on_ourselves() {
        assert!(root(), "needs root");
        let vmlinux = crate::probe::btf::vmlinux().unwrap_or_default();
        let features = features::probe(&Kfuncs::resolve(&vmlinux));
        assert!(features.session.yes(), "no uprobe sessions here ({features:?})");
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let elf = ElfFile::open(&exe).unwrap();
        let offset = elf.functions(&["main"]).unwrap()["main"].offset;
        let load = |attach_type| {
            let insns = [kfunc::insn(0xb7, 0, 0, 0), kfunc::insn(0x95, 0, 0, 0)];
            let p = sys::ProgLoad {
                name: "lt_test",
                prog_type: sys::uapi::BPF_PROG_TYPE_KPROBE,
                expected_attach_type: attach_type,
                insns: &insns,
                license: c"GPL",
                btf: None,
            };
            sys::prog_load(&p).unwrap()
        };
        let pid = std::process::id();
        let spec = UprobeMultiSpec { path: &exe, offsets: &[offset], cookies: &[7], pid };
        let prog = load(MultiKind::Session.attach_type());
        let link = MultiLink::attach(prog.as_fd(), MultiKind::Session, &spec).unwrap();
        let info = link.info().unwrap();
        assert_eq!(info.link_type, sys::uapi::BPF_LINK_TYPE_UPROBE_MULTI);
        assert_eq!(
            (info.offsets.as_slice(), info.cookies.as_slice(), info.pid),
            (&[offset][..], &[7][..], pid)
        );
        assert_eq!(Path::new(&info.path), exe);
        assert_eq!(link.count(), 1);
        let id = info.id;
        drop(link);
        assert!(
            aya::programs::loaded_links().filter_map(Result::ok).all(|l| l.id() != id),
            "link {id} remains"
        );
        // A program loaded the way aya loads uprobes cannot serve a session link.
        let plain = load(0);
        let err = MultiLink::attach(plain.as_fd(), MultiKind::Session, &spec).unwrap_err();
        assert!(
            matches!(&err, MultiError::Syscall { cause, .. } if cause.raw_os_error() == Some(libc::EINVAL)),
            "{err}"
        );
    }
}
