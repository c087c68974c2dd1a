//! pprof heap profiles (gzipped `profile.proto`), as Go's heap profile names things:
//! sample types `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`,
//! `inuse_space/bytes` (the default), one sample per site, with the site's id and verdict
//! as labels. Mappings carry build ids; locations (with inlined functions as extra
//! lines), functions and strings are deduplicated, ids dense from 1. The same report
//! always encodes to the same bytes.

use std::{collections::HashMap, io::Write as _, time::UNIX_EPOCH};

use flate2::{Compression, GzBuilder};
use prost::Message as _;

use super::{
    folded::exported_sites,
    model::{FrameReport, Report},
};
use crate::config::ExportOptions;

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

/// The gzipped profile of a report.
pub fn pprof(report: &Report, only_leaks: bool) -> std::io::Result<Vec<u8>> {
    let memory = ExportOptions { only_leaks, ..ExportOptions::default() };
    let mut b = Builder::default();
    b.string("");
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
    let value_type =
        |b: &mut Builder, kind: &str, unit: &str| ValueType { r#type: b.string(kind), unit: b.string(unit) };
    let sample_type = vec![
        value_type(&mut b, "alloc_objects", "count"),
        value_type(&mut b, "alloc_space", "bytes"),
        value_type(&mut b, "inuse_objects", "count"),
        value_type(&mut b, "inuse_space", "bytes"),
    ];
    let period_type = value_type(&mut b, "space", "bytes");
    let (site_key, verdict_key) = (b.string("site"), b.string("verdict"));

    let mut samples = Vec::new();
    for site in exported_sites(report, &memory) {
        let mut location_id = Vec::new();
        let mut i = 0;
        while i < site.frames.len() {
            let same: Vec<&FrameReport> =
                site.frames[i..].iter().take_while(|f| f.address == site.frames[i].address).collect();
            i += same.len();
            location_id.push(b.location(&same));
        }
        let label = vec![
            Label { key: site_key, str: b.string(&site.id), ..Label::default() },
            Label { key: verdict_key, str: b.string(site.verdict.as_str()), ..Label::default() },
        ];
        let value = [site.allocs, site.alloc_bytes, site.live_count, site.live_bytes]
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .to_vec();
        samples.push(Sample { location_id, value, label });
    }

    let end = humantime::parse_rfc3339(&report.time)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let duration_nanos = (report.elapsed_s * 1e9) as i64;
    let comment = vec![b.string(&format!(
        "leaktracer {}: pid {} {}",
        env!("CARGO_PKG_VERSION"),
        report.target.pid,
        report.target.exe
    ))];
    let default_sample_type = b.string("inuse_space");
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
        period: 1,
        comment,
        default_sample_type,
    };
    // No name and no time in the gzip header: the same report, the same bytes.
    let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
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
