//! pprof profiles (gzipped `profile.proto`). Three of them:
//! - memory (`--format pprof`): the native memory sites, as Go's heap profile names
//!   things: sample types `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes` (the default);
//! - the Go heap (`<name>.goheap.pb.gz`, Go programs): the same sample types over the Go
//!   heap sites, estimates scaled from the runtime's samples as `go tool pprof` scales
//!   the runtime's own, with the sampling rate as the period;
//! - goroutines (`<name>.goroutine.pb.gz`, Go programs): `goroutine/count`, live
//!   goroutines by creation stack (`/debug/pprof/goroutine` shows where they are now).
//!
//! One sample per site, with the site's id and verdict (and a goroutine's start function)
//! as labels. Mappings carry build ids; locations (with inlined functions as extra
//! lines), functions and strings are deduplicated, ids dense from 1. The same report
//! always encodes to the same bytes.

use std::{collections::HashMap, io::Write as _, time::UNIX_EPOCH};

use flate2::{Compression, GzBuilder};
use prost::Message as _;

use super::{
    folded::exported_sites,
    model::{FrameReport, KindName, Report, SiteReport},
};
use crate::config::ExportOptions;

/// Which profile of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Memory,
    GoHeap,
    Goroutine,
}

impl ProfileKind {
    /// The Go profiles, written beside the memory profile of a Go program.
    pub const GO: [ProfileKind; 2] = [ProfileKind::Goroutine, ProfileKind::GoHeap];

    /// What goes between the name and `.pb.gz` of a Go profile's file.
    pub fn infix(self) -> &'static str {
        match self {
            ProfileKind::Memory => "",
            ProfileKind::GoHeap => "goheap",
            ProfileKind::Goroutine => "goroutine",
        }
    }

    fn sample_types(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProfileKind::Memory | ProfileKind::GoHeap => &[
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
            ],
            ProfileKind::Goroutine => &[("goroutine", "count")],
        }
    }

    fn values(self, site: &SiteReport) -> Vec<u64> {
        match self {
            ProfileKind::Memory | ProfileKind::GoHeap => {
                vec![site.allocs, site.alloc_bytes, site.live_count, site.live_bytes]
            }
            ProfileKind::Goroutine => vec![site.live_count],
        }
    }

    fn includes(self, site: &SiteReport) -> bool {
        match self {
            ProfileKind::Memory => site.kind != KindName::Goheap,
            ProfileKind::GoHeap => site.kind == KindName::Goheap,
            ProfileKind::Goroutine => site.kind == KindName::Goroutine,
        }
    }

    /// The period: the Go heap is sampled every MemProfileRate bytes on average.
    fn period(self, report: &Report) -> (&'static str, &'static str, i64) {
        match self {
            ProfileKind::Memory => ("space", "bytes", 1),
            ProfileKind::GoHeap => (
                "space",
                "bytes",
                report.coverage.go_mem_profile_rate.map_or(1, |r| i64::try_from(r).unwrap_or(1)),
            ),
            ProfileKind::Goroutine => ("goroutine", "count", 1),
        }
    }
}

#[allow(clippy::all, clippy::pedantic, reason = "generated code")]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// A location's identity: mapping, address, and (function, line) of each line.
type LocationKey = (u64, u64, Vec<(u64, i64)>);

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<String, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let (name, filename) = (self.string(name), self.string(file));
        self.functions.push(Function { id, name, system_name: name, filename, start_line: 0 });
        self.function_ids.insert(key, id);
        id
    }

    /// One location for the frames of one address (inlined functions first).
    fn location(&mut self, frames: &[&FrameReport]) -> u64 {
        let first = frames[0];
        let address = parse_address(&first.address);
        let mapping_id = first.module.as_ref().and_then(|m| self.mapping_ids.get(m).copied()).unwrap_or(0);
        let lines: Vec<(u64, i64)> = frames
            .iter()
            .filter_map(|f| {
                let name = f.function.as_deref()?;
                Some((self.function(name, f.file.as_deref().unwrap_or("")), i64::from(f.line.unwrap_or(0))))
            })
            .collect();
        let key = (mapping_id, address, lines.clone());
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        if mapping_id != 0 {
            let m = &mut self.mappings[mapping_id as usize - 1];
            m.has_functions |= !lines.is_empty();
            m.has_filenames |= frames.iter().any(|f| f.file.is_some());
            m.has_line_numbers |= frames.iter().any(|f| f.line.is_some());
            m.has_inline_frames |= lines.len() > 1;
        }
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line: lines.into_iter().map(|(function_id, line)| Line { function_id, line }).collect(),
        });
        self.location_ids.insert(key, id);
        id
    }
}

fn parse_address(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap_or(0)
}

/// The gzipped memory profile of a report.
pub fn pprof(report: &Report, only_leaks: bool) -> std::io::Result<Vec<u8>> {
    profile(report, ProfileKind::Memory, only_leaks)
}

