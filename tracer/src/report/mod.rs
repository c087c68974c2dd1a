//! Reports: built from the aggregator's snapshot, symbolized, and written as text or
//! NDJSON.

mod folded;
mod group;
pub mod model;
pub mod outputs;
mod pprof;
mod svg;
mod text;

use std::time::SystemTime;

pub use self::group::Group;
use self::group::Rank;
pub use self::model::*;
use crate::{
    aggregate::{
        Aggregator, Coverage, NO_GROUP,
        sites::{SiteKey, SiteKind},
        stacks::StackTable,
    },
    probe::{KernelCounters, allocator},
    symbolize::{ResolvedFrame, Symbolizer, Symbols},
    target::{Target, limits::MemoryLimit},
    verdict::{Verdict, Verdicts},
};

/// What a report needs besides the aggregator and the verdicts.
pub struct ReportContext<'a> {
    pub target: &'a Target,
    pub is_final: bool,
    pub now_ns: u64,
    pub elapsed_s: f64,
    pub min_age_ns: u64,
    pub top: usize,
    pub rss_bytes: Option<u64>,
    pub memory_limit: Option<MemoryLimit>,
    pub kernel: KernelCounters,
    pub sample_bytes: u64,
}

/// Builds reports, keeping symbolized frames and site identities for the whole run.
pub struct Reporter {
    symbols: Symbols,
    /// Identity of every raw site (see `identity`), by site index.
    keys: Vec<u64>,
}

