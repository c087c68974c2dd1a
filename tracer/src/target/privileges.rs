//! Checking, before anything else, that leaktracer may load eBPF programs and read the
//! target's memory maps, so a missing privilege is one clear sentence rather than an
//! error from deep inside the loader.

use std::fs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "leaktracer needs root privileges to load its eBPF probes and read the target's memory \
     maps (missing {missing}); run it with sudo"
)]
pub struct MissingPrivileges {
    pub missing: String,
}

/// Succeeds when the effective capabilities cover loading uprobes and tracepoints and
/// reading another process's `/proc` entries.
pub fn check() -> Result<(), MissingPrivileges> {
    let effective = effective_capabilities().unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        missing.push("CAP_BPF and CAP_PERFMON");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if missing.is_empty() { Ok(()) } else { Err(MissingPrivileges { missing: missing.join(", ") }) }
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}
