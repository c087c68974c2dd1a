//! Reports: built from the aggregator's live figures, the identities (symbolized,
//! grouped sites) and the verdicts, then written as text, NDJSON, folded stacks, SVG or
//! pprof (`outputs`). Building goes in steps: rank the groups, measure their ages, make
//! each site's entry, then the process-wide parts.

mod details;
mod folded;
pub mod model;
pub mod outputs;
mod pprof;
mod rank;
mod svg;
mod text;

use std::{collections::BTreeSet, time::SystemTime};

pub use self::model::*;
use self::rank::Rank;
use crate::{
    aggregate::{Ages, Aggregator, Coverage, LiveFigures, NO_GROUP, sites::SiteKind},
    identify::{Group, Identities},
    probe::KernelCounters,
    stacks::{StackTable, modules::ModuleIdx},
    target::{Target, limits::MemoryLimit},
    verdict::{Process, SiteVerdict, Verdict, Verdicts},
};

/// What a report needs besides the aggregator, identities and verdicts.
pub struct ReportContext<'a> {
    pub target: &'a Target,
    pub is_final: bool,
    pub now_ns: u64,
    pub elapsed_s: f64,
    pub min_age_ns: u64,
    pub top: usize,
    pub rss_bytes: Option<u64>,
    pub memory_limit: Option<&'a MemoryLimit>,
    pub kernel: KernelCounters,
    pub sample_bytes: u64,
    /// How the target ended (final reports).
    pub end: Option<TargetEnd>,
    /// Open descriptors now (from `/proc`, while the target lives) and the limit.
    pub fds: Option<u64>,
    pub fd_limit: Option<u64>,
    /// Whether the target still runs (its `/proc` entries can be read).
    pub alive: bool,
    /// A Go target's runtime facts.
    pub go: Option<GoFacts<'a>>,
}

/// What a report says of a Go target's runtime.
pub struct GoFacts<'a> {
    pub version: &'a str,
    /// Wait reasons, by the runtime's numbers.
    pub wait_reasons: &'a [String],
    /// The live heap after the last collection.
    pub heap_marked: Option<u64>,
    pub mem_profile_rate: Option<u64>,
}

/// The parts a report is built from.
pub struct Inputs<'a> {
    pub agg: &'a Aggregator,
    pub identities: &'a Identities,
    pub verdicts: &'a Verdicts,
}

/// Builds one report.
pub fn build(inputs: &Inputs<'_>, ctx: &ReportContext<'_>) -> Report {
    let mut figures = inputs.agg.live_figures(ctx.now_ns, ctx.min_age_ns);
    // The Go runtime's own heap mappings are its arenas: counted as such, no site.
    let (runtime_heap, all): (Vec<&Group>, Vec<&Group>) =
        inputs.identities.groups().iter().partition(|g| g.runtime_heap);
    figures.totals.allocator_bytes += runtime_heap.iter().map(|g| live_of(g, &figures).1 as u64).sum::<u64>();
    figures.totals.mapped_bytes = figures
        .totals
        .mapped_bytes
        .saturating_sub(runtime_heap.iter().map(|g| live_of(g, &figures).1 as u64).sum());
    let live_sites = all.iter().filter(|g| live_of(g, &figures).0 > 0.0).count();
    let ranked =
        rank::rank(all.iter().map(|&g| (g, rank_of(g, &figures, inputs.verdicts))).collect(), ctx.top);
    let ages = ages_of(inputs.agg, &ranked, ctx);
    let mut modules = BTreeSet::new();
    let mut sites: Vec<SiteReport> = ranked
        .iter()
        .zip(ages)
        .map(|((group, rank), age)| site_report(inputs, group, rank, age, &mut modules, ctx))
        .collect();
    details::relate_defers_to_descriptors(&mut sites);
    Report {
        schema: SCHEMA.to_string(),
        is_final: ctx.is_final,
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        elapsed_s: round(ctx.elapsed_s, 3),
        target: TargetInfo {
            pid: ctx.target.pid,
            exe: ctx.target.exe.display().to_string(),
            cmdline: ctx.target.cmdline.clone(),
            runtime: if ctx.go.is_some() { "go" } else { "native" }.to_string(),
            go_version: ctx.go.as_ref().map(|g| g.version.to_string()),
            end: ctx.end.clone(),
        },
        process: process_info(&figures, inputs.verdicts, ctx),
        coverage: CoverageInfo {
            sample_bytes: ctx.sample_bytes,
            sites_overflowed: inputs.agg.sites.overflowed,
            unknown_goroutine_exits: inputs.agg.goroutine_coverage().0,
            go_mem_profile_rate: ctx.go.as_ref().and_then(|g| g.mem_profile_rate),
            ..coverage(&inputs.agg.coverage, &inputs.agg.stacks, &ctx.kernel)
        },
        totals: SiteTotals { sites: all.len() as u64, live_sites: live_sites as u64 },
        sites,
        modules: modules.into_iter().map(|idx| module_info(&inputs.agg.stacks, idx)).collect(),
    }
}

