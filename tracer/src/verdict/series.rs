//! Time series of every site's live figures, sampled on a fixed tick. Memory stays
//! bounded however long the run: when the series fill up, every other sample is dropped
//! and the resolution halves.

use crate::aggregate::sites::{SiteIdx, Sites};

#[derive(Debug, Default, Clone)]
struct SiteSeries {
    /// Index in `times` of this site's first sample (it did not exist before).
    start: usize,
    // f32: a series is for trends, and this halves its memory.
    counts: Vec<f32>,
    bytes: Vec<f32>,
}

/// Process-wide figures sampled with the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Resident set size, bytes.
    Rss = 0,
    /// Open file descriptors.
    Fds = 1,
    /// Live goroutines.
    Goroutines = 2,
}

const PROCESS_SERIES: usize = 3;

/// One sample of the process-wide figures; `None` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    pub rss: Option<u64>,
    pub fds: Option<u64>,
    pub goroutines: Option<u64>,
}

#[derive(Debug)]
pub struct SeriesStore {
    capacity: usize,
    /// Seconds since tracing started.
    times: Vec<f64>,
    /// Process-wide figures by `Process`, NaN when unknown.
    process: [Vec<f64>; PROCESS_SERIES],
    sites: Vec<SiteSeries>,
}

impl SeriesStore {
    /// `capacity`: samples kept per series (at least 8).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(8), times: Vec::new(), process: Default::default(), sites: Vec::new() }
    }

    /// Takes one sample of every site's running figures at `t`.
    pub fn sample(&mut self, t: f64, sites: &Sites, process: ProcessSample, in_flight: &[(SiteIdx, u32)]) {
        if self.times.len() == self.capacity {
            self.halve();
        }
        let index = self.times.len();
        self.times.push(t);
        let values = [process.rss, process.fds, process.goroutines];
        for (series, value) in self.process.iter_mut().zip(values) {
            series.push(value.map_or(f64::NAN, |v| v as f64));
        }
        self.sites.resize_with(sites.len(), || SiteSeries { start: index, ..SiteSeries::default() });
        for (idx, site) in sites.iter() {
            let series = &mut self.sites[idx as usize];
            series.counts.push(site.live_count as f32);
            series.bytes.push(site.live_bytes as f32);
        }
        for &(idx, n) in in_flight {
            if let Some(count) = self.sites.get_mut(idx as usize).and_then(|s| s.counts.last_mut()) {
                *count = (*count - n as f32).max(0.0);
            }
        }
    }

    /// Keeps every other sample (those at even indexes), everywhere alike.
    fn halve(&mut self) {
        let even = |v: &mut Vec<f64>| *v = v.iter().copied().step_by(2).collect();
        even(&mut self.times);
        for series in &mut self.process {
            even(series);
        }
        for s in &mut self.sites {
            // Local index i is global start + i; keep the even global ones.
            let skip = s.start % 2;
            s.counts = s.counts.iter().copied().skip(skip).step_by(2).collect();
            s.bytes = s.bytes.iter().copied().skip(skip).step_by(2).collect();
            s.start = s.start.div_ceil(2);
        }
    }

    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// The summed (counts, bytes) series of a group of sites, from the first sample of
    /// its oldest member, with the times they were taken at.
    pub fn group(&self, members: &[SiteIdx]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let series: Vec<&SiteSeries> = members.iter().filter_map(|&m| self.sites.get(m as usize)).collect();
        let Some(start) = series.iter().map(|s| s.start).min() else {
            return (Vec::new(), Vec::new(), Vec::new());
        };
        let len = self.times.len() - start;
        let (mut counts, mut bytes) = (vec![0.0; len], vec![0.0; len]);
        for s in series {
            let offset = s.start - start;
            for (i, (c, b)) in s.counts.iter().zip(&s.bytes).enumerate() {
                counts[offset + i] += f64::from(*c);
                bytes[offset + i] += f64::from(*b);
            }
        }
        (self.times[start..].to_vec(), counts, bytes)
    }

    /// The known samples of a process-wide figure, with their times.
    pub fn process(&self, which: Process) -> (Vec<f64>, Vec<f64>) {
        let series = &self.process[which as usize];
        self.times.iter().zip(series).filter(|(_, v)| !v.is_nan()).map(|(t, v)| (*t, *v)).unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::sites::{SiteKey, SiteKind},
        stacks::StackId,
    };

    fn key(i: u64) -> SiteKey {
        SiteKey { kind: SiteKind::Heap, stack: Some(StackId(i)), detail: 1 }
    }

    #[test]
    fn sites_born_later_start_later_and_groups_sum() {
        let mut sites = Sites::default();
        let mut store = SeriesStore::new(100);
        let a = sites.intern(key(1));
        for t in 0..3 {
            sites.get_mut(a).born(10, 1.0);
            store.sample(f64::from(t), &sites, ProcessSample { rss: Some(100), ..Default::default() }, &[]);
        }
        let b = sites.intern(key(2));
        sites.get_mut(b).born(5, 1.0);
        store.sample(3.0, &sites, ProcessSample::default(), &[]);
        let (t, counts, bytes) = store.group(&[a, b]);
        assert_eq!(t, [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(counts, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(bytes, [10.0, 20.0, 30.0, 35.0]);
        assert_eq!(store.group(&[b]), (vec![3.0], vec![1.0], vec![5.0]));
        assert_eq!(store.process(Process::Rss), (vec![0.0, 1.0, 2.0], vec![100.0; 3]));
    }

    #[test]
    fn memory_is_bounded_and_alignment_survives_halving() {
        let mut sites = Sites::default();
        let mut store = SeriesStore::new(16);
        let a = sites.intern(key(1));
        let mut b = None;
        for t in 0..1000u32 {
            if t == 7 {
                b = Some(sites.intern(key(2)));
            }
            sites.get_mut(a).born(1, 1.0);
            if let Some(b) = b {
                sites.get_mut(b).born(2, 1.0);
            }
            store.sample(f64::from(t), &sites, ProcessSample::default(), &[]);
            assert!(store.times().len() <= 16);
        }
        // Every sample still says live count = t + 1 for a, and 2 * (t - 6) bytes for b.
        let (t, counts, _) = store.group(&[a]);
        for (t, c) in t.iter().zip(&counts) {
            assert_eq!(*c, t + 1.0);
        }
        let (t, _, bytes) = store.group(&[b.unwrap()]);
        assert!(t[0] >= 7.0);
        for (t, v) in t.iter().zip(&bytes) {
            assert_eq!(*v, 2.0 * (t - 6.0));
        }
    }
}
