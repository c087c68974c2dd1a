//! The Go runtime's probe points, by what is traced: goroutines (`runtime.newproc1`'s
//! returns, the exit, `gopark`), defers (`deferproc` and kin, the pop) and the Go heap
//! (`profilealloc`, `freeSpecial`, `gcStart`, `gcSweep`). All plain uprobes: never a
//! uretprobe on Go code.

use std::path::Path;

use tracer_ebpf::{
    golang::GoOffsets,
    unwind::{CodeRange, UnwindRule},
};

use super::Uprobe;
use crate::{
    config::{Kind, Kinds},
    stacks::golang::runtime::{GoRuntime, ProbeSite},
};

/// The uprobes for `kinds` on the Go executable at `object`.
pub fn uprobes(runtime: &GoRuntime, object: &Path, kinds: Kinds) -> Vec<Uprobe> {
    let f = &runtime.functions;
    let mut sites: Vec<(&'static str, ProbeSite)> = Vec::new();
    let goroutines = kinds.contains(Kind::Goroutine);
    if goroutines {
        sites.extend(f.newproc1_returns.iter().map(|s| ("lt_go_create", *s)));
        sites.extend(f.gopark.map(|s| ("lt_go_park", s)));
    }
    // Ending goroutines drop their defers too.
    if goroutines || kinds.contains(Kind::Defer) {
        sites.extend(f.exit.map(|s| ("lt_go_exit", s)));
    }
    if kinds.contains(Kind::Defer) {
        sites.extend(f.defer_push.iter().map(|s| ("lt_defer_push", *s)));
        sites.extend(f.defer_pop.map(|s| ("lt_defer_pop", s)));
    }
    if kinds.contains(Kind::Goheap) {
        sites.extend(f.profilealloc.map(|s| ("lt_goheap_alloc", s)));
        sites.extend(f.free_special.map(|s| ("lt_goheap_free", s)));
        sites.extend(f.gc_start.map(|s| ("lt_gc_start", s)));
        sites.extend(f.gc_sweep.map(|s| ("lt_gc_sweep", s)));
    }
    sites
        .into_iter()
        .map(|(program, site)| Uprobe {
            program,
            object: object.to_path_buf(),
            what: format!("{} in {}", site.name, object.display()),
            offset: site.file_offset,
            cookie: 0,
        })
        .collect()
}

/// What the Go probes read, where the target's runtime keeps it.
pub fn offsets(runtime: &GoRuntime) -> GoOffsets {
    let o = &runtime.layout.offsets;
    let u = |v: u64| u32::try_from(v).unwrap_or(0);
    GoOffsets {
        g_goid: u(o.g_goid),
        g_gopc: u(o.g_gopc),
        g_startpc: u(o.g_startpc),
        g_parent_goid: o.g_parent_goid.map_or(0, u),
        g_waiting: u(o.g_waiting),
        g_defer: u(o.g_defer),
        defer_heap: u(o.defer_heap),
        defer_pc: u(o.defer_pc),
        special_kind: u(o.special_kind),
        special_profile: u(runtime.layout.special_profile),
        pop_takes_g: u32::from(runtime.version.minor >= 23),
        defer_open: o.defer_open_defer.map_or(0, u),
        heap_marked_addr: 0,
    }
}

/// Go code keeps frame pointers: one rule for the whole text; goroutine stacks end at
/// `runtime.goexit` (listed first: the first match wins).
pub fn code_ranges(runtime: &GoRuntime, bias: u64) -> Vec<CodeRange> {
    let at = |(start, end): (u64, u64), rule| CodeRange { start: start + bias, end: end + bias, rule };
    let mut ranges: Vec<CodeRange> = runtime.goexit.map(|g| at(g, UnwindRule::END)).into_iter().collect();
    if runtime.text.0 < runtime.text.1 {
        ranges.push(at(runtime.text, UnwindRule::FRAME_POINTER));
    }
    ranges
}

/// A Go program to trace: its runtime, and the path to attach its probes through.
pub struct GoTarget {
    pub runtime: GoRuntime,
    pub object: std::path::PathBuf,
    /// The load bias of the running executable (`None` until a launched one has
    /// exec'd, when it is position-independent).
    pub bias: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("{exe} is a Go program leaktracer cannot read ({cause}); it knows Go 1.19 to 1.27")]
    Unreadable { exe: String, cause: crate::stacks::golang::Error },
}

/// The Go runtime of a running process's executable (mapped at `exe_map`), if it is Go.
pub fn inspect_running(
    pid: u32,
    exe: &Path,
    exe_map: &crate::target::maps::MapEntry,
) -> Result<Option<GoTarget>, GoError> {
    let file = crate::target::files::open_mapped(pid, exe_map.start, exe_map.end, exe);
    let Some(data) = file.ok().and_then(|mut f| crate::stacks::elf::ElfFile::read(&mut f).ok()) else {
        return Ok(None);
    };
    let unreadable = |cause| GoError::Unreadable { exe: exe.display().to_string(), cause };
    let Some(runtime) = GoRuntime::inspect(data.data()).map_err(unreadable)? else { return Ok(None) };
    let bias = runtime.bias(exe_map.start, exe_map.offset);
    let object =
        std::path::PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", exe_map.start, exe_map.end));
    Ok(Some(GoTarget { runtime, object, bias }))
}

/// The Go runtime of an executable about to be started, if it is Go.
pub fn inspect_launch(exe: &Path) -> Result<Option<GoTarget>, GoError> {
    let Ok(elf) = crate::stacks::elf::ElfFile::open(exe) else { return Ok(None) };
    let unreadable = |cause| GoError::Unreadable { exe: exe.display().to_string(), cause };
    let Some(runtime) = GoRuntime::inspect(elf.data()).map_err(unreadable)? else { return Ok(None) };
    let bias = (!runtime.pie).then_some(0);
    Ok(Some(GoTarget { runtime, object: exe.to_path_buf(), bias }))
}
