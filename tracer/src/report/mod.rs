//! Reports: built from the aggregator's snapshot, symbolized, and written as text or
//! NDJSON.

pub mod model;
mod text;

use std::{
    collections::HashMap,
    io::{self, Write},
    sync::Arc,
    time::SystemTime,
};

pub use self::model::*;
use crate::{
    aggregate::{Aggregator, Coverage, sites::SiteKind},
    cli::Format,
    probe::{KernelCounters, allocator},
    symbolize::{SymFrame, Symbolizer, modules::ModuleIdx},
    target::Target,
};

/// What a report needs besides the aggregator.
pub struct ReportContext<'a> {
    pub target: &'a Target,
    pub is_final: bool,
    pub now_ns: u64,
    pub elapsed_s: f64,
    pub min_age_ns: u64,
    pub top: usize,
    pub rss_bytes: Option<u64>,
    pub kernel: KernelCounters,
}

/// Builds reports, keeping symbolized frames for the whole run.
pub struct Reporter {
    symbolizer: Symbolizer,
    symbols: HashMap<(ModuleIdx, u64), Arc<[SymFrame]>>,
}

impl Reporter {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self { symbolizer, symbols: HashMap::new() }
    }

    pub async fn build(&mut self, agg: &Aggregator, ctx: &ReportContext<'_>) -> Report {
        let snapshot = agg.snapshot(ctx.now_ns, ctx.min_age_ns, ctx.top);

        // Symbolize what this report shows and no earlier report did, one request per
        // file. Return addresses point after the call: look up the byte before.
        let mut wanted: HashMap<ModuleIdx, Vec<u64>> = HashMap::new();
        for figures in &snapshot.sites {
            let Some(stack) = agg.sites.get(figures.site).key.stack.and_then(|id| agg.stacks.get(id)) else {
                continue;
            };
            for frame in &stack.frames {
                if let Some(loc) = frame.location
                    && let Some(module) = loc.module
                    && !self.symbols.contains_key(&(module, loc.offset))
                {
                    wanted.entry(module).or_default().push(loc.offset);
                }
            }
        }
        for (module, mut offsets) in wanted {
            offsets.sort_unstable();
            offsets.dedup();
            let lookups = offsets.iter().map(|o| o.saturating_sub(1)).collect();
            let path = agg.stacks.modules.module(module).symbol_path();
            let frames = self.symbolizer.symbolize(path, lookups).await;
            for (offset, frames) in offsets.into_iter().zip(frames) {
                self.symbols.insert((module, offset), frames.into());
            }
        }

        let sites = snapshot
            .sites
            .iter()
            .map(|figures| {
                let site = agg.sites.get(figures.site);
                let stack = site.key.stack.and_then(|id| agg.stacks.get(id));
                let mut frames = Vec::new();
                for frame in stack.map(|s| s.frames.as_slice()).unwrap_or_default() {
                    let module = frame.location.and_then(|l| l.module);
                    let module_path = module.map(|m| agg.stacks.modules.module(m).path.clone());
                    let symbols = frame
                        .location
                        .and_then(|l| Some((l.module?, l.offset)))
                        .and_then(|key| self.symbols.get(&key));
                    let address = format!("{:#x}", frame.addr);
                    match symbols {
                        Some(symbols) => frames.extend(symbols.iter().map(|s| FrameReport {
                            function: s.function.clone(),
                            file: s.file.clone(),
                            line: s.line,
                            module: module_path.clone(),
                            address: address.clone(),
                        })),
                        None => frames.push(FrameReport {
                            function: None,
                            file: None,
                            line: None,
                            module: module_path,
                            address,
                        }),
                    }
                }
                let (allocator, backing) = match site.key.kind {
                    SiteKind::Heap => (allocator::name_of(site.key.func), None),
                    SiteKind::Mmap { file } => ("mmap", Some(if file { "file" } else { "anonymous" })),
                    SiteKind::Brk => ("brk", None),
                };
                SiteReport {
                    id: format!("s{}", figures.site + 1),
                    kind: site.key.kind.name().to_string(),
                    allocator: allocator.to_string(),
                    backing: backing.map(str::to_string),
                    verdict: "unknown".to_string(),
                    live_count: figures.live_count,
                    live_bytes: figures.live_bytes,
                    allocs: figures.allocs,
                    frees: figures.frees,
                    age_s: AgeReport { p50: figures.age.p50, p99: figures.age.p99, max: figures.age.max },
                    stack_truncated: stack.is_none_or(|s| s.truncated),
                    frames,
                }
            })
            .collect();

        let totals = snapshot.totals;
        Report {
            schema: SCHEMA.to_string(),
            is_final: ctx.is_final,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            elapsed_s: (ctx.elapsed_s * 1000.0).round() / 1000.0,
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
            },
            coverage: coverage(agg.coverage, agg.stacks.missing, ctx.kernel),
            totals: SiteTotals { sites: totals.sites, live_sites: totals.live_sites },
            sites,
        }
    }
}

fn coverage(user: Coverage, missing_stacks: u64, kernel: KernelCounters) -> CoverageInfo {
    CoverageInfo {
        events: user.events,
        lost_events: kernel.lost_events,
        stack_errors: kernel.stack_errors + missing_stacks,
        truncated_stacks: kernel.truncated_stacks,
        unknown_frees: user.unknown_frees,
        unknown_unmaps: user.unknown_unmaps,
        address_reused: user.address_reused,
        dropped: kernel.dropped,
        decode_errors: user.decode_errors,
    }
}

/// Writes reports in one format to one destination.
pub struct ReportWriter {
    format: Format,
    out: Box<dyn Write + Send>,
}

impl ReportWriter {
    pub fn new(format: Format, out: Box<dyn Write + Send>) -> Self {
        Self { format, out }
    }

    pub fn write(&mut self, report: &Report) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, report)?;
                self.out.write_all(b"\n")?;
            }
            Format::Text => text::render(report, &mut self.out)?,
        }
        self.out.flush()
    }
}
