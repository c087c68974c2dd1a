//! Growth verdicts: every site's live figures are sampled on a fixed tick; each site (as
//! reports group them) gets a verdict, a confidence and its current growth rates, and the
//! process its memory limit and the time left until it is reached.

pub mod classify;
mod death;
mod material;
pub mod series;
pub mod trend;

use std::collections::HashMap;

pub use self::classify::{Assessment, Verdict};
pub use self::series::{Process, ProcessSample};
use self::{
    classify::assess,
    material::{Measure, material},
    series::SeriesStore,
    trend::theil_sen,
};
use crate::{
    aggregate::sites::{SiteIdx, Sites},
    config::MinGrowth,
    identify::Group,
};

/// Samples kept per series (then the resolution halves).
const SERIES_CAPACITY: usize = 240;

/// A site's verdict, as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteVerdict {
    pub verdict: Verdict,
    pub confidence: f64,
    pub count_per_min: f64,
    pub bytes_per_min: f64,
    /// Seconds after the start of tracing at which the site was first called a leak.
    pub first_leak_s: Option<f64>,
    /// Why, when not the usual trend tests: `oom_kill`.
    pub reason: Option<&'static str>,
}

pub struct Verdicts {
    series: SeriesStore,
    /// By the group's first raw site (its id).
    latest: HashMap<SiteIdx, SiteVerdict>,
    first_leak: HashMap<SiteIdx, f64>,
    /// Growth below this is not reported (`--min-growth`).
    floor: MinGrowth,
}

impl Default for Verdicts {
    fn default() -> Self {
        Self::new(MinGrowth::default())
    }
}

impl Verdicts {
    pub fn new(floor: MinGrowth) -> Self {
        Self {
            series: SeriesStore::new(SERIES_CAPACITY),
            latest: HashMap::new(),
            first_leak: HashMap::new(),
            floor,
        }
    }

    /// Records every site's live figures, and the process-wide ones, at `t` seconds.
    /// `in_flight` are things not to count, by site: goroutines a second old or less, or
    /// running (a churning site is full of them at any instant, more so on a loaded
    /// machine), not a leak, whose goroutines wait and stay.
    pub fn sample(&mut self, t: f64, sites: &Sites, process: ProcessSample, in_flight: &[(SiteIdx, u32)]) {
        self.series.sample(t, sites, process, in_flight);
    }

    /// Judges every group of sites on its series so far.
    pub fn evaluate(&mut self, groups: &[Group]) {
        let now = self.series.times().last().copied().unwrap_or(0.0);
        for group in groups.iter().filter(|g| !g.runtime_heap) {
            let id = group.first;
            let (t, counts, bytes) = self.series.group(&group.members);
            let mut by_bytes = assess(&t, &bytes);
            let mut by_count = assess(&t, &counts);
            // A trend, up or down, is only worth a verdict when it is material.
            let moved = |v: Verdict| v.is_growing() || matches!(v, Verdict::Plateau | Verdict::Shrinking);
            if moved(by_bytes.verdict) && !material(&t, &bytes, &by_bytes, Measure::Bytes, &self.floor) {
                by_bytes.verdict = Verdict::Stable;
            }
            if moved(by_count.verdict) && !material(&t, &counts, &by_count, Measure::Count, &self.floor) {
                by_count.verdict = Verdict::Stable;
            }
            let (verdict, confidence) = combine(by_bytes, by_count);
            if verdict == Verdict::Leak {
                self.first_leak.entry(id).or_insert(now);
            }
            self.latest.insert(
                id,
                SiteVerdict {
                    verdict,
                    confidence,
                    count_per_min: by_count.per_min,
                    bytes_per_min: by_bytes.per_min,
                    first_leak_s: self.first_leak.get(&id).copied(),
                    reason: None,
                },
            );
        }
    }

    /// The target was killed for its memory: sites that rose to the end and hold most of
    /// the growth are leaks even on fewer samples than the usual tests need.
    pub fn at_death(&mut self, groups: &[Group]) {
        let series: Vec<(SiteIdx, Vec<f64>)> =
            groups.iter().map(|g| (g.first, self.series.group(&g.members).2)).collect();
        let total: f64 = series.iter().map(|(_, y)| death::rise(y).max(0.0)).sum();
        let now = self.series.times().last().copied().unwrap_or(0.0);
        for (id, y) in series {
            let Some(confidence) = death::leak_at_death(&y, total) else { continue };
            let Some(v) = self.latest.get_mut(&id) else { continue };
            if v.verdict != Verdict::Leak {
                *v = SiteVerdict { verdict: Verdict::Leak, confidence, reason: Some("oom_kill"), ..*v };
                v.first_leak_s = Some(*self.first_leak.entry(id).or_insert(now));
            }
        }
    }