/// The gzipped profile of one kind of a report.
pub fn profile(report: &Report, kind: ProfileKind, only_leaks: bool) -> std::io::Result<Vec<u8>> {
    // Every kind the profile includes, whether or not text and folded show it.
    let export = ExportOptions { only_leaks, also: crate::config::Kinds::all(), ..ExportOptions::default() };
    let mut b = Builder::default();
    b.string("");
    mappings(&mut b, report);
    let value_type =
        |b: &mut Builder, kind: &str, unit: &str| ValueType { r#type: b.string(kind), unit: b.string(unit) };
    let sample_type: Vec<ValueType> =
        kind.sample_types().iter().map(|(t, u)| value_type(&mut b, t, u)).collect();
    let (period_kind, period_unit, period) = kind.period(report);
    let period_type = value_type(&mut b, period_kind, period_unit);
    let samples: Vec<Sample> = exported_sites(report, &export)
        .filter(|site| kind.includes(site))
        .map(|site| sample(&mut b, site, kind))
        .collect();
    let end = humantime::parse_rfc3339(&report.time)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let duration_nanos = (report.elapsed_s * 1e9) as i64;
    let what = if kind == ProfileKind::Goroutine { ": live goroutines by creation stack" } else { "" };
    let comment = vec![b.string(&format!(
        "leaktracer {}: pid {} {}{what}",
        env!("CARGO_PKG_VERSION"),
        report.target.pid,
        report.target.exe
    ))];
    let default_sample_type = b.string(kind.sample_types().last().map_or("", |(t, _)| t));
    let profile = Profile {
        sample_type,
        sample: samples,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        time_nanos: end - duration_nanos,
        duration_nanos,
        period_type: Some(period_type),
        period,
        comment,
        default_sample_type,
    };
    // No name and no time in the gzip header: the same report, the same bytes.
    let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
}

fn mappings(b: &mut Builder, report: &Report) {
    for module in &report.modules {
        let id = b.mappings.len() as u64 + 1;
        let filename = b.string(&module.path);
        let build_id = module.build_id.as_deref().map_or(0, |id| b.string(id));
        b.mappings.push(Mapping {
            id,
            memory_start: module.start,
            memory_limit: module.end,
            file_offset: module.file_offset,
            filename,
            build_id,
            ..Mapping::default()
        });
        b.mapping_ids.insert(module.path.clone(), id);
    }
}

/// One site's sample: its stack as locations (frames of one address share one), its
/// values, its labels.
fn sample(b: &mut Builder, site: &SiteReport, kind: ProfileKind) -> Sample {
    let mut location_id = Vec::new();
    let mut i = 0;
    while i < site.frames.len() {
        let same: Vec<&FrameReport> =
            site.frames[i..].iter().take_while(|f| f.address == site.frames[i].address).collect();
        i += same.len();
        location_id.push(b.location(&same));
    }
    let mut label = Vec::new();
    let mut add = |b: &mut Builder, key: &str, value: &str| {
        label.push(Label { key: b.string(key), str: b.string(value), ..Label::default() });
    };
    add(b, "site", &site.id);
    add(b, "verdict", site.verdict.as_str());
    if let Some(start) = site.goroutines.as_ref().and_then(|g| g.start_function.as_deref()) {
        add(b, "start_function", start);
    }
    let value = kind.values(site).into_iter().map(|v| i64::try_from(v).unwrap_or(i64::MAX)).collect();
    Sample { location_id, value, label }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::report::{
        folded::tests::{report, site},
        model::VerdictName,
    };

    fn decode(bytes: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        Profile::decode(&*raw).unwrap()
    }

    #[test]
    fn heap_profile_with_dense_ids_and_shared_locations() {
        let mut inlined =
            site("s2", VerdictName::Stable, (1, 8), &[(Some("helper"), "0x1100"), (Some("outer"), "0x1100")]);
        inlined
            .frames
            .push(site("x", VerdictName::Unknown, (0, 0), &[(Some("main"), "0x1200")]).frames.remove(0));
        let r = report(vec![
            site("s1", VerdictName::Leak, (3, 300), &[(Some("intern"), "0x1010"), (Some("main"), "0x1200")]),
            inlined,
        ]);
        let bytes = pprof(&r, false).unwrap();
        assert_eq!(bytes, pprof(&r, false).unwrap(), "deterministic");
        let p = decode(&bytes);
        assert_eq!(p.string_table[0], "");
        let name = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<&str> = p.sample_type.iter().map(|t| name(t.r#type)).collect();
        assert_eq!(types, ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]);
        assert_eq!(name(p.default_sample_type), "inuse_space");
        assert_eq!(p.sample[0].value, [3, 300, 3, 300]);
        // main is one location for both samples; helper is inlined into outer.
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.sample[0].location_id.last(), p.sample[1].location_id.last());
        let inlined = &p.location[p.sample[1].location_id[0] as usize - 1];
        assert_eq!(inlined.line.len(), 2);
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
            assert_eq!(l.mapping_id, 1);
        }
        assert_eq!(name(p.mapping[0].build_id), "abcd");
        assert!(p.mapping[0].has_inline_frames);
        // Only leaks.
        assert_eq!(decode(&pprof(&r, true).unwrap()).sample.len(), 1);
    }
}
