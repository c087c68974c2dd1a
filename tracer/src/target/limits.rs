//! The memory limit that applies to a process: its cgroup's (v2 `memory.max`, v1
//! `memory.limit_in_bytes`, the tightest on the way up the hierarchy), else the
//! machine's RAM.

use std::{fs, path::Path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
    /// The cgroup whose limit it is (as `/proc/PID/cgroup` names it).
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    CgroupV2,
    CgroupV1,
    Ram,
}

impl LimitSource {
    pub fn describe(self) -> &'static str {
        match self {
            LimitSource::CgroupV2 => "cgroup memory.max",
            LimitSource::CgroupV1 => "cgroup memory.limit_in_bytes",
            LimitSource::Ram => "RAM",
        }
    }
}

/// Where cgroup filesystems are mounted.
struct Roots<'a> {
    v2: &'a [&'a str],
    v1_memory: &'a str,
}

const SYSTEM_ROOTS: Roots<'static> =
    Roots { v2: &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"], v1_memory: "/sys/fs/cgroup/memory" };

pub fn memory_limit(pid: u32) -> Option<MemoryLimit> {
    let ram = total_ram()?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    Some(limit_from(&cgroups, &SYSTEM_ROOTS, ram))
}

/// The tightest limit over the cgroups listed in `cgroups` (the text of
/// `/proc/PID/cgroup`), or `ram`.
fn limit_from(cgroups: &str, roots: &Roots<'_>, ram: u64) -> MemoryLimit {
    let mut best = MemoryLimit { bytes: ram, source: LimitSource::Ram, cgroup: None };
    let mut consider = |found: Option<(u64, String)>, source| {
        if let Some((bytes, cgroup)) = found
            && bytes < best.bytes
        {
            best = MemoryLimit { bytes, source, cgroup: Some(cgroup) };
        }
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.is_empty() {
            for root in roots.v2 {
                consider(tightest(Path::new(root), path, "memory.max"), LimitSource::CgroupV2);
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let found = tightest(Path::new(roots.v1_memory), path, "memory.limit_in_bytes");
            consider(found, LimitSource::CgroupV1);
        }
    }
    best
}

/// The smallest limit in `file` from the cgroup at `path` up to the root, and the cgroup
/// that sets it.
fn tightest(root: &Path, path: &str, file: &str) -> Option<(u64, String)> {
    let mut relative = path.trim_start_matches('/').to_string();
    let mut limit: Option<(u64, String)> = None;
    loop {
        let dir = root.join(&relative);
        if let Ok(text) = fs::read_to_string(dir.join(file))
            && let Ok(bytes) = text.trim().parse::<u64>()
            && limit.as_ref().is_none_or(|(l, _)| bytes < *l)
        {
            limit = Some((bytes, format!("/{relative}")));
        }
        if relative.is_empty() {
            break;
        }
        relative = relative.rsplit_once('/').map_or(String::new(), |(parent, _)| parent.to_string());
    }
    limit
}

fn total_ram() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("lt-cgroup-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        fn root(&self, sub: &str) -> String {
            self.0.join(sub).display().to_string()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_tightest_limit_up_the_hierarchy_wins() {
        let s = Scratch::new("tight");
        s.write("v2/a/memory.max", "1000\n");
        s.write("v2/a/b/memory.max", "max\n");
        let v2 = s.root("v2");
        assert_eq!(tightest(Path::new(&v2), "/a/b", "memory.max"), Some((1000, "/a".to_string())));
        assert_eq!(tightest(Path::new(&v2), "/elsewhere", "memory.max"), None);
    }

    #[test]
    fn a_cgroup_limit_below_ram_is_the_limit_and_says_where_it_is_from() {
        let s = Scratch::new("v2");
        s.write("v2/svc/memory.max", "209715200\n");
        s.write("v1/memory/old/memory.limit_in_bytes", "104857600\n");
        let (v2, v1) = (s.root("v2"), s.root("v1/memory"));
        let roots = Roots { v2: &[v2.as_str()], v1_memory: v1.as_str() };
        let limit = limit_from("0::/svc\n", &roots, 1 << 34);
        assert_eq!(
            limit,
            MemoryLimit { bytes: 209_715_200, source: LimitSource::CgroupV2, cgroup: Some("/svc".into()) }
        );
        // v1 and v2 listed together: the tighter wins.
        let both = limit_from("4:memory:/old\n0::/svc\n", &roots, 1 << 34);
        assert_eq!((both.bytes, both.source), (104_857_600, LimitSource::CgroupV1));
        // A limit above RAM is no limit; no cgroup at all is RAM.
        assert_eq!(limit_from("0::/svc\n", &roots, 1000).source, LimitSource::Ram);
        assert_eq!(
            limit_from("", &roots, 1000),
            MemoryLimit { bytes: 1000, source: LimitSource::Ram, cgroup: None }
        );
    }
}