    /// Whether any site is judged a leak now.
    pub fn any_leak(&self) -> bool {
        self.latest.values().any(|v| v.verdict == Verdict::Leak)
    }

    /// The verdict of the group whose id (first raw site) is `id`.
    pub fn get(&self, id: SiteIdx) -> Option<&SiteVerdict> {
        self.latest.get(&id)
    }

    /// Current growth of a process-wide figure, per second (Theil-Sen over the last
    /// third of the samples), when there are enough samples to say.
    pub fn growth(&self, which: Process) -> Option<f64> {
        let (t, v) = self.series.process(which);
        if t.len() < 6 {
            return None;
        }
        let tail = (t.len() / 3).max(6).min(t.len());
        Some(theil_sen(&t[t.len() - tail..], &v[v.len() - tail..]))
    }
}

/// One verdict from the bytes and the counts: a leak in either is a leak; otherwise the
/// bytes speak, unless they are stable and the counts are not.
fn combine(bytes: Assessment, count: Assessment) -> (Verdict, f64) {
    let leak = [bytes, count].into_iter().filter(|a| a.verdict == Verdict::Leak);
    if let Some(best) = leak.max_by(|a, b| a.confidence.total_cmp(&b.confidence)) {
        return (Verdict::Leak, best.confidence);
    }
    if bytes.verdict == Verdict::Stable && count.verdict != Verdict::Stable {
        return (count.verdict, count.confidence);
    }
    (bytes.verdict, bytes.confidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::sites::{SiteKey, SiteKind},
        stacks::StackId,
    };

    #[test]
    fn a_leak_is_remembered_from_when_it_was_first_seen() {
        let mut sites = Sites::default();
        let leak = sites.intern(SiteKey { kind: SiteKind::Heap, stack: Some(StackId(1)), detail: 1 });
        let flat = sites.intern(SiteKey { kind: SiteKind::Heap, stack: Some(StackId(2)), detail: 1 });
        sites.get_mut(flat).born(100, 1.0);
        let mut verdicts = Verdicts::default();
        for tick in 0..40 {
            sites.get_mut(leak).born(64, 1.0);
            let rss = Some(1_000_000 + 4096 * u64::from(tick as u32));
            verdicts.sample(f64::from(tick) * 0.5, &sites, ProcessSample { rss, ..Default::default() }, &[]);
            let groups = [
                Group { first: leak, members: vec![leak], runtime_heap: false },
                Group { first: flat, members: vec![flat], runtime_heap: false },
            ];
            verdicts.evaluate(&groups);
        }
        let v = verdicts.get(leak).unwrap();
        assert_eq!(v.verdict, Verdict::Leak);
        // Twenty samples at half a second: a leak from 9.5 s on.
        assert_eq!(v.first_leak_s, Some(9.5), "{v:?}");
        assert!((v.bytes_per_min - 64.0 * 120.0).abs() < 1e-6);
        assert!((v.count_per_min - 120.0).abs() < 1e-6);
        assert_eq!(verdicts.get(flat).unwrap().verdict, Verdict::Stable);
        assert_eq!(verdicts.get(flat).unwrap().first_leak_s, None);
        assert!((verdicts.growth(Process::Rss).unwrap() - 8192.0).abs() < 1e-6);
    }

    #[test]
    fn a_realloc_grown_buffer_leaks_in_bytes_with_one_block() {
        let bytes = Assessment { verdict: Verdict::Leak, confidence: 0.9, per_min: 10.0 };
        let count = Assessment { verdict: Verdict::Stable, confidence: 1.0, per_min: 0.0 };
        assert_eq!(combine(bytes, count), (Verdict::Leak, 0.9));
        let cyclic = Assessment { verdict: Verdict::Cyclic, confidence: 0.8, per_min: 0.0 };
        assert_eq!(combine(cyclic, count).0, Verdict::Cyclic);
        assert_eq!(combine(count, cyclic).0, Verdict::Cyclic);
    }
}