/// A group's live (count, bytes), summed over its raw sites.
fn live_of(group: &Group, figures: &LiveFigures) -> (f64, f64) {
    group.members.iter().fold((0.0, 0.0), |(c, b), &m| {
        let (mc, mb) = figures.per_site[m as usize];
        (c + mc, b + mb)
    })
}

fn rank_of(group: &Group, figures: &LiveFigures, verdicts: &Verdicts) -> Rank {
    let (live_count, live_bytes) = live_of(group, figures);
    let verdict = verdicts.get(group.first);
    let suspect = verdict.and_then(|v| match v.verdict {
        Verdict::Leak => Some(0),
        Verdict::Growing => Some(1),
        _ => None,
    });
    Rank {
        live_count: live_count.round() as u64,
        live_bytes: live_bytes.round() as u64,
        suspect,
        bytes_per_min: verdict.map_or(0.0, |v| v.bytes_per_min),
        count_per_min: verdict.map_or(0.0, |v| v.count_per_min),
    }
}

fn ages_of(agg: &Aggregator, ranked: &[(&Group, Rank)], ctx: &ReportContext<'_>) -> Vec<Ages> {
    let mut group_of = vec![NO_GROUP; agg.sites.len()];
    for (g, (group, _)) in ranked.iter().enumerate() {
        for &member in &group.members {
            group_of[member as usize] = g as u32;
        }
    }
    agg.ages(ctx.now_ns, ctx.min_age_ns, &group_of, ranked.len())
}

fn site_report(
    inputs: &Inputs<'_>,
    group: &Group,
    rank: &Rank,
    age: Ages,
    modules: &mut BTreeSet<ModuleIdx>,
    ctx: &ReportContext<'_>,
) -> SiteReport {
    let agg = inputs.agg;
    let site = agg.sites.get(details::shown_member(group, agg));
    let stack = site.key.stack.and_then(|id| agg.stacks.get(id));
    let (kind, allocator, backing) = describe(site.key.kind, site.key.detail);
    let (allocs, alloc_bytes, frees) = group.members.iter().fold((0.0, 0.0, 0.0), |(a, ab, f), &m| {
        let s = agg.sites.get(m);
        (a + s.allocs, ab + s.alloc_bytes, f + s.frees)
    });
    let verdict = inputs.verdicts.get(group.first);
    let frames = inputs.identities.frames(&agg.stacks, &site.key);
    modules.extend(frames.iter().filter_map(|f| f.module_idx));
    SiteReport {
        id: format!("s{}", group.first + 1),
        kind,
        allocator: allocator.to_string(),
        backing: backing.map(str::to_string),
        verdict: verdict_name(verdict),
        confidence: verdict.map_or(0.0, |v| round(v.confidence, 3)),
        count_per_min: verdict.map_or(0.0, |v| round(v.count_per_min, 1)),
        bytes_per_min: verdict.map_or(0.0, |v| round(v.bytes_per_min, 1)),
        first_leak_s: verdict.and_then(|v| v.first_leak_s).map(|t| round(t, 1)),
        live_count: rank.live_count,
        live_bytes: rank.live_bytes,
        allocs: allocs.round() as u64,
        alloc_bytes: alloc_bytes.round() as u64,
        frees: frees.round() as u64,
        age_s: AgeReport { p50: age.p50, p99: age.p99, max: age.max },
        stack_truncated: stack.is_none_or(|s| s.truncated),
        reason: verdict.and_then(|v| v.reason).map(str::to_string),
        descriptors: (site.key.kind == SiteKind::Fd && ctx.alive)
            .then(|| details::descriptors(ctx.target.pid, group, agg)),
        goroutines: (site.key.kind == SiteKind::Goroutine)
            .then(|| details::goroutines(group, inputs, ctx, site.key.detail)),
        defers: (site.key.kind == SiteKind::Defer).then(|| details::defers(group, agg, ctx.now_ns)),
        gc_cycles: if site.key.kind == SiteKind::GoHeap { details::gc_cycles(group, agg) } else { None },
        related_sites: Vec::new(),
        frames: frames
            .into_iter()
            .map(|f| FrameReport {
                function: f.symbol.function,
                file: f.symbol.file,
                line: f.symbol.line,
                module: f.module,
                offset: f.offset.map(|o| format!("{o:#x}")),
                address: format!("{:#x}", f.addr),
            })
            .collect(),
    }
}

