//! What the running kernel supports, found by asking it: each probe loads a two- or
//! three-instruction program and tries a link on the path `/`, which is not a regular
//! file. A kernel that knows the link type gets as far as checking the path and says
//! EBADF; nothing is attached and no real file is touched (libbpf probes the same way).

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
};

use tracer_ebpf::kfunc::SESSION_IS_RETURN;

use super::{
    kfunc::{Kfuncs, insn},
    sys::{self, LinkCreate, ProgLoad, uapi},
};

/// Whether the kernel has something, and if not, what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Yes,
    No(String),
}

impl Support {
    pub fn yes(&self) -> bool {
        *self == Support::Yes
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// uprobe_multi links (Linux 6.6).
    pub uprobe_multi: Support,
    /// uprobe_multi links filter by process. The first kernels with them filtered by
    /// thread, which would miss every thread but the main one (fixed in 2024, 6.10 and
    /// stable kernels).
    pub pid_filter: Support,
    /// uprobe session links (Linux 6.13).
    pub session: Support,
    /// `bpf_session_is_return()` callable from a session program.
    pub session_kfuncs: Support,
}

impl Features {
    /// A kernel without any of it (what `--links classic` pretends).
    pub fn none(why: &str) -> Self {
        let no = Support::No(why.to_string());
        Self { uprobe_multi: no.clone(), pid_filter: no.clone(), session: no.clone(), session_kfuncs: no }
    }
}

const MOV64_R0_IMM: u8 = 0xb7;
const EXIT: u8 = 0x95;

/// `[prefix..]; r0 = 0; exit` as a kprobe-type program for `attach_type`.
fn trivial(attach_type: u32, prefix: &[aya_obj::generated::bpf_insn]) -> Result<OwnedFd, String> {
    let mut insns = prefix.to_vec();
    insns.extend([insn(MOV64_R0_IMM, 0, 0, 0), insn(EXIT, 0, 0, 0)]);
    sys::prog_load(&ProgLoad {
        name: "lt_probe",
        prog_type: uapi::BPF_PROG_TYPE_KPROBE,
        expected_attach_type: attach_type,
        insns: &insns,
        license: c"GPL",
        btf: None,
    })
    .map_err(|f| {
        format!(
            "BPF_PROG_LOAD: {}{}",
            f.errno,
            f.log.lines().last().map(|l| format!(" ({l})")).unwrap_or_default()
        )
    })
}

/// A link on `/` for `pid`: the kernel's answer.
fn link_on_root(prog: BorrowedFd<'_>, attach_type: u32, pid: u32) -> io::Result<OwnedFd> {
    sys::link_create(&LinkCreate {
        prog,
        attach_type,
        flags: 0,
        path: c"/",
        offsets: &[0],
        cookies: &[],
        pid,
    })
}

/// Loads a program for `attach_type` and tries a link with it: supported when the
/// kernel only objects to the path.
fn link_type(attach_type: u32) -> (Support, Option<OwnedFd>) {
    let prog = match trivial(attach_type, &[]) {
        Ok(prog) => prog,
        Err(e) => return (Support::No(e), None),
    };
    let support = match link_on_root(prog.as_fd(), attach_type, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Support::Yes,
        Err(e) => Support::No(format!("BPF_LINK_CREATE: {e}")),
        // Never seen; whatever it attached goes with the descriptor, now.
        Ok(_) => Support::No("BPF_LINK_CREATE accepted the path /".into()),
    };
    (support, Some(prog))
}

/// Probes the kernel; `kfuncs` are the kfuncs its BTF has. Needs what loading programs
/// needs anyway (root, or CAP_BPF and CAP_PERFMON). Leaves nothing behind.
pub fn probe(kfuncs: &Kfuncs) -> Features {
    let (uprobe_multi, prog) = link_type(uapi::BPF_TRACE_UPROBE_MULTI);
    let pid_filter = match prog {
        // pid -1: rejected up front (EINVAL) by kernels that filter by process; the
        // others look the pid up only after the path, and object to the path.
        Some(prog) => match link_on_root(prog.as_fd(), uapi::BPF_TRACE_UPROBE_MULTI, u32::MAX) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Support::Yes,
            Err(e) => Support::No(format!("filters by thread (pid -1 gave {e})")),
            Ok(_) => Support::No("pid -1 accepted".into()),
        },
        None => uprobe_multi.clone(),
    };
    let (session, _) = link_type(uapi::BPF_TRACE_UPROBE_SESSION);
    let session_kfuncs = match kfuncs.id(SESSION_IS_RETURN) {
        _ if !session.yes() => session.clone(),
        None => Support::No("bpf_session_is_return is not in the kernel's BTF".into()),
        Some(id) => {
            let id = i32::try_from(id).unwrap_or(-1);
            let call = insn(uapi::BPF_CALL, 0, uapi::BPF_PSEUDO_KFUNC_CALL, id);
            match trivial(uapi::BPF_TRACE_UPROBE_SESSION, &[call]) {
                Ok(_) => Support::Yes,
                Err(e) => Support::No(e),
            }
        }
    };
    Features { uprobe_multi, pid_filter, session, session_kfuncs }
}
