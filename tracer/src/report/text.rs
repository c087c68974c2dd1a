//! The human-readable report: what an on-call engineer reads first.

use std::io::{self, Write};

use super::model::{Report, SiteReport};

pub fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
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
    writeln!(
        out,
        "coverage: {} events{}",
        c.events,
        if missed.is_empty() { ", nothing missed".to_string() } else { format!("; {}", missed.join(", ")) }
    )?;
    writeln!(
        out,
        "sites: {} seen, {} with memory outstanding{}",
        report.totals.sites,
        report.totals.live_sites,
        if report.sites.is_empty() {
            String::new()
        } else {
            format!("; {} shown, largest first", report.sites.len())
        }
    )?;
    for (i, site) in report.sites.iter().enumerate() {
        writeln!(out)?;
        render_site(i + 1, site, out)?;
    }
    writeln!(out)
}

fn render_site(rank: usize, s: &SiteReport, out: &mut dyn Write) -> io::Result<()> {
    let via = match &s.backing {
        Some(backing) => format!("{} ({backing})", s.allocator),
        None => s.allocator.clone(),
    };
    writeln!(
        out,
        "#{rank} [{}] {} via {via}: {} live in {} (allocated {}, freed {}), age p50 {:.1}s p99 {:.1}s max {:.1}s, verdict {}",
        s.id,
        s.kind,
        bytes(s.live_bytes),
        plural(s.live_count, "block"),
        s.allocs,
        s.frees,
        s.age_s.p50,
        s.age_s.p99,
        s.age_s.max,
        s.verdict,
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
}