/// A site's kind as written, the function that made its things, and their backing.
fn describe(kind: SiteKind, detail: u64) -> (KindName, &'static str, Option<&'static str>) {
    let func = u32::try_from(detail).ok().and_then(tracer_ebpf::func::name);
    match kind {
        SiteKind::Heap => (KindName::Heap, func.unwrap_or("malloc"), None),
        SiteKind::Mmap { file } => (KindName::Mmap, "mmap", Some(if file { "file" } else { "anonymous" })),
        SiteKind::Brk => (KindName::Brk, "brk", None),
        SiteKind::Goroutine => (KindName::Goroutine, "go statement", None),
        SiteKind::Defer => (KindName::Defer, "defer statement", None),
        SiteKind::Fd => (KindName::Fd, crate::aggregate::fds::syscall_name(detail), None),
        SiteKind::GoHeap => (KindName::Goheap, "Go allocator (sampled)", None),
        SiteKind::Resident => (KindName::Resident, "page fault", None),
    }
}

fn verdict_name(verdict: Option<&SiteVerdict>) -> VerdictName {
    match verdict.map(|v| v.verdict) {
        None => VerdictName::Unknown,
        Some(Verdict::Leak) => VerdictName::Leak,
        Some(Verdict::Growing) => VerdictName::Growing,
        Some(Verdict::Plateau) => VerdictName::Plateau,
        Some(Verdict::Cyclic) => VerdictName::Cyclic,
        Some(Verdict::Shrinking) => VerdictName::Shrinking,
        Some(Verdict::Stable) => VerdictName::Stable,
    }
}

fn process_info(figures: &LiveFigures, verdicts: &Verdicts, ctx: &ReportContext<'_>) -> ProcessInfo {
    let totals = figures.totals;
    let rss_per_s = verdicts.growth(Process::Rss);
    let oom_killed = ctx.end.as_ref().is_some_and(|e| e.how == "oom_kill");
    let limit_eta_s = match (ctx.memory_limit, ctx.rss_bytes, rss_per_s) {
        // The limit was reached: no projection, it happened.
        _ if oom_killed => Some(0.0),
        (Some(limit), Some(rss), Some(rate)) if rate > 0.0 && rss < limit.bytes => {
            Some(round((limit.bytes - rss) as f64 / rate, 0))
        }
        _ => None,
    };
    let fds = ctx.fds.or((totals.fds > 0).then_some(totals.fds));
    let fds_per_s = verdicts.growth(Process::Fds);
    let fd_limit_eta_s = match (ctx.fd_limit, fds, fds_per_s) {
        // At the limit: every new descriptor fails with EMFILE now.
        (Some(limit), Some(n), _) if n >= limit => Some(0.0),
        (Some(limit), Some(n), Some(rate)) if rate > 0.0 && n < limit => {
            Some(round((limit - n) as f64 / rate, 0))
        }
        _ => None,
    };
    // Killed for its memory: RSS as the kernel saw it then, not as last sampled.
    let oom_rss = ctx.end.as_ref().and_then(|e| e.oom.as_ref()).map(|o| o.rss_bytes);
    ProcessInfo {
        rss_bytes: oom_rss.or(ctx.rss_bytes),
        heap_live_bytes: totals.heap_bytes,
        heap_live_blocks: totals.heap_blocks,
        mapped_live_bytes: totals.mapped_bytes,
        allocator_reserved_bytes: totals.allocator_bytes,
        loader_mapped_bytes: totals.loader_bytes,
        rss_bytes_per_min: rss_per_s.map(|r| round(r * 60.0, 0)),
        memory_limit_bytes: ctx.memory_limit.map(|l| l.bytes),
        memory_limit_source: ctx.memory_limit.map(|l| l.source.describe().to_string()),
        limit_eta_s,
        fds,
        fd_limit: ctx.fd_limit,
        fds_per_min: fds_per_s.map(|r| round(r * 60.0, 1)),
        fd_limit_eta_s,
        goroutines: totals.goroutines,
        go_heap_live_bytes: ctx.go.as_ref().and_then(|g| g.heap_marked),
        resident_growth_bytes: (totals.resident_bytes > 0).then_some(totals.resident_bytes),
    }
}

fn module_info(stacks: &StackTable, idx: ModuleIdx) -> ModuleInfo {
    let module = stacks.modules.module(idx);
    let (start, end, file_offset) = module.mapping;
    ModuleInfo {
        path: module.path.clone(),
        start,
        end,
        file_offset,
        build_id: module.build_id().map(str::to_string),
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn coverage(user: &Coverage, stacks: &StackTable, kernel: &KernelCounters) -> CoverageInfo {
    CoverageInfo {
        events: user.events,
        lost_events: kernel.lost_events,
        stack_errors: kernel.stack_errors + stacks.missing + stacks.dropped,
        truncated_stacks: kernel.truncated_stacks + stacks.truncated_samples,
        stack_samples: stacks.samples,
        unknown_frees: user.unknown_frees,
        unknown_unmaps: user.unknown_unmaps,
        address_reused: user.address_reused,
        dropped: kernel.dropped + user.table_full,
        decode_errors: user.decode_errors,
        fd_reused: user.fd_reused,
        unknown_closes: user.unknown_closes,
        read_errors: kernel.read_errors,
        abandoned_calls: kernel.abandoned_calls,
        allocator_internal_frees: user.allocator_internal_frees,
        ..CoverageInfo::default()
    }
}
