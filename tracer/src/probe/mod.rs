//! The kernel side, seen from userspace: loading the eBPF object, attaching its programs
//! to the target, and reading what the kernel counted.
//!
//! Dropping [`Probes`] detaches every link and unloads every program; nothing of ours
//! stays in the kernel after that.

pub mod allocator;
mod elf;
mod placement;

use std::{num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use tracer_ebpf::{Stack, UnwindRule, counter, global, map, unwind_mode};

use crate::cli::Unwind;

pub use self::allocator::ProbePoint;

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktracer-probes"));

/// Syscall and scheduler tracepoints: (program, category, name).
const TRACEPOINTS: [(&str, &str, &str); 10] = [
    ("lt_mmap_enter", "syscalls", "sys_enter_mmap"),
    ("lt_mmap_exit", "syscalls", "sys_exit_mmap"),
    ("lt_munmap_enter", "syscalls", "sys_enter_munmap"),
    ("lt_munmap_exit", "syscalls", "sys_exit_munmap"),
    ("lt_mremap_enter", "syscalls", "sys_enter_mremap"),
    ("lt_mremap_exit", "syscalls", "sys_exit_mremap"),
    ("lt_brk_enter", "syscalls", "sys_enter_brk"),
    ("lt_brk_exit", "syscalls", "sys_exit_brk"),
    ("lt_exec", "sched", "sched_process_exec"),
    ("lt_thread_exit", "sched", "sched_process_exit"),
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this leaktracer binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild it")]
    NoObject,
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("the kernel rejected eBPF program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
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

/// Failures the kernel side counted, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub lost_events: u64,
    pub stack_errors: u64,
    pub dropped: u64,
    pub nested_calls: u64,
    pub truncated_stacks: u64,
    pub stack_samples: u64,
}

/// Loaded programs and their links. The maps userspace reads are taken out with
/// [`Probes::take_events`] and [`Probes::take_stacks`].
pub struct Probes {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    uprobes: usize,
    /// Links by program, to detach them together (see `detach`).
    uprobe_links: Vec<(&'static str, aya::programs::uprobe::UProbeLinkId)>,
    tracepoint_links: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
}

impl Probes {
    /// Loads every program, filtering on `tgid`, with a ring buffer of `ring_bytes`.
    pub fn load(
        tgid: u32,
        ring_bytes: u32,
        unwind: Unwind,
        sample_bytes: u64,
        floor: bool,
    ) -> Result<Self, ProbeError> {
        if OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        ensure_tracefs()?;
        let mode = match unwind {
            Unwind::EhFrame => unwind_mode::EH_FRAME,
            Unwind::FramePointers => unwind_mode::FRAME_POINTERS,
            Unwind::None => unwind_mode::NONE,
            Unwind::Copy => unwind_mode::COPY,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(global::TARGET_TGID, &tgid, true)
            .override_global(global::WAKEUP_BYTES, &u64::from(ring_bytes / 8), true)
            .override_global(global::UNWIND_MODE, &mode, true)
            .override_global(global::SAMPLE_BYTES, &sample_bytes, true)
            .override_global(global::BENCH_FLOOR, &u32::from(floor), true)
            .map_max_entries(map::EVENTS, ring_bytes)
            .load(OBJECT)?;
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            let program = ebpf.program_mut(&name).expect("listed above");
            let name: &'static str = program_name(&name);
            let loaded = match program {
                aya::programs::Program::UProbe(p) => p.load(),
                aya::programs::Program::TracePoint(p) => p.load(),
                _ => Ok(()),
            };
            loaded.map_err(|source| ProbeError::Program { name, source })?;
        }
        let counters = ebpf.take_map(map::COUNTERS).ok_or(ProbeError::MissingMap(map::COUNTERS))?;
        let counters = PerCpuArray::try_from(counters)
            .map_err(|source| ProbeError::Map { name: map::COUNTERS, source })?;
        Ok(Self { ebpf, counters, uprobes: 0, uprobe_links: Vec::new(), tracepoint_links: Vec::new() })
    }

    /// Attaches the syscall and scheduler tracepoints.
    pub fn attach_tracepoints(&mut self) -> Result<(), ProbeError> {
        for (program, category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = self
                .ebpf
                .program_mut(program)
                .and_then(|p| p.try_into().ok())
                .ok_or(ProbeError::MissingProgram(program))?;
            let link = tp.attach(category, name).map_err(|source| ProbeError::Attach {
                what: format!("tracepoint {category}:{name}"),
                source,
            })?;
            self.tracepoint_links.push((program, link));
        }
        Ok(())
    }

    /// Attaches uprobes on the allocator functions, for `pid` only. Return probes go
    /// first: an entry seen without its return probe in place would leave a call that
    /// never completes.
    pub fn attach_allocators(&mut self, pid: u32, points: &[ProbePoint]) -> Result<(), ProbeError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("target pid is not 0"));
        let returning = |p: &&ProbePoint| p.func != tracer_ebpf::func::FREE;
        for point in points.iter().filter(returning) {
            self.attach_one("lt_alloc_return", point, scope)?;
        }
        for point in points {
            let program = if returning(&point) { "lt_alloc_enter" } else { "lt_free_enter" };
            self.attach_one(program, point, scope)?;
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        program: &'static str,
        point: &ProbePoint,
        scope: UProbeScope,
    ) -> Result<(), ProbeError> {
        let probe: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(ProbeError::MissingProgram(program))?;
        let at = UProbeAttachPoint {
            location: (point.offset + point.skip).into(),
            cookie: Some(u64::from(point.func)),
        };
        let link = probe.attach(at, &point.object, scope).map_err(|source| ProbeError::Attach {
            what: format!("{} in {}", point.name, point.display),
            source,
        })?;
        self.uprobe_links.push((program, link));
        let skip = if point.skip == 0 { String::new() } else { format!("+{}", point.skip) };
        log::info!(
            "{program} on {}{skip} (file offset {:#x}) in {}",
            point.name,
            point.offset + point.skip,
            point.display
        );
        self.uprobes += 1;
        Ok(())
    }

    /// Detaches everything, all links at once: each detach waits for the kernel to be
    /// done with the probe (about a tenth of a second each for uprobes here), and those
    /// waits overlap. Then the programs go. Nothing of ours stays in the kernel.
    pub fn detach(mut self) {
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        for (program, id) in std::mem::take(&mut self.uprobe_links) {
            if let Some(p) = self.ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok())
                && let Ok(link) = p.take_link(id)
            {
                links.push(Box::new(link));
            }
        }
        for (program, id) in std::mem::take(&mut self.tracepoint_links) {
            if let Some(p) = self.ebpf.program_mut(program).and_then(|p| <&mut TracePoint>::try_from(p).ok())
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
        let m = self.ebpf.take_map(map::EVENTS).ok_or(ProbeError::MissingMap(map::EVENTS))?;
        RingBuf::try_from(m).map_err(|source| ProbeError::Map { name: map::EVENTS, source })
    }

    pub fn take_stacks(&mut self) -> Result<BpfHashMap<MapData, u64, Stack>, ProbeError> {
        let m = self.ebpf.take_map(map::STACKS).ok_or(ProbeError::MissingMap(map::STACKS))?;
        BpfHashMap::try_from(m).map_err(|source| ProbeError::Map { name: map::STACKS, source })
    }

    pub fn take_unwind_rules(&mut self) -> Result<BpfHashMap<MapData, u64, UnwindRule>, ProbeError> {
        let name = map::UNWIND_RULES;
        let m = self.ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
        BpfHashMap::try_from(m).map_err(|source| ProbeError::Map { name, source })
    }

    pub fn take_rule_generation(&mut self) -> Result<aya::maps::Array<MapData, u32>, ProbeError> {
        let name = map::RULE_GENERATION;
        let m = self.ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
        aya::maps::Array::try_from(m).map_err(|source| ProbeError::Map { name, source })
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 {
            self.counters.get(&index, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
        };
        KernelCounters {
            lost_events: sum(counter::LOST_EVENTS),
            stack_errors: sum(counter::STACK_ERRORS),
            dropped: sum(counter::DROPPED),
            nested_calls: sum(counter::NESTED_CALLS),
            truncated_stacks: sum(counter::TRUNCATED_STACKS),
            stack_samples: sum(counter::STACK_SAMPLES),
        }
    }
}

/// Program names come from the object; map them to the static names used in messages.
fn program_name(name: &str) -> &'static str {
    TRACEPOINTS
        .iter()
        .map(|(p, _, _)| *p)
        .chain(["lt_alloc_enter", "lt_alloc_return", "lt_free_enter"])
        .find(|p| *p == name)
        .unwrap_or("(unknown)")
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
