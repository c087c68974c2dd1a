//! `/proc/PID/maps`: which files a process has mapped, and where.

use std::{io, path::PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    /// Offset in the file of `start`.
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    /// `None` for anonymous mappings; pseudo paths like `[heap]` are kept as they are.
    pub path: Option<String>,
}

impl MapEntry {
    /// A mapping of a real file (not `[heap]`, `[vdso]`, or anonymous).
    pub fn file(&self) -> Option<&str> {
        self.path.as_deref().filter(|p| p.starts_with('/') && self.inode != 0)
    }

    /// The path without the " (deleted)" suffix the kernel adds to unlinked files.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.file().map(|p| PathBuf::from(p.strip_suffix(" (deleted)").unwrap_or(p)))
    }

    pub fn is_deleted(&self) -> bool {
        self.file().is_some_and(|p| p.ends_with(" (deleted)"))
    }
}

pub fn read(pid: u32) -> io::Result<Vec<MapEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(parse(&text))
}

/// Parses the text of a maps file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().map(str::trim_start).filter(|p| !p.is_empty());
    let (start, end) = range.split_once('-')?;
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    if start >= end {
        return None;
    }
    let perms = perms.as_bytes();
    Some(MapEntry {
        start,
        end,
        readable: perms.first() == Some(&b'r'),
        executable: perms.get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: dev.to_string(),
        inode: inode.parse().ok()?,
        path: path.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 1311 /usr/bin/leaky
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:00 1311 /usr/bin/leaky
55d0c1d3e000-55d0c1d5f000 rw-p 00000000 00:00 0                          [heap]
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
7f1e2c400000-7f1e2c428000 r--p 00000000 fe:00 2048 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c428000-7f1e2c5bd000 r-xp 00028000 fe:00 2048 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c600000-7f1e2c601000 r-xp 00000000 fe:00 99 /tmp/lib with space.so (deleted)
";

    #[test]
    fn parses_files_anonymous_and_pseudo_mappings() {
        let maps = parse(SAMPLE);
        assert_eq!(maps.len(), 7);
        assert_eq!(maps[1].start, 0x55d0_c0a0_1000);
        assert!(maps[1].executable);
        assert_eq!(maps[1].offset, 0x1000);
        assert_eq!(maps[1].file(), Some("/usr/bin/leaky"));
        assert_eq!(maps[2].path.as_deref(), Some("[heap]"));
        assert_eq!(maps[2].file(), None);
        assert_eq!(maps[3].path, None);
        assert_eq!(maps[5].offset, 0x28000);
    }

    #[test]
    fn deleted_files_keep_their_path_and_spaces() {
        let maps = parse(SAMPLE);
        assert!(maps[6].is_deleted());
        assert_eq!(maps[6].file_path(), Some(PathBuf::from("/tmp/lib with space.so")));
    }

    proptest::proptest! {
        /// Fuzzing: any text, and the sample with bytes changed, cut or repeated, parses
        /// without a panic into entries that make sense.
        #[test]
        fn any_text_gives_sane_entries(
            text in "\\PC{0,300}",
            edits in proptest::collection::vec((0usize..2000, proptest::char::any()), 0..8),
            cut in 0usize..2000,
        ) {
            let mut sample: Vec<char> = SAMPLE.chars().collect();
            for (at, c) in edits {
                let at = at % sample.len();
                sample[at] = c;
            }
            sample.truncate(cut.min(sample.len()));
            let sample: String = sample.into_iter().collect();
            for input in [text.as_str(), sample.as_str()] {
                for e in parse(input) {
                    proptest::prop_assert!(e.start < e.end);
                    proptest::prop_assert!(!e.path.as_deref().is_some_and(|p| p.contains('\n')));
                }
            }
        }
    }
}
