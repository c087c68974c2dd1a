//! The kernel side, seen from userspace: loading the eBPF object, attaching its programs
//! to the target (`points`: allocator functions; `golang`: the Go runtime;
//! `tracepoints`: syscalls and the process's life), and reading what the kernel counted
//! (`kernel`). Uprobes go through aya's perf links or, where the kernel has them,
//! through multi-uprobe and session links (`links` chooses, `multi` does the bpf(2)).
//!
//! Dropping [`Probes`] detaches every link and unloads every program; nothing of ours
//! stays in the kernel after that.

mod btf;
pub mod golang;
mod kernel;
pub mod links;
pub mod multi;
pub mod placement;
pub mod points;
pub mod tracepoints;

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{Program, TracePoint, UProbe, uprobe::UProbeAttachPoint, uprobe::UProbeScope},
};
use tracer_ebpf::{global, golang::GoOffsets, map, unwind_mode};

use self::multi::{Features, Kfuncs, MultiError, MultiKind, MultiLink, ObjectPrograms, UprobeMultiSpec};
pub use self::{
    kernel::{KernelCounters, KernelStacks},
    links::LinkPath,
    points::ProbePoint,
    tracepoints::Tracepoint,
};
use crate::{
    config::{Links, ProbeOptions, UnwindMode},
    errors::chain,
};

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktracer-probes"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this leaktracer binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild it")]
    NoObject,
    #[error("cannot load the eBPF object: {0}")]
    Load(String),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("the kernel rejected eBPF program {name}: {cause}")]
    Program { name: String, cause: String },
    #[error("cannot attach to {what}: {cause}")]
    Attach { what: String, cause: String },
    #[error("cannot attach to {what}: {}", chain(.cause))]
    Multi { what: String, cause: MultiError },
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("cannot open eBPF map {name}: {cause}")]
    Map { name: &'static str, cause: String },
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
    /// How uprobes are attached (see `links`).
    path: LinkPath,
    /// The object's programs for multi and session links (`None` on the classic path).
    objects: Option<ObjectPrograms>,
    kfuncs: Kfuncs,
    /// Programs loaded for multi and session links, by name and link kind.
    multi_programs: HashMap<(&'static str, MultiKind), OwnedFd>,
    multi_links: Vec<MultiLink>,
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
            .override_global(global::SYSCALLS, &tracepoints::syscall_families(p), true)
            .map_max_entries(map::EVENTS, p.ring_bytes)
            .map_max_entries(map::SAMPLED, sampled)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(chain(&e)))?;
        let kfuncs = Kfuncs::resolve(&vmlinux);
        // Before any map is taken out of `ebpf`: the object's programs are relocated
        // against all of them.
        let (path, objects) = choose_path(p.links, &ebpf, &kfuncs);
        let counters = take(&mut ebpf, map::COUNTERS)?;
        let counters = PerCpuArray::try_from(counters)
            .map_err(|e| ProbeError::Map { name: map::COUNTERS, cause: chain(&e) })?;
        Ok(Self {
            ebpf,
            counters,
            loaded: HashSet::new(),
            uprobes: 0,
            uprobe_links: Vec::new(),
            tracepoint_links: Vec::new(),
            path,
            objects,
            kfuncs,
            multi_programs: HashMap::new(),
            multi_links: Vec::new(),
        })
    }

    /// How uprobes are attached.
    pub fn link_path(&self) -> LinkPath {
        self.path
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
            loaded.map_err(|e| ProbeError::Program { name: name.to_string(), cause: chain(&e) })?;
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
            let link = tp.attach(t.category, t.name).map_err(|e| ProbeError::Attach {
                what: format!("tracepoint {}:{}", t.category, t.name),
                cause: chain(&e),
            })?;
            self.tracepoint_links.push((t.program.to_string(), link));
        }
        Ok(())
    }

    /// Attaches uprobes for `pid` only, in the order given (return probes must come
    /// before their entry probes: an entry seen without its return probe in place would
    /// leave a call that never completes). Through multi links unless on the classic
    /// path.
    pub fn attach_uprobes(&mut self, pid: u32, uprobes: &[Uprobe]) -> Result<(), ProbeError> {
        if self.path == LinkPath::Classic {
            return self.attach_classic(pid, uprobes);
        }
        let groups = links::groups(uprobes);
        let mut kinds = Vec::with_capacity(groups.len());
        // Every program first, so that a kernel refusing one leaves nothing half done.
        for g in &groups {
            match self.multi_program(g.program, None) {
                Ok(kind) => kinds.push(kind),
                Err(e) if refused(&e) => {
                    log::warn!("{e}\nleaktracer: falling back to one perf link per uprobe");
                    self.path = LinkPath::Classic;
                    return self.attach_classic(pid, uprobes);
                }
                Err(e) => return Err(e),
            }
        }
        for (g, kind) in groups.iter().zip(kinds) {
            let spec = UprobeMultiSpec { path: g.object, offsets: &g.offsets, cookies: &g.cookies, pid };
            self.attach_multi(g.program, kind, &spec, &g.what.join(", "))?;
        }
        Ok(())
    }

    /// Attaches the allocator's probes at `points` for `pid`: on the session path one
    /// session link per object, else as uprobes.
    pub fn attach_allocator(&mut self, pid: u32, points: &[ProbePoint]) -> Result<(), ProbeError> {
        if self.path == LinkPath::Session && !points.is_empty() {
            match self.multi_program(SESSION_PROGRAM, Some(MultiKind::Session)) {
                Ok(_) => return self.attach_sessions(pid, points),
                Err(e) if refused(&e) => {
                    log::warn!("{e}\nleaktracer: falling back to uprobe_multi links");
                    self.path = LinkPath::Multi;
                }
                Err(e) => return Err(e),
            }
        }
        self.attach_uprobes(pid, &points::uprobes(points))
    }

    /// One session link of the (loaded) session program per object of `points`.
    fn attach_sessions(&mut self, pid: u32, points: &[ProbePoint]) -> Result<(), ProbeError> {
        for (object, members) in links::session_groups(points) {
            let offsets: Vec<u64> = members.iter().map(|p| p.probe_offset()).collect();
            let cookies: Vec<u64> = members.iter().map(|p| u64::from(p.func)).collect();
            let sites: Vec<String> = members.iter().map(|p| p.site()).collect();
            let what = format!("{} in {}", sites.join(", "), members[0].display);
            let spec = UprobeMultiSpec { path: object, offsets: &offsets, cookies: &cookies, pid };
            self.attach_multi(SESSION_PROGRAM, MultiKind::Session, &spec, &what)?;
        }
        Ok(())
    }

    /// The program `name` loaded for links of `kind` (by default, what its section
    /// says: entry or return), loaded on first use. Returns the kind.
    fn multi_program(
        &mut self,
        name: &'static str,
        kind: Option<MultiKind>,
    ) -> Result<MultiKind, ProbeError> {
        let objects = self.objects.as_ref().expect("multi links come with the object's programs");
        let kind = match kind.or_else(|| objects.probe_kind(name)) {
            Some(kind) => kind,
            None => return Err(ProbeError::MissingProgram(name.to_string())),
        };
        if !self.multi_programs.contains_key(&(name, kind)) {
            let t = std::time::Instant::now();
            let fd = objects
                .load(name, kind, &self.kfuncs)
                .map_err(|cause| ProbeError::Multi { what: format!("{} links", kind.name()), cause })?;
            log::debug!("{name} loaded for {} links in {:?}", kind.name(), t.elapsed());
            self.multi_programs.insert((name, kind), fd);
        }
        Ok(kind)
    }

    /// One multi or session link of `program` (loaded by `multi_program`).
    fn attach_multi(
        &mut self,
        program: &'static str,
        kind: MultiKind,
        spec: &UprobeMultiSpec<'_>,
        what: &str,
    ) -> Result<(), ProbeError> {
        let prog = self.multi_programs.get(&(program, kind)).expect("loaded by multi_program");
        let link = MultiLink::attach(prog.as_fd(), kind, spec)
            .map_err(|cause| ProbeError::Multi { what: what.to_string(), cause })?;
        log::info!("{program}: {} link, {} uprobes: {what}", kind.name(), link.count());
        self.uprobes += link.count();
        self.multi_links.push(link);
        Ok(())
    }

    /// One aya perf link per uprobe.
    fn attach_classic(&mut self, pid: u32, uprobes: &[Uprobe]) -> Result<(), ProbeError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("target pid is not 0"));
        for u in uprobes {
            let probe: &mut UProbe = self
                .program(u.program)?
                .try_into()
                .map_err(|_| ProbeError::MissingProgram(u.program.to_string()))?;
            let at = UProbeAttachPoint { location: u.offset.into(), cookie: Some(u.cookie) };
            let link = probe
                .attach(at, &u.object, scope)
                .map_err(|e| ProbeError::Attach { what: u.what.clone(), cause: chain(&e) })?;
            log::info!("{} on {} (file offset {:#x})", u.program, u.what, u.offset);
            self.uprobe_links.push((u.program.to_string(), link));
            self.uprobes += 1;
        }
        Ok(())
    }

    /// Detaches everything, all links at once: each perf link's detach waits for the
    /// kernel to be done with its uprobe, and those waits overlap (a little: the kernel
    /// serializes most of them); a multi or session link waits once for all its uprobes.
    /// Then the programs go.
    pub fn detach(mut self) {
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        // One wait each, for all its uprobes.
        for link in std::mem::take(&mut self.multi_links) {
            links.push(Box::new(link));
        }
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
            .map_err(|e| ProbeError::Map { name: map::EVENTS, cause: chain(&e) })
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
        let err = |name| move |e: MapError| ProbeError::Map { name, cause: chain(&e) };
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

/// Did the kernel refuse one of our programs for multi links (a verifier or kfunc
/// difference)? Then the next path may still work.
fn refused(e: &ProbeError) -> bool {
    matches!(e, ProbeError::Multi { cause: MultiError::Load { .. } | MultiError::Kfunc { .. }, .. })
}

/// The program on the allocator's session links (see `links`).
const SESSION_PROGRAM: &str = "lt_alloc_session";

/// How uprobes are attached this session, as `links` asks and the kernel allows; with
/// the object's programs ready for multi links when it is not the classic path.
fn choose_path(links: Links, ebpf: &Ebpf, kfuncs: &Kfuncs) -> (LinkPath, Option<ObjectPrograms>) {
    let t = std::time::Instant::now();
    let features =
        if links == Links::Classic { Features::none("not probed") } else { multi::features::probe(kfuncs) };
    log::debug!("kernel features probed in {:?}: {features:?}", t.elapsed());
    let (path, why) = LinkPath::choose(links, &features);
    if path == LinkPath::Classic {
        log::info!("uprobe links: {} ({why})", path.describe());
        return (path, None);
    }
    match ObjectPrograms::new(ebpf, OBJECT) {
        Ok(objects) => {
            log::info!("uprobe links: {} ({why})", path.describe());
            (path, Some(objects))
        }
        Err(e) => {
            log::warn!("{e}; falling back to one perf link per uprobe");
            (LinkPath::Classic, None)
        }
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Kernel memory this process holds in eBPF maps and programs (the `memlock` the kernel
/// charges for each): what a session costs the machine. Each map or program once, however
/// many descriptors refer to it (`multi` keeps copies of the map descriptors).
pub fn kernel_memory_bytes() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else { return 0 };
    let mut seen = HashSet::new();
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            let field =
                |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
            let memlock = field("memlock:")?;
            let id = field("map_id:").map(|id| (0, id)).or_else(|| field("prog_id:").map(|id| (1, id)))?;
            seen.insert(id).then_some(memlock)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Kinds, Mode, Placement};

    fn load(links: Links) -> Probes {
        let probes = ProbeOptions {
            ring_bytes: 1 << 20,
            unwind: UnwindMode::EhFrame,
            sample_bytes: 0,
            placement: Placement::Fast,
            floor: false,
            kinds: Kinds::all(),
            mode: Mode::Full,
            links,
            max_live: 1000,
        };
        Probes::load(&LoadOptions { tgid: std::process::id(), probes, go: None }).expect("the object loads")
    }

    /// Every uprobe program passes the verifier for the links of the path this kernel
    /// allows (the session program as a session program, the others for uprobe_multi
    /// links), sharing aya's maps. Needs root and multi links: ignored by `cargo test`,
    /// run by `cargo xtask test` (which fails without them).
    #[test]
    #[ignore = "needs root and multi-uprobe links: cargo xtask test runs it"]
    fn the_uprobe_programs_load_for_multi_links() {
        // SAFETY: geteuid has no preconditions.
        assert!(unsafe { libc::geteuid() } == 0 && !OBJECT.is_empty(), "needs root and the eBPF object");
        let mut probes = load(Links::Auto);
        assert_ne!(probes.link_path(), LinkPath::Classic, "no multi links on this kernel");
        let programs = [
            ("lt_alloc_enter", MultiKind::Entry),
            ("lt_alloc_return", MultiKind::Return),
            ("lt_free_enter", MultiKind::Entry),
            ("lt_go_create", MultiKind::Entry),
            ("lt_go_park", MultiKind::Entry),
            ("lt_go_exit", MultiKind::Entry),
            ("lt_defer_push", MultiKind::Entry),
            ("lt_defer_pop", MultiKind::Entry),
            ("lt_goheap_alloc", MultiKind::Entry),
            ("lt_goheap_free", MultiKind::Entry),
            ("lt_gc_start", MultiKind::Entry),
            ("lt_gc_sweep", MultiKind::Entry),
        ];
        for (name, kind) in programs {
            assert_eq!(probes.multi_program(name, None).unwrap_or_else(|e| panic!("{e}")), kind, "{name}");
        }
        if probes.link_path() == LinkPath::Session {
            probes.multi_program(SESSION_PROGRAM, Some(MultiKind::Session)).unwrap_or_else(|e| panic!("{e}"));
        }
        // Only the allocator's session program may call the session kfuncs.
        let err = probes.multi_program(SESSION_PROGRAM, Some(MultiKind::Entry)).unwrap_err();
        assert!(refused(&err), "{err}");
        assert_eq!(load(Links::Multi).link_path(), LinkPath::Multi);
        assert_eq!(load(Links::Classic).link_path(), LinkPath::Classic);
    }
}
