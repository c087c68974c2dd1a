//! Folded stacks (Brendan Gregg's format, read by flamegraph.pl, inferno and Pyroscope):
//! one line per stack, root first, `frame;frame;frame value`.
//!
//! The value is live bytes (or live blocks with `--weight count`). Frame names never hold
//! `;` (it separates frames) nor whitespace (the value follows the last space): `;`
//! becomes `:` and whitespace `_`. A frame without a name is `[module@address]`. Lines
//! are sorted and identical stacks summed, so the output is the same for the same report.

use std::collections::BTreeMap;

use super::model::{FrameReport, KindName, Report, SiteReport, VerdictName};
use crate::config::{ExportOptions, Kind, Weight};

/// The sites of a report that go into flame graphs and heap profiles: memory, and the
/// kinds asked for by name.
pub fn exported_sites<'a>(
    report: &'a Report,
    export: &'a ExportOptions,
) -> impl Iterator<Item = &'a SiteReport> {
    report.sites.iter().filter(move |s| {
        let shown = match s.kind {
            KindName::Heap | KindName::Mmap | KindName::Brk | KindName::Goheap | KindName::Resident => true,
            KindName::Goroutine => export.also.contains(Kind::Goroutine),
            KindName::Fd => export.also.contains(Kind::Fd),
            KindName::Defer => export.also.contains(Kind::Defer),
        };
        shown && (!export.only_leaks || s.verdict == VerdictName::Leak)
    })
}

pub fn folded(report: &Report, export: &ExportOptions) -> String {
    let weight = export.weight;
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for site in exported_sites(report, export) {
        let value = match weight {
            Weight::Bytes => site.live_bytes,
            Weight::Count => site.live_count,
        };
        if value == 0 {
            continue;
        }
        let stack: Vec<String> = site.frames.iter().rev().map(frame_name).collect();
        let stack = if stack.is_empty() { "[no stack]".to_string() } else { stack.join(";") };
        *lines.entry(stack).or_default() += value;
    }
    lines.into_iter().map(|(stack, value)| format!("{stack} {value}\n")).collect()
}

fn frame_name(frame: &FrameReport) -> String {
    frame
        .name()
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::model::*;

    pub(crate) fn site(
        id: &str,
        verdict: VerdictName,
        live: (u64, u64),
        frames: &[(Option<&str>, &str)],
    ) -> SiteReport {
        SiteReport {
            id: id.into(),
            kind: KindName::Heap,
            allocator: "malloc".into(),
            backing: None,
            verdict,
            confidence: 1.0,
            count_per_min: 0.0,
            bytes_per_min: 0.0,
            first_leak_s: None,
            live_count: live.0,
            live_bytes: live.1,
            allocs: live.0,
            alloc_bytes: live.1,
            frees: 0,
            age_s: AgeReport::default(),
            stack_truncated: false,
            frames: frames
                .iter()
                .map(|(f, a)| FrameReport {
                    function: f.map(str::to_string),
                    file: None,
                    line: None,
                    module: Some("/usr/bin/app".into()),
                    offset: f.is_none().then(|| "0x1234".into()),
                    address: (*a).into(),
                })
                .collect(),
            ..SiteReport::default()
        }
    }

    pub(crate) fn report(sites: Vec<SiteReport>) -> Report {
        Report {
            schema: SCHEMA.into(),
            is_final: true,
            time: "2026-11-27T12:00:00Z".into(),
            elapsed_s: 10.0,
            target: TargetInfo {
                pid: 1,
                exe: "/usr/bin/app".into(),
                cmdline: vec![],
                runtime: "native".into(),
                ..TargetInfo::default()
            },
            process: ProcessInfo {
                rss_bytes: None,
                heap_live_bytes: 0,
                heap_live_blocks: 0,
                mapped_live_bytes: 0,
                allocator_reserved_bytes: 0,
                loader_mapped_bytes: 0,
                rss_bytes_per_min: None,
                memory_limit_bytes: None,
                memory_limit_source: None,
                limit_eta_s: None,
                ..ProcessInfo::default()
            },
            coverage: CoverageInfo::default(),
            totals: SiteTotals::default(),
            modules: vec![ModuleInfo {
                path: "/usr/bin/app".into(),
                start: 0x1000,
                end: 0x9000,
                file_offset: 0,
                build_id: Some("abcd".into()),
            }],
            sites,
        }
    }

    #[test]
    fn root_first_sorted_summed_and_safe() {
        let r = report(vec![
            site(
                "s1",
                VerdictName::Leak,
                (2, 200),
                &[(Some("alloc one"), "0x1010"), (Some("main"), "0x1100")],
            ),
            site("s2", VerdictName::Stable, (1, 50), &[(Some("b;c"), "0x1020"), (None, "0x1200")]),
            site(
                "s3",
                VerdictName::Leak,
                (1, 30),
                &[(Some("alloc one"), "0x1011"), (Some("main"), "0x1101")],
            ),
            site("s4", VerdictName::Stable, (0, 0), &[(Some("freed"), "0x1030")]),
        ]);
        assert_eq!(folded(&r, &ExportOptions::default()), "app+0x1234;b:c 50\nmain;alloc_one 230\n");
        let leaks_by_count =
            ExportOptions { weight: Weight::Count, only_leaks: true, ..ExportOptions::default() };
        assert_eq!(folded(&r, &leaks_by_count), "main;alloc_one 3\n");
    }
}
