//! The kernel side, seen from userspace: loading the eBPF object, attaching its programs
//! to the target (`points`: allocator functions; `golang`: the Go runtime;
//! `tracepoints`: syscalls and the process's life), and reading what the kernel counted
//! (`kernel`).
//!
//! Dropping [`Probes`] detaches every link and unloads every program; nothing of ours
//! stays in the kernel after that.

mod btf;
pub mod golang;
mod kernel;
pub mod multi;
pub mod placement;
pub mod points;
pub mod tracepoints;

use std::{collections::HashSet, num::NonZeroU32, path::Path, path::PathBuf};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{Program, ProgramError, TracePoint, UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use tracer_ebpf::{global, golang::GoOffsets, map, unwind_mode};

pub use self::{
    kernel::{KernelCounters, KernelStacks},
    points::ProbePoint,
    tracepoints::Tracepoint,
};
use crate::config::{ProbeOptions, UnwindMode};

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktracer-probes"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this leaktracer binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild it")]
    NoObject,
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("the kernel rejected eBPF program {name}: {source}")]
    Program { name: String, source: ProgramError },
    #[error("cannot attach to {what}: {source}")]
    Attach { what: String, source: ProgramError },
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("cannot open eBPF map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and could not be mounted ({0}); \
         mount it with: mount -t tracefs tracefs /sys/kernel/tracing"
    )]
    NoTracefs(std::io::Error),
}

/// What the programs are loaded with.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// The traced process.
    pub tgid: u32,
    pub probes: ProbeOptions,
    /// The target's Go runtime layout, when it is a Go program.
    pub go: Option<GoOffsets>,
}

/// A uprobe to attach: a program at a file offset of an object, with a cookie.
#[derive(Debug, Clone)]
pub struct Uprobe {
    pub program: &'static str,
    /// Path to attach through (see `points::Candidate::open_path`).
    pub object: PathBuf,
    /// What to call it in messages.
    pub what: String,
    pub offset: u64,
    pub cookie: u64,
}

/// Loaded programs and their links.
pub struct Probes {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    loaded: HashSet<String>,
    uprobes: usize,
    /// Links by program, to detach them together (see `detach`).
    uprobe_links: Vec<(String, aya::programs::uprobe::UProbeLinkId)>,
    tracepoint_links: Vec<(String, aya::programs::trace_point::TracePointLinkId)>,
}

impl Probes {
    /// Loads the object with its globals and maps set for this session. Programs are
    /// loaded (verified) only when first attached.
    pub fn load(options: &LoadOptions) -> Result<Self, ProbeError> {
        if OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        ensure_tracefs()?;
        let p = &options.probes;
        let mode = match p.unwind {
            UnwindMode::EhFrame => unwind_mode::EH_FRAME,
            UnwindMode::FramePointers => unwind_mode::FRAME_POINTERS,
            UnwindMode::None => unwind_mode::NONE,
            UnwindMode::Copy => unwind_mode::COPY,
        };
        // The sampled-block set exists only when sampling (one entry otherwise).
        let sampled = if p.sample_bytes == 0 { 1 } else { p.max_live.max(1) };
        let vmlinux = btf::vmlinux().unwrap_or_default();
        let exit_code_offset = btf::task_exit_code_offset(&vmlinux).unwrap_or(0);
        let go = options.go.unwrap_or_default();
        let mut ebpf = EbpfLoader::new()
            .override_global(global::TARGET_TGID, &options.tgid, true)
            .override_global(global::WAKEUP_BYTES, &u64::from(p.ring_bytes / 8), true)
            .override_global(global::UNWIND_MODE, &mode, true)
            .override_global(global::SAMPLE_BYTES, &p.sample_bytes, true)
            .override_global(global::BENCH_FLOOR, &u32::from(p.floor), true)
            .override_global(global::TASK_EXIT_CODE_OFFSET, &exit_code_offset, true)
            .override_global(global::GO_OFFSETS, &go, true)
            .map_max_entries(map::EVENTS, p.ring_bytes)
            .map_max_entries(map::SAMPLED, sampled)
            .load(OBJECT)?;
        let counters = take(&mut ebpf, map::COUNTERS)?;
        let counters = PerCpuArray::try_from(counters)
            .map_err(|source| ProbeError::Map { name: map::COUNTERS, source })?;
        Ok(Self {
            ebpf,
            counters,
            loaded: HashSet::new(),
            uprobes: 0,
            uprobe_links: Vec::new(),
            tracepoint_links: Vec::new(),
        })
    }

