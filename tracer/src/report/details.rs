//! What a report says of a site beyond its figures, by kind: what a descriptor site's
//! descriptors are (read from `/proc/PID/fd` while the target lives); what a goroutine
//! site's goroutines wait on, how long, and whether they can ever wake; a defer site's
//! largest pile; which descriptor sites a defer pile holds open.

use super::{
    GoFacts, Inputs, ReportContext,
    model::{DeferDetails, Descriptors, GcCycles, GoroutineDetails, KindName, ParkedTimes, SiteReport},
};
use crate::{
    aggregate::{Aggregator, sites::SiteIdx},
    identify::Group,
    target::proc,
};

/// Wait reasons of goroutines that nothing can ever wake.
const FOREVER: [&str; 3] = ["chan receive (nil chan)", "chan send (nil chan)", "select (no cases)"];

/// The raw site whose stack a group shows: the first, or for goroutines and defers (one
/// site per statement) the one with the longest stack (goroutines found at attach only
/// have their `go` statement).
pub fn shown_member(group: &Group, agg: &Aggregator) -> SiteIdx {
    let len = |m: SiteIdx| {
        agg.sites.get(m).key.stack.and_then(|id| agg.stacks.get(id)).map_or(0, |s| s.frames.len())
    };
    group.members.iter().copied().max_by_key(|&m| (len(m), std::cmp::Reverse(m))).unwrap_or(group.first)
}

/// What a goroutine site's live goroutines are doing.
pub fn goroutines(
    group: &Group,
    inputs: &Inputs<'_>,
    ctx: &ReportContext<'_>,
    startpc: u64,
) -> GoroutineDetails {
    let names = ctx.go.as_ref().map_or(&[][..], |g: &GoFacts<'_>| g.wait_reasons);
    let mut out = GoroutineDetails {
        start_function: inputs.identities.start_function(startpc).map(str::to_string),
        ..GoroutineDetails::default()
    };
    let mut parked_s = Vec::new();
    for park in group.members.iter().flat_map(|&m| inputs.agg.parks_of(m)).flatten() {
        let reason = names
            .get(park.reason as usize)
            .cloned()
            .unwrap_or_else(|| format!("wait reason {}", park.reason));
        let forever =
            park.leaked || FOREVER.contains(&reason.as_str()) || (reason == "select" && !park.waiting);
        out.blocked_forever += u64::from(forever);
        *out.wait_reasons.entry(reason).or_default() += 1;
        parked_s.push(ctx.now_ns.saturating_sub(park.since_ns) as f64 / 1e9);
    }
    parked_s.sort_by(f64::total_cmp);
    if let Some(&max) = parked_s.last() {
        out.parked_s = ParkedTimes { p50: round1(parked_s[parked_s.len() / 2]), max: round1(max) };
    }
    out
}

/// A defer site's largest pile and how long its oldest call has waited.
pub fn defers(group: &Group, agg: &Aggregator, now_ns: u64) -> DeferDetails {
    let largest = group.members.iter().filter_map(|&m| agg.largest_pile(m)).max_by_key(|(n, _)| *n);
    largest.map_or_else(DeferDetails::default, |(n, oldest)| DeferDetails {
        largest_pile: n,
        oldest_s: round1(now_ns.saturating_sub(oldest) as f64 / 1e9),
    })
}

/// Collections a Go heap site's live samples have survived: median and most.
pub fn gc_cycles(group: &Group, agg: &Aggregator) -> Option<GcCycles> {
    let mut ages: Vec<u64> = group.members.iter().flat_map(|&m| agg.goheap.cycles_survived(m)).collect();
    ages.sort_unstable();
    Some(GcCycles { p50: *ages.get(ages.len() / 2)?, max: *ages.last()? })
}

/// A defer pile holds open what its deferred calls would close: the descriptor sites
/// made from the same function as the `defer` statement.
pub fn relate_defers_to_descriptors(sites: &mut [SiteReport]) {
    let function = |s: &SiteReport| s.frames.first().and_then(|f| f.function.clone());
    let fds: Vec<(String, Vec<String>)> = sites
        .iter()
        .filter(|s| s.kind == KindName::Fd)
        .map(|s| (s.id.clone(), s.frames.iter().filter_map(|f| f.function.clone()).collect()))
        .collect();
    for site in sites.iter_mut().filter(|s| s.kind == KindName::Defer) {
        let Some(function) = function(site) else { continue };
        site.related_sites =
            fds.iter().filter(|(_, frames)| frames.contains(&function)).map(|(id, _)| id.clone()).collect();
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Descriptors looked at per site and report at most (each is a readlink).
const MAX_LOOKED_AT: usize = 1000;
const EXAMPLES: usize = 5;

/// What the live descriptors of a group are: `socket`, `pipe`, `file`, or the kernel's
/// own name (`anon_inode:[eventfd]`), counted; a few of the files.
pub fn descriptors(pid: u32, group: &Group, agg: &Aggregator) -> Descriptors {
    let mut out = Descriptors::default();
    let fds = group.members.iter().flat_map(|&m| agg.fds_of(m)).take(MAX_LOOKED_AT);
    for fd in fds {
        let Some(target) = proc::fd_target(pid, fd) else { continue };
        let kind = kind_of(&target);
        if kind == "file" && out.examples.len() < EXAMPLES && !out.examples.contains(&target) {
            out.examples.push(target.clone());
        }
        *out.kinds.entry(kind.to_string()).or_default() += 1;
    }
    out
}

fn kind_of(link: &str) -> &str {
    if link.starts_with('/') {
        "file"
    } else if link.starts_with("socket:") {
        "socket"
    } else if link.starts_with("pipe:") {
        "pipe"
    } else {
        // `anon_inode:[eventfd]`, `anon_inode:[pidfd]`, ...: the kernel's name, whole.
        link.find(']').map_or(link, |i| &link[..=i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_links_are_classified() {
        assert_eq!(kind_of("/tmp/x"), "file");
        assert_eq!(kind_of("socket:[1234]"), "socket");
        assert_eq!(kind_of("pipe:[99]"), "pipe");
        assert_eq!(kind_of("anon_inode:[eventfd]"), "anon_inode:[eventfd]");
        assert_eq!(kind_of("anon_inode:[pidfd]"), "anon_inode:[pidfd]");
    }
}
