//! The memory limit that applies to a process: its cgroup's (v2 `memory.max`, v1
//! `memory.limit_in_bytes`, the tightest on the way up the hierarchy), else the
//! machine's RAM.

use std::{fs, path::Path};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
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

pub fn memory_limit(pid: u32) -> Option<MemoryLimit> {
    let ram = total_ram()?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut best = MemoryLimit { bytes: ram, source: LimitSource::Ram };
    let mut consider = |bytes: u64, source| {
        if bytes < best.bytes {
            best = MemoryLimit { bytes, source };
        }
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                if let Some(b) = tightest(Path::new(root), path, "memory.max") {
                    consider(b, LimitSource::CgroupV2);
                }
            }
        } else if controllers.split(',').any(|c| c == "memory")
            && let Some(b) = tightest(Path::new("/sys/fs/cgroup/memory"), path, "memory.limit_in_bytes")
        {
            consider(b, LimitSource::CgroupV1);
        }
    }
    Some(best)
}

/// The smallest limit in `file` from the cgroup at `path` up to the root.
fn tightest(root: &Path, path: &str, file: &str) -> Option<u64> {
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut limit = None;
    loop {
        if let Ok(text) = fs::read_to_string(dir.join(file))
            && let Ok(bytes) = text.trim().parse::<u64>()
        {
            limit = Some(limit.map_or(bytes, |l: u64| l.min(bytes)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            break;
        }
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
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_limit_no_larger_than_ram() {
        let limit = memory_limit(std::process::id()).unwrap();
        assert!(limit.bytes > 0);
        assert!(limit.bytes <= total_ram().unwrap());
    }

    #[test]
    fn the_tightest_limit_up_the_hierarchy_wins() {
        let root = std::env::temp_dir().join(format!("lt-cgroup-{}", std::process::id()));
        let leaf = root.join("a/b");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(root.join("a/memory.max"), "1000\n").unwrap();
        fs::write(leaf.join("memory.max"), "max\n").unwrap();
        assert_eq!(tightest(&root, "/a/b", "memory.max"), Some(1000));
        assert_eq!(tightest(&root, "/elsewhere", "memory.max"), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