    /// The program `name`, loaded into the kernel on first use.
    fn program(&mut self, name: &str) -> Result<&mut Program, ProbeError> {
        let program =
            self.ebpf.program_mut(name).ok_or_else(|| ProbeError::MissingProgram(name.to_string()))?;
        if self.loaded.insert(name.to_string()) {
            let loaded = match program {
                Program::UProbe(p) => p.load(),
                Program::TracePoint(p) => p.load(),
                _ => Ok(()),
            };
            loaded.map_err(|source| ProbeError::Program { name: name.to_string(), source })?;
        }
        Ok(program)
    }

    /// Attaches programs to tracepoints.
    pub fn attach_tracepoints(&mut self, tracepoints: &[Tracepoint]) -> Result<(), ProbeError> {
        for t in tracepoints {
            let tp: &mut TracePoint = self
                .program(t.program)?
                .try_into()
                .map_err(|_| ProbeError::MissingProgram(t.program.to_string()))?;
            let link = tp.attach(t.category, t.name).map_err(|source| ProbeError::Attach {
                what: format!("tracepoint {}:{}", t.category, t.name),
                source,
            })?;
            self.tracepoint_links.push((t.program.to_string(), link));
        }
        Ok(())
    }

    /// Attaches uprobes for `pid` only, in the order given (return probes must come
    /// before their entry probes: an entry seen without its return probe in place would
    /// leave a call that never completes).
    pub fn attach_uprobes(&mut self, pid: u32, uprobes: &[Uprobe]) -> Result<(), ProbeError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("target pid is not 0"));
        for u in uprobes {
            let probe: &mut UProbe = self
                .program(u.program)?
                .try_into()
                .map_err(|_| ProbeError::MissingProgram(u.program.to_string()))?;
            let at = UProbeAttachPoint { location: u.offset.into(), cookie: Some(u.cookie) };
            let link = probe
                .attach(at, &u.object, scope)
                .map_err(|source| ProbeError::Attach { what: u.what.clone(), source })?;
            log::info!("{} on {} (file offset {:#x})", u.program, u.what, u.offset);
            self.uprobe_links.push((u.program.to_string(), link));
            self.uprobes += 1;
        }
        Ok(())
    }

    /// Detaches everything, all links at once: each uprobe detach waits for the kernel
    /// to be done with the probe, and those waits overlap. Then the programs go.
    pub fn detach(mut self) {
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        for (program, id) in std::mem::take(&mut self.uprobe_links) {
            if let Some(p) = self.ebpf.program_mut(&program).and_then(|p| <&mut UProbe>::try_from(p).ok())
                && let Ok(link) = p.take_link(id)
            {
                links.push(Box::new(link));
            }
        }
        for (program, id) in std::mem::take(&mut self.tracepoint_links) {
            if let Some(p) = self.ebpf.program_mut(&program).and_then(|p| <&mut TracePoint>::try_from(p).ok())
                && let Ok(link) = p.take_link(id)
            {
                links.push(Box::new(link));
            }
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        drop(self);
    }

    /// Number of uprobes attached.
    pub fn uprobes(&self) -> usize {
        self.uprobes
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        RingBuf::try_from(take(&mut self.ebpf, map::EVENTS)?)
            .map_err(|source| ProbeError::Map { name: map::EVENTS, source })
    }

    /// The stack and unwind-rule maps, for the stack table.
    pub fn take_stacks(&mut self) -> Result<KernelStacks, ProbeError> {
        let mut map_of = |name| take(&mut self.ebpf, name);
        let (stacks, rules, generation, ranges) = (
            map_of(map::STACKS)?,
            map_of(map::UNWIND_RULES)?,
            map_of(map::RULE_GENERATION)?,
            map_of(map::CODE_RANGES)?,
        );
        let err = |name| move |source| ProbeError::Map { name, source };
        Ok(KernelStacks {
            stacks: stacks.try_into().map_err(err(map::STACKS))?,
            rules: rules.try_into().map_err(err(map::UNWIND_RULES))?,
            generation: generation.try_into().map_err(err(map::RULE_GENERATION))?,
            ranges: ranges.try_into().map_err(err(map::CODE_RANGES))?,
        })
    }

    pub fn counters(&self) -> KernelCounters {
        kernel::read_counters(&self.counters)
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Kernel memory this process holds in eBPF maps and programs (the `memlock` the kernel
/// charges for each descriptor): what a session costs the machine.
pub fn kernel_memory_bytes() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else { return 0 };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("memlock:"))?.trim().parse::<u64>().ok())
        .sum()
}

/// aya finds tracepoint ids under tracefs; mount it when the machine has not.
fn ensure_tracefs() -> Result<(), ProbeError> {
    let tracefs = Path::new("/sys/kernel/tracing");
    if tracefs.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
        .map_err(ProbeError::NoTracefs)?;
    if status.success() {
        log::info!("mounted tracefs at /sys/kernel/tracing");
        Ok(())
    } else {
        Err(ProbeError::NoTracefs(std::io::Error::other(format!("mount exited with {status}"))))
    }
}
