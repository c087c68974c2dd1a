//! The human-readable report: what an on-call engineer reads first. Leak suspects come
//! first; other sites only with `--all`.

use std::io::{self, Write};

use super::model::{CoverageInfo, GoroutineDetails, KindName, ProcessInfo, Report, SiteReport, TargetEnd};

pub fn render(report: &Report, all: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", header(report))?;
    writeln!(out, "{}", process_line(&report.process))?;
    writeln!(out, "memory: {}", memory_outlook(report))?;
    if let Some(line) = descriptors_line(&report.process) {
        writeln!(out, "{line}")?;
    }
    if let Some(line) = go_line(report) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "coverage: {}", coverage_line(&report.coverage))?;
    let suspects = report.sites.iter().filter(|s| s.verdict.is_suspect()).count();
    let shown: Vec<&SiteReport> = report.sites.iter().filter(|s| all || s.verdict.is_suspect()).collect();
    writeln!(
        out,
        "sites: {} seen, {} with something outstanding, {suspects} growing{}",
        report.totals.sites,
        report.totals.live_sites,
        if all || report.totals.live_sites as usize <= suspects {
            String::new()
        } else {
            "; --all shows the others".to_string()
        },
    )?;
    for (i, site) in shown.iter().enumerate() {
        writeln!(out)?;
        render_site(i + 1, site, out)?;
    }
    writeln!(out)
}

/// "== leaktracer final report: pid 9414 /srv/x at ... (12.0 s traced): killed by the
/// OOM killer at 11:36:51: cgroup /ltoom, limit 200.0 MiB, RSS 192.2 MiB =="
fn header(report: &Report) -> String {
    let t = &report.target;
    let end = t.end.as_ref().map(|e| format!(": {}", ending(e))).unwrap_or_default();
    format!(
        "== leaktracer {} report: pid {} {} at {} ({:.1} s traced){end} ==",
        if report.is_final { "final" } else { "interim" },
        t.pid,
        t.exe,
        report.time,
        report.elapsed_s
    )
}

/// How the target ended, in words.
fn ending(e: &TargetEnd) -> String {
    let at = e.time.get(11..19).unwrap_or(&e.time);
    let sender = e.sender.as_ref().map(|s| format!(" from {s}")).unwrap_or_default();
    match e.how.as_str() {
        "oom_kill" => {
            let oom = e.oom.as_ref();
            let place = match (oom.and_then(|o| o.cgroup.as_deref()), oom.and_then(|o| o.limit_bytes)) {
                (Some(cgroup), Some(limit)) => format!("cgroup {cgroup}, limit {}, ", bytes(limit)),
                _ => "out of memory, ".to_string(),
            };
            format!("killed by the OOM killer at {at}: {place}RSS {}", bytes(oom.map_or(0, |o| o.rss_bytes)))
        }
        "signal" => format!("killed by signal {} at {at}{sender}", e.signal.unwrap_or(0)),
        "exit" => format!("exited with status {} at {at}", e.status.unwrap_or(0)),
        _ => "still running (detached)".to_string(),
    }
}

fn process_line(p: &ProcessInfo) -> String {
    format!(
        "process: RSS {}, live heap {} in {} blocks, live mappings {}, allocator arenas {}",
        p.rss_bytes.map_or_else(|| "unknown".to_string(), bytes),
        bytes(p.heap_live_bytes),
        p.heap_live_blocks,
        bytes(p.mapped_live_bytes),
        bytes(p.allocator_reserved_bytes),
    )
}

/// "descriptors: 37 open; at +120/min, the 1024 limit is reached in about 6 min"
fn descriptors_line(p: &ProcessInfo) -> Option<String> {
    let fds = p.fds?;
    let limit = p.fd_limit.map(|l| format!("the {l} limit")).unwrap_or_else(|| "the limit".into());
    let outlook = match (p.fds_per_min, p.fd_limit_eta_s) {
        (_, Some(eta)) if eta <= 0.0 => format!("; {limit} is reached: new descriptors fail (EMFILE)"),
        (Some(rate), Some(eta)) => {
            format!("; at +{rate:.0}/min, {limit} is reached in about {}", duration(eta))
        }
        (Some(rate), None) if rate > 0.0 => format!("; growing at +{rate:.0}/min"),
        _ => String::new(),
    };
    Some(format!("descriptors: {fds} open{outlook}"))
}

