//! Finding the allocator the process really uses: which mapped object provides each
//! malloc-family function.
//!
//! Symbol lookup goes executable first, then preloaded and needed libraries, so a
//! function defined by the program itself or by an allocator library (jemalloc,
//! tcmalloc, mimalloc, often LD_PRELOADed) wins over libc's. leaktracer follows the same
//! order: the executable, then every other library, then libc.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use tracer_ebpf::func::ALL as FUNCTIONS;

use super::Uprobe;
use crate::{
    config::Placement,
    stacks::elf::ElfFile,
    target::{files, maps::MapEntry},
};

/// An object file that may provide allocator functions.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Where to read it and attach to it: for a running process the mapping's
    /// `/proc/PID/map_files` entry, which is the mapped file itself (whatever its path
    /// says in the target's mount namespace); for a command about to start, the path.
    pub open_path: PathBuf,
    /// Path as the process sees it, for messages.
    pub display: String,
    /// For a running process: its pid and the mapping, to open the file safely.
    pub mapped: Option<(u32, u64, u64)>,
}

impl Candidate {
    fn read(&self) -> Option<ElfFile> {
        let file = match self.mapped {
            Some((pid, start, end)) => files::open_mapped(pid, start, end, Path::new(&self.display)),
            None => files::open_local(&self.open_path),
        };
        ElfFile::read(&mut file.ok()?).ok()
    }
}

/// A function to put a uprobe on.
#[derive(Debug, Clone)]
pub struct ProbePoint {
    pub name: &'static str,
    pub func: u32,
    pub object: PathBuf,
    pub display: String,
    /// File offset of the function's entry.
    pub offset: u64,
    /// Bytes past the entry where the probe goes (see `placement`).
    pub skip: u64,
}

/// Where the allocator's own code is: its public functions and what lies between them
/// (one compilation unit in glibc and jemalloc), as file offsets of its module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorCode {
    /// The module's path as the target sees it.
    pub module: String,
    pub offsets: std::ops::Range<u64>,
}

/// Where the allocator's own code is: from its first public function to a page past its
/// last, in the object that provides `free`.
pub fn allocator_code(points: &[ProbePoint]) -> Option<AllocatorCode> {
    let free = points.iter().find(|p| p.func == tracer_ebpf::func::FREE)?;
    let offsets = points.iter().filter(|p| p.display == free.display).map(|p| p.offset);
    let (first, last) = offsets.fold((u64::MAX, 0), |(lo, hi), o| (lo.min(o), hi.max(o)));
    // The module as the target's maps will name it: a running target's path is that
    // already; a command about to start was resolved here, maybe through a symbolic
    // link (/lib is /usr/lib on a merged-/usr system).
    let module = if free.object.starts_with("/proc") {
        free.display.clone()
    } else {
        std::fs::canonicalize(&free.object).map_or_else(|_| free.display.clone(), |p| p.display().to_string())
    };
    Some(AllocatorCode { module, offsets: first..last.saturating_add(4096) })
}

/// Candidates of a running process: every file it has executable code mapped from.
pub fn candidates_from_maps(pid: u32, maps: &[MapEntry], exe: &Path) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // The executable first, whatever its address.
    let ordered = maps
        .iter()
        .filter(|m| m.executable && m.file_path().as_deref() == Some(exe))
        .chain(maps.iter().filter(|m| m.executable));
    for entry in ordered {
        let Some(path) = entry.file_path() else { continue };
        if !seen.insert(path.clone()) {
            continue;
        }
        let open_path = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end));
        out.push(Candidate {
            open_path,
            display: path.display().to_string(),
            mapped: Some((pid, entry.start, entry.end)),
        });
    }
    out
}

/// Candidates of a program about to be started: the executable and the libraries its
/// dynamic loader will map (`ld.so --list`, which honours LD_PRELOAD and
/// LD_LIBRARY_PATH but runs none of the program).
pub fn candidates_for_launch(exe: &Path) -> Vec<Candidate> {
    let mut out =
        vec![Candidate { open_path: exe.to_path_buf(), display: exe.display().to_string(), mapped: None }];
    let interpreter = ElfFile::open(exe).ok().and_then(|elf| elf.interpreter());
    let Some(interpreter) = interpreter else { return out };
    let Ok(listing) = Command::new(&interpreter).arg("--list").arg(exe).output() else {
        return out;
    };
    for path in parse_ld_list(&String::from_utf8_lossy(&listing.stdout)) {
        if out.iter().all(|c| c.open_path != path) {
            out.push(Candidate { display: path.display().to_string(), open_path: path, mapped: None });
        }
    }
    out
}