impl Reporter {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self { symbols: Symbols::new(symbolizer), keys: Vec::new() }
    }

    /// Symbolizes the stacks of sites seen since the last call and works out their
    /// identities.
    pub async fn identify(&mut self, agg: &Aggregator) {
        let new = self.keys.len()..agg.sites.len();
        if new.is_empty() {
            return;
        }
        let sites: Vec<_> = agg.sites.iter().skip(new.start).map(|(_, s)| s.key).collect();
        self.symbols.load(&agg.stacks, sites.iter().filter_map(|k| k.stack)).await;
        for key in sites {
            let frames = key.stack.map(|id| self.symbols.frames(&agg.stacks, id)).unwrap_or_default();
            self.keys.push(identity(&key, &frames));
        }
    }

    /// Every reported site, as groups of raw sites (after [`Reporter::identify`]).
    pub fn groups(&self) -> Vec<Group> {
        group::group(&self.keys)
    }

    pub async fn build(&mut self, agg: &Aggregator, verdicts: &Verdicts, ctx: &ReportContext<'_>) -> Report {
        self.identify(agg).await;
        let figures = agg.live_figures(ctx.now_ns, ctx.min_age_ns);
        let all = self.groups();
        let live_sites =
            all.iter().filter(|g| g.members.iter().any(|&m| figures.per_site[m as usize].0 > 0.0)).count();
        let sites_total = all.len();
        let ranked = group::rank(
            all.into_iter()
                .map(|g| {
                    let (live_count, live_bytes) = g.members.iter().fold((0.0, 0.0), |(c, b), &m| {
                        let (mc, mb) = figures.per_site[m as usize];
                        (c + mc, b + mb)
                    });
                    let (live_count, live_bytes) = (live_count.round() as u64, live_bytes.round() as u64);
                    let verdict = verdicts.get(g.first);
                    let suspect = verdict.and_then(|v| match v.verdict {
                        Verdict::Leak => Some(0),
                        Verdict::Growing => Some(1),
                        _ => None,
                    });
                    let bytes_per_min = verdict.map_or(0.0, |v| v.bytes_per_min);
                    (g, Rank { live_count, live_bytes, suspect, bytes_per_min })
                })
                .collect(),
            ctx.top,
        );

        let mut group_of = vec![NO_GROUP; agg.sites.len()];
        for (g, (group, _)) in ranked.iter().enumerate() {
            for &member in &group.members {
                group_of[member as usize] = g as u32;
            }
        }
        let ages = agg.ages(ctx.now_ns, ctx.min_age_ns, &group_of, ranked.len());

        let mut modules = std::collections::BTreeSet::new();
        let sites = ranked
            .iter()
            .zip(ages)
            .map(|((group, rank), age)| {
                let site = agg.sites.get(group.first);
                let stack = site.key.stack.and_then(|id| agg.stacks.get(id));
                let (allocator, backing) = match site.key.kind {
                    SiteKind::Heap => (allocator::name_of(site.key.func), None),
                    SiteKind::Mmap { file } => ("mmap", Some(if file { "file" } else { "anonymous" })),
                    SiteKind::Brk => ("brk", None),
                };
                let (allocs, alloc_bytes, frees) =
                    group.members.iter().fold((0.0, 0.0, 0.0), |(a, ab, f), &m| {
                        let s = agg.sites.get(m);
                        (a + s.allocs, ab + s.alloc_bytes, f + s.frees)
                    });
                let (allocs, alloc_bytes, frees) =
                    (allocs.round() as u64, alloc_bytes.round() as u64, frees.round() as u64);
                let verdict = verdicts.get(group.first);
                let frames =
                    site.key.stack.map(|id| self.symbols.frames(&agg.stacks, id)).unwrap_or_default();
                modules.extend(frames.iter().filter_map(|f| f.module_idx));
                SiteReport {
                    id: format!("s{}", group.first + 1),
                    kind: site.key.kind.name().to_string(),
                    allocator: allocator.to_string(),
                    backing: backing.map(str::to_string),
                    verdict: verdict.map_or("unknown", |v| v.verdict.name()).to_string(),
                    confidence: verdict.map_or(0.0, |v| round(v.confidence, 3)),
                    count_per_min: verdict.map_or(0.0, |v| round(v.count_per_min, 1)),
                    bytes_per_min: verdict.map_or(0.0, |v| round(v.bytes_per_min, 1)),
                    first_leak_s: verdict.and_then(|v| v.first_leak_s).map(|t| round(t, 1)),
                    live_count: rank.live_count,
                    live_bytes: rank.live_bytes,
                    allocs,
                    alloc_bytes,
                    frees,
                    age_s: AgeReport { p50: age.p50, p99: age.p99, max: age.max },
                    stack_truncated: stack.is_none_or(|s| s.truncated),
                    frames: frames
                        .into_iter()
                        .map(|f| FrameReport {
                            function: f.symbol.function,
                            file: f.symbol.file,
                            line: f.symbol.line,
                            module: f.module,
                            address: format!("{:#x}", f.addr),
                        })
                        .collect(),
                }
            })
            .collect();

        let totals = figures.totals;
        let rss_per_s = verdicts.rss_growth();
        let limit_eta_s = match (ctx.memory_limit, ctx.rss_bytes, rss_per_s) {
            (Some(limit), Some(rss), Some(rate)) if rate > 0.0 && rss < limit.bytes => {
                Some(round((limit.bytes - rss) as f64 / rate, 0))
            }
            _ => None,
        };
        Report {
            schema: SCHEMA.to_string(),
            is_final: ctx.is_final,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            elapsed_s: round(ctx.elapsed_s, 3),
            target: TargetInfo {
                pid: ctx.target.pid,
                exe: ctx.target.exe.display().to_string(),
                cmdline: ctx.target.cmdline.clone(),
                runtime: "native".to_string(),
            },
            process: ProcessInfo {
                rss_bytes: ctx.rss_bytes,
                heap_live_bytes: totals.heap_bytes,
                heap_live_blocks: totals.heap_blocks,
                mapped_live_bytes: totals.mapped_bytes,
                allocator_reserved_bytes: totals.allocator_bytes,
                loader_mapped_bytes: totals.loader_bytes,
                rss_bytes_per_min: rss_per_s.map(|r| round(r * 60.0, 0)),
                memory_limit_bytes: ctx.memory_limit.map(|l| l.bytes),
                memory_limit_source: ctx.memory_limit.map(|l| l.source.describe().to_string()),
                limit_eta_s,
            },
            coverage: CoverageInfo {
                sample_bytes: ctx.sample_bytes,
                ..coverage(agg.coverage, &agg.stacks, ctx.kernel)
            },
            totals: SiteTotals { sites: sites_total as u64, live_sites: live_sites as u64 },
            sites,
            modules: modules
                .into_iter()
                .map(|idx| {
                    let module = agg.stacks.modules.module(idx);
                    let (start, end, file_offset) = module.mapping;
                    ModuleInfo {
                        path: module.path.clone(),
                        start,
                        end,
                        file_offset,
                        build_id: module.build_id().map(str::to_string),
                    }
                })
                .collect(),
        }
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// What makes two raw sites the same reported site: kind, allocator function, and the
/// symbolized stack (an unsymbolized frame by its address).
fn identity(key: &SiteKey, frames: &[ResolvedFrame]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key.kind, key.func).hash(&mut h);
    if key.stack.is_none() {
        // Sites without a stack stay apart from any with one.
        0xdead_u64.hash(&mut h);
    }
    for f in frames {
        match &f.symbol.function {
            Some(function) => (function, &f.symbol.file, f.symbol.line, &f.module).hash(&mut h),
            None => (&f.module, f.addr).hash(&mut h),
        }
    }
    h.finish()
}

fn coverage(user: Coverage, stacks: &StackTable, kernel: KernelCounters) -> CoverageInfo {
    CoverageInfo {
        events: user.events,
        lost_events: kernel.lost_events,
        stack_errors: kernel.stack_errors + stacks.missing,
        truncated_stacks: kernel.truncated_stacks + stacks.truncated_samples,
        stack_samples: stacks.samples,
        unknown_frees: user.unknown_frees,
        unknown_unmaps: user.unknown_unmaps,
        address_reused: user.address_reused,
        dropped: kernel.dropped + user.table_full,
        decode_errors: user.decode_errors,
        sample_bytes: 0,
    }
}