fn go_line(report: &Report) -> Option<String> {
    let version = report.target.go_version.as_ref()?;
    let p = &report.process;
    let goroutines = p.goroutines.map(|n| format!(", {n} goroutines")).unwrap_or_default();
    let heap = p
        .go_heap_live_bytes
        .map(|b| format!(", heap {} live after the last GC", bytes(b)))
        .unwrap_or_default();
    let rate = match report.coverage.go_mem_profile_rate {
        Some(0) => "; the program's heap profiling is off (MemProfileRate 0): Go heap sites cannot be seen",
        _ => "",
    };
    Some(format!("go: {version}{goroutines}{heap}{rate}"))
}

fn coverage_line(c: &CoverageInfo) -> String {
    let mut missed = Vec::new();
    for (n, what) in [
        (c.lost_events, "events lost (ring buffer full; try --ring-mib)"),
        (c.dropped, "allocations dropped (a table was full)"),
        (c.stack_errors, "stack errors"),
        (c.truncated_stacks, "truncated stacks"),
        (c.unknown_frees, "frees of blocks not seen allocated (allocated before attach)"),
        (c.unknown_unmaps, "unmaps of ranges mapped before attach"),
        (c.address_reused, "missed frees"),
        (c.fd_reused, "missed closes"),
        (c.unknown_closes, "closes of descriptors not known open"),
        (c.unknown_goroutine_exits, "exits of goroutines not seen created"),
        (c.read_errors, "failed reads of the Go runtime"),
        (c.abandoned_calls, "allocator calls never seen returning"),
        (c.sites_overflowed, "things charged to overflow sites (site table full)"),
        (c.decode_errors, "undecodable records"),
    ] {
        if n > 0 {
            missed.push(format!("{n} {what}"));
        }
    }
    if c.sample_bytes > 0 {
        missed
            .push(format!("figures are estimates from sampling every {} on average", bytes(c.sample_bytes)));
    }
    if c.allocator_internal_frees > 0 {
        missed
            .push(format!("{} frees of the allocator's own blocks (not misses)", c.allocator_internal_frees));
    }
    let nothing = missed.iter().all(|m| m.contains("(not misses)")) && c.sample_bytes == 0;
    format!("{} events{}", c.events, if nothing { ", nothing missed".to_string() } else { String::new() })
        + &if missed.is_empty() { String::new() } else { format!("; {}", missed.join(", ")) }
}

/// "at +81.0 MiB/min, the 4.0 GiB limit (RAM) is reached in about 37 min"
fn memory_outlook(report: &Report) -> String {
    let p = &report.process;
    let limit = match (p.memory_limit_bytes, &p.memory_limit_source) {
        (Some(b), Some(source)) => format!("the {} limit ({source})", bytes(b)),
        (Some(b), None) => format!("the {} limit", bytes(b)),
        _ => "the memory limit".to_string(),
    };
    let oom_killed = report.target.end.as_ref().is_some_and(|e| e.how == "oom_kill");
    match (p.rss_bytes_per_min, p.limit_eta_s) {
        (_, _) if oom_killed => format!("{limit} was reached: the OOM killer ended the target"),
        (Some(rate), Some(eta)) => {
            format!("at +{}/min, {limit} is reached in about {}", bytes(rate as u64), duration(eta))
        }
        (Some(rate), None) if rate > 0.0 => format!("RSS growing at +{}/min; {limit}", bytes(rate as u64)),
        (Some(_), None) => format!("RSS not growing; {limit}"),
        _ => format!("too early to tell the trend; {limit}"),
    }
}

fn render_site(rank: usize, s: &SiteReport, out: &mut dyn Write) -> io::Result<()> {
    let via = match &s.backing {
        Some(backing) => format!("{} ({backing})", s.allocator),
        None => s.allocator.clone(),
    };
    let noun = noun(s.kind);
    let memory = matches!(
        s.kind,
        KindName::Heap | KindName::Mmap | KindName::Brk | KindName::Goheap | KindName::Resident
    );
    let growth = if s.bytes_per_min > 0.0 && memory {
        format!(" at +{}/min ({:+.0} {noun}s/min)", bytes(s.bytes_per_min.max(0.0) as u64), s.count_per_min)
    } else if s.count_per_min > 0.0 {
        format!(" at {:+.0} {noun}s/min", s.count_per_min)
    } else {
        String::new()
    };
    let since = s.first_leak_s.map(|t| format!(", a leak since {t:.0} s")).unwrap_or_default();
    let reason =
        s.reason.as_ref().map(|r| format!(", decided at the {}", r.replace('_', " "))).unwrap_or_default();
    let live = if memory {
        format!("{} live in {}", bytes(s.live_bytes), plural(s.live_count, noun))
    } else {
        format!("{} live", plural(s.live_count, noun))
    };
    writeln!(
        out,
        "#{rank} [{}] {} (confidence {:.2}{since}{reason}){growth}: {} via {via}, {live} (made {}, released {}), age p50 {:.1}s p99 {:.1}s max {:.1}s",
        s.id,
        s.verdict.as_str().to_uppercase(),
        s.confidence,
        kind_name(s.kind),
        s.allocs,
        s.frees,
        s.age_s.p50,
        s.age_s.p99,
        s.age_s.max,
    )?;
    render_details(s, out)?;
    if s.frames.is_empty() {
        writeln!(out, "    (no stack)")?;
    }
    for f in &s.frames {
        let function = f.name();
        let place = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            _ => f.address.clone(),
        };
        let module = f.module.as_deref().map(|m| m.rsplit('/').next().unwrap_or(m)).unwrap_or("?");
        writeln!(out, "    {function}  {place}  [{module}]")?;
    }
    if s.stack_truncated {
        writeln!(out, "    ... (stack cut short)")?;
    }
    Ok(())
}