/// Library paths from `ld.so --list` output.
fn parse_ld_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn is_libc(display: &str) -> bool {
    let name = display.rsplit('/').next().unwrap_or(display);
    name.starts_with("libc.so") || name.starts_with("libc-")
}

/// Chooses, for each function, the object that provides it, and where. Functions that
/// share an address (aliases) are probed once. With `Placement::Fast`, each probe goes on
/// the function's first instruction the kernel emulates, when that is safe.
pub fn choose(candidates: &[Candidate], placement: Placement) -> Vec<ProbePoint> {
    let fast = placement == Placement::Fast;
    let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
    let ranked = candidates
        .iter()
        .filter(|c| !is_libc(&c.display))
        .chain(candidates.iter().filter(|c| is_libc(&c.display)));
    let mut provided: HashMap<&str, ProbePoint> = HashMap::new();
    for candidate in ranked {
        let Some(elf) = candidate.read() else {
            log::debug!("cannot read {}; skipped", candidate.display);
            continue;
        };
        let Ok(functions) = elf.functions(&names) else { continue };
        for &(name, func) in &FUNCTIONS {
            if provided.contains_key(name) {
                continue;
            }
            if let Some(at) = functions.get(name) {
                let arguments = tracer_ebpf::func::arguments(func);
                let skip =
                    if fast { super::placement::fast_offset(&at.code, at.vaddr, arguments) } else { 0 };
                provided.insert(
                    name,
                    ProbePoint {
                        name,
                        func,
                        object: candidate.open_path.clone(),
                        display: candidate.display.clone(),
                        offset: at.offset,
                        skip,
                    },
                );
            }
        }
    }
    let mut points: Vec<ProbePoint> =
        FUNCTIONS.iter().filter_map(|(name, _)| provided.remove(name)).collect();
    let mut at = HashSet::new();
    points.retain(|p| at.insert((p.object.clone(), p.offset)));
    points
}

impl ProbePoint {
    /// Where the probe goes: the function's entry plus `skip`.
    pub fn probe_offset(&self) -> u64 {
        self.offset + self.skip
    }

    /// The function, and how far past its entry the probe is (`free+3`).
    pub fn site(&self) -> String {
        if self.skip == 0 { self.name.to_string() } else { format!("{}+{}", self.name, self.skip) }
    }

    /// The probe, in messages.
    pub fn describe(&self) -> String {
        format!("{} in {}", self.site(), self.display)
    }
}

/// The allocator functions' uprobes, one per program and function, return probes first
/// (see `Probes::attach_uprobes`).
pub fn uprobes(points: &[ProbePoint]) -> Vec<Uprobe> {
    let returning = |p: &&ProbePoint| p.func != tracer_ebpf::func::FREE;
    let uprobe = |program: &'static str, p: &ProbePoint| Uprobe {
        program,
        object: p.object.clone(),
        what: p.describe(),
        offset: p.probe_offset(),
        cookie: u64::from(p.func),
    };
    let returns = points.iter().filter(returning).map(|p| uprobe("lt_alloc_return", p));
    let entries =
        points.iter().map(|p| uprobe(if returning(&p) { "lt_alloc_enter" } else { "lt_free_enter" }, p));
    returns.chain(entries).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_list_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc5a3f0000)\n\
                    \tlibjemalloc.so.2 => /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f0)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f2)\n";
        assert_eq!(
            parse_ld_list(text),
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn libc_provides_the_family_for_an_ordinary_program() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = crate::target::maps::read(std::process::id()).unwrap();
        let points = choose(&candidates_from_maps(std::process::id(), &maps, &exe), Placement::Fast);
        let malloc = points.iter().find(|p| p.name == "malloc").expect("malloc is provided");
        assert!(is_libc(&malloc.display), "{}", malloc.display);
        assert!(points.iter().any(|p| p.name == "free"));
        // Probing an alias twice would count each call twice.
        let unique: HashSet<_> = points.iter().map(|p| (&p.object, p.offset)).collect();
        assert_eq!(unique.len(), points.len());
        // glibc 2.36's free starts with a test (single-stepped): its probe moves past it.
        // (Another glibc's free may start otherwise: said plainly rather than failed on.)
        // SAFETY: returns a static string.
        let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy();
        assert_eq!(glibc, "2.36", "this check knows how glibc 2.36's free starts; teach it glibc {glibc}'s");
        let free = points.iter().find(|p| p.name == "free").unwrap();
        assert!(free.skip > 0, "{free:?}");
    }

    #[test]
    fn a_launch_lists_the_executable_first_then_its_libraries() {
        let candidates = candidates_for_launch(Path::new("/bin/sh"));
        assert_eq!(candidates[0].open_path, PathBuf::from("/bin/sh"));
        assert!(candidates.iter().any(|c| is_libc(&c.display)));
    }
}
