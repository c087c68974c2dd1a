//! The human-readable report: what an on-call engineer reads first. Leak suspects come
//! first; other sites only with `--all`.

use std::io::{self, Write};

use super::model::{Report, SiteReport};

pub fn render(report: &Report, all: bool, out: &mut dyn Write) -> io::Result<()> {
    let t = &report.target;
    writeln!(
        out,
        "== leaktracer {} report: pid {} {} at {} ({:.1} s traced) ==",
        if report.is_final { "final" } else { "interim" },
        t.pid,
        t.exe,
        report.time,
        report.elapsed_s
    )?;
    let p = &report.process;
    writeln!(
        out,
        "process: RSS {}, live heap {} in {} blocks, live mappings {}, allocator arenas {}",
        p.rss_bytes.map_or_else(|| "unknown".to_string(), bytes),
        bytes(p.heap_live_bytes),
        p.heap_live_blocks,
        bytes(p.mapped_live_bytes),
        bytes(p.allocator_reserved_bytes),
    )?;
    writeln!(out, "memory: {}", memory_outlook(report))?;
    let c = &report.coverage;
    let mut missed = Vec::new();
    for (n, what) in [
        (c.lost_events, "events lost (ring buffer full; try --ring-mib)"),
        (c.dropped, "allocations dropped (kernel map full)"),
        (c.stack_errors, "stack errors"),
        (c.truncated_stacks, "truncated stacks"),
        (c.unknown_frees, "frees of blocks not seen allocated (before attach, or by the allocator itself)"),
        (c.unknown_unmaps, "unmaps of ranges mapped before attach"),
        (c.address_reused, "missed frees"),
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
    writeln!(
        out,
        "coverage: {} events{}",
        c.events,
        if missed.is_empty() { ", nothing missed".to_string() } else { format!("; {}", missed.join(", ")) }
    )?;
    let suspects = report.sites.iter().filter(|s| s.verdict.is_suspect()).count();
    let shown: Vec<&SiteReport> = report.sites.iter().filter(|s| all || s.verdict.is_suspect()).collect();
    writeln!(
        out,
        "sites: {} seen, {} with memory outstanding, {suspects} growing{}",
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

/// "at +81.0 MiB/min, the 4.0 GiB limit (RAM) is reached in about 37 min"
fn memory_outlook(report: &Report) -> String {
    let p = &report.process;
    let limit = match (p.memory_limit_bytes, &p.memory_limit_source) {
        (Some(b), Some(source)) => format!("the {} limit ({source})", bytes(b)),
        (Some(b), None) => format!("the {} limit", bytes(b)),
        _ => "the memory limit".to_string(),
    };
    match (p.rss_bytes_per_min, p.limit_eta_s) {
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
    let growth = if s.bytes_per_min > 0.0 || s.count_per_min > 0.0 {
        format!(" at +{}/min ({:+.0} blocks/min)", bytes(s.bytes_per_min.max(0.0) as u64), s.count_per_min)
    } else {
        String::new()
    };
    let since = s.first_leak_s.map(|t| format!(", a leak since {t:.0} s")).unwrap_or_default();
    writeln!(
        out,
        "#{rank} [{}] {} (confidence {:.2}{since}){growth}: {} via {via}, {} live in {} (allocated {}, freed {}), age p50 {:.1}s p99 {:.1}s max {:.1}s",
        s.id,
        s.verdict.as_str().to_uppercase(),
        s.confidence,
        kind_name(s.kind),
        bytes(s.live_bytes),
        plural(s.live_count, "block"),
        s.allocs,
        s.frees,
        s.age_s.p50,
        s.age_s.p99,
        s.age_s.max,
    )?;
    if s.frames.is_empty() {
        writeln!(out, "    (no stack)")?;
    }
    for f in &s.frames {
        let function = f.function.as_deref().unwrap_or("??");
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

fn kind_name(kind: super::model::KindName) -> &'static str {
    use super::model::KindName;
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