/// What a site's things are called.
fn noun(kind: KindName) -> &'static str {
    match kind {
        KindName::Heap => "block",
        KindName::Mmap => "mapping",
        KindName::Brk => "range",
        KindName::Goroutine => "goroutine",
        KindName::Defer => "deferred call",
        KindName::Fd => "descriptor",
        KindName::Goheap => "object",
        KindName::Resident => "page",
    }
}

/// Per-kind lines under a site's headline.
fn render_details(s: &SiteReport, out: &mut dyn Write) -> io::Result<()> {
    if let Some(d) = &s.descriptors {
        let kinds: Vec<String> = d.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let examples =
            if d.examples.is_empty() { String::new() } else { format!(" ({})", d.examples.join(", ")) };
        writeln!(out, "    descriptors: {}{examples}", kinds.join(", "))?;
    }
    if let Some(g) = &s.goroutines {
        writeln!(out, "    {}", goroutine_line(s.live_count, g))?;
    }
    if let Some(d) = &s.defers {
        writeln!(
            out,
            "    largest pile in one goroutine: {}, oldest waiting {:.1}s",
            d.largest_pile, d.oldest_s
        )?;
    }
    if !s.related_sites.is_empty() {
        writeln!(out, "    holds what these sites made: {}", s.related_sites.join(", "))?;
    }
    Ok(())
}

/// "goroutines of main.fetch.func1: 40 parked (40 chan send) for p50 3.1s max 6.0s, 40
/// can never wake; 2 running"
fn goroutine_line(live: u64, g: &GoroutineDetails) -> String {
    let start = g.start_function.as_deref().unwrap_or("?");
    let parked: u64 = g.wait_reasons.values().sum();
    let mut line = format!("goroutines of {start}: ");
    if parked > 0 {
        let waits: Vec<String> = g.wait_reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        line += &format!(
            "{parked} parked ({}) for p50 {:.1}s max {:.1}s",
            waits.join(", "),
            g.parked_s.p50,
            g.parked_s.max
        );
        if g.blocked_forever > 0 {
            line += &format!(", {} can never wake", g.blocked_forever);
        }
    }
    let running = live.saturating_sub(parked);
    if running > 0 || parked == 0 {
        line += &format!("{}{running} running or runnable", if parked > 0 { "; " } else { "" });
    }
    line
}

fn kind_name(kind: KindName) -> &'static str {
    match kind {
        KindName::Heap => "heap",
        KindName::Mmap => "mmap",
        KindName::Brk => "brk",
        KindName::Goroutine => "goroutine",
        KindName::Defer => "defer",
        KindName::Fd => "fd",
        KindName::Goheap => "goheap",
        KindName::Resident => "resident",
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// Bytes in binary units, exact below 1 KiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rough duration: "45 s", "37 min", "2 h 10 min", "3 days".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", (s + 30) / 60),
        5400..=172_799 => format!("{} h {} min", s / 3600, (s % 3600 + 30) / 60),
        _ => format!("{} days", (s + 43_200) / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(80 << 20), "80.0 MiB");
    }

    #[test]
    fn durations_are_rough() {
        assert_eq!(duration(45.2), "45 s");
        assert_eq!(duration(37.0 * 60.0 + 10.0), "37 min");
        assert_eq!(duration(2.0 * 3600.0 + 600.0), "2 h 10 min");
        assert_eq!(duration(3.0 * 86_400.0), "3 days");
    }
}
