//! Where the target's code is: executable regions and the files behind them, kept so that
//! addresses can be turned into (file, offset) while the process lives and symbolized
//! after it is gone.
//!
//! Each file is opened when first seen (through `/proc/PID/map_files`, which is the
//! mapped file itself, or inside the target's root; regular files only, see
//! `target::files`) and kept open; the symbolizer reads it through `/proc/self/fd/N`,
//! which still works after the target exits or the file is replaced on disk. At most
//! [`MAX_OPEN`] files are kept open (a target can map thousands); the others are opened
//! again when needed, while the target lives.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::target::{
    files,
    maps::{self, MapEntry},
};

/// Files kept open at most.
pub const MAX_OPEN: usize = 512;
/// Modules tracked at most; code in files beyond is treated as anonymous.
pub const MAX_MODULES: usize = 8192;

pub type ModuleIdx = u32;

/// A mapped file with code.
#[derive(Debug)]
pub struct Module {
    /// The path as the target sees it.
    pub path: String,
    /// The dynamic loader (ld.so): its mappings are libraries being loaded, not
    /// allocations.
    pub is_loader: bool,
    /// Its first executable mapping seen: (start, end, file offset).
    pub mapping: (u64, u64, u64),
    file: Option<File>,
    /// The process it is mapped in (0 in tests), to open it again when not kept open.
    pid: u32,
    build_id: std::sync::OnceLock<Option<String>>,
}

impl Module {
    /// The GNU build id, hex (read once).
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.get_or_init(|| super::elf::ElfFile::read(&mut self.open()?).ok()?.build_id()).as_deref()
    }

    /// A path the symbolizer can open, now and after the target exits (when the file is
    /// kept open).
    pub fn symbol_path(&self) -> PathBuf {
        match &self.file {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => PathBuf::from(&self.path),
        }
    }

    /// The file, to read: the kept descriptor (duplicated), else opened again.
    pub fn open(&self) -> Option<File> {
        if let Some(f) = &self.file {
            return f.try_clone().ok();
        }
        let (start, end, _) = self.mapping;
        if self.pid == 0 {
            return files::open_local(std::path::Path::new(&self.path)).ok();
        }
        files::open_mapped(self.pid, start, end, std::path::Path::new(&self.path)).ok()
    }
}

/// Where an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The file, or `None` for anonymous executable memory (JIT code).
    pub module: Option<ModuleIdx>,
    /// Offset in the file.
    pub offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    offset: u64,
    module: Option<ModuleIdx>,
}

/// Don't reread /proc/PID/maps more often than this when addresses are not found.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ModuleMap {
    pid: u32,
    regions: Vec<Region>,
    modules: Vec<Module>,
    by_path: HashMap<String, ModuleIdx>,
    last_refresh: Option<Instant>,
    /// Code was mapped since the last refresh: the next miss rereads the maps at once.
    dirty: bool,
    /// The `[uprobes]` page, where uretprobes send returns.
    trampoline: Option<(u64, u64)>,
    /// Files kept open.
    open_files: usize,
}

impl ModuleMap {
    pub fn new(pid: u32) -> Self {
        let mut map = Self {
            pid,
            regions: Vec::new(),
            modules: Vec::new(),
            by_path: HashMap::new(),
            last_refresh: None,
            dirty: false,
            trampoline: None,
            open_files: 0,
        };
        map.refresh();
        map
    }

    /// A map of fixed regions, never refreshed (tests).
    pub fn from_entries(entries: &[MapEntry]) -> Self {
        let mut map = Self {
            pid: 0,
            regions: Vec::new(),
            modules: Vec::new(),
            by_path: HashMap::new(),
            last_refresh: Some(Instant::now() + Duration::from_secs(1 << 30)),
            dirty: false,
            trampoline: None,
            open_files: 0,
        };
        map.load(entries);
        map
    }

    /// Rereads the target's maps. Files seen before keep their index and open file.
    pub fn refresh(&mut self) {
        self.last_refresh = Some(Instant::now());
        self.dirty = false;
        if self.pid == 0 {
            return;
        }
        match maps::read(self.pid) {
            // A zombie has empty maps: keep what we knew.
            Ok(entries) if !entries.is_empty() => self.load(&entries),
            _ => {}
        }
    }

    /// Forgets the regions (exec replaced the image); files stay open.
    pub fn reset(&mut self) {
        self.regions.clear();
        self.refresh();
    }

    fn load(&mut self, entries: &[MapEntry]) {
        if let Some(t) = entries.iter().find(|e| e.path.as_deref() == Some("[uprobes]")) {
            self.trampoline = Some((t.start, t.end));
        }
        let mut regions = Vec::new();
        for entry in entries.iter().filter(|e| e.executable) {
            let module = entry.file_path().and_then(|path| self.module_for(entry, path));
            regions.push(Region { start: entry.start, end: entry.end, offset: entry.offset, module });
        }
        regions.sort_by_key(|r| r.start);
        self.regions = regions;
    }

    fn module_for(&mut self, entry: &MapEntry, path: PathBuf) -> Option<ModuleIdx> {
        let display = path.display().to_string();
        if let Some(&idx) = self.by_path.get(&display) {
            return Some(idx);
        }
        if self.modules.len() >= MAX_MODULES {
            return None;
        }
        let file = if self.open_files >= MAX_OPEN {
            None
        } else if self.pid == 0 {
            files::open_local(&path).ok()
        } else {
            match files::open_mapped(self.pid, entry.start, entry.end, &path) {
                Ok(file) => Some(file),
                Err(e) => {
                    log::debug!("cannot open {display} (mapped by {}): {e}", self.pid);
                    None
                }
            }
        };
        self.open_files += usize::from(file.is_some());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let is_loader =
            name.starts_with("ld-linux") || name.starts_with("ld-musl") || name.starts_with("ld.so");
        let idx = self.modules.len() as ModuleIdx;
        self.modules.push(Module {
            path: display.clone(),
            is_loader,
            mapping: (entry.start, entry.end, entry.offset),
            file,
            pid: self.pid,
            build_id: std::sync::OnceLock::new(),
        });
        self.by_path.insert(display, idx);
        Some(idx)
    }

    /// The target mapped code (a library being loaded): addresses not found from now on
    /// are looked for in fresh maps right away.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Finds the executable region holding `addr`, rereading the maps once if it is not
    /// known yet (a library loaded since).
    pub fn locate(&mut self, addr: u64) -> Option<Location> {
        if let Some(found) = self.lookup(addr) {
            return Some(found);
        }
        let stale = self.dirty || self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if stale && self.pid != 0 {
            self.refresh();
            return self.lookup(addr);
        }
        None
    }

    /// Where `addr` is, by the maps as last read (no refresh).
    pub fn lookup(&self, addr: u64) -> Option<Location> {
        let i = self.regions.partition_point(|r| r.start <= addr).checked_sub(1)?;
        let r = self.regions[i];
        (addr < r.end).then(|| Location { module: r.module, offset: addr - r.start + r.offset })
    }

    /// `addr` is in the uretprobe trampoline page.
    pub fn is_trampoline(&self, addr: u64) -> bool {
        self.trampoline.is_some_and(|(start, end)| addr >= start && addr < end)
    }

    /// Every module seen, by index.
    pub fn modules(&self) -> impl Iterator<Item = (ModuleIdx, &Module)> {
        self.modules.iter().enumerate().map(|(i, m)| (i as ModuleIdx, m))
    }

    pub fn module(&self, idx: ModuleIdx) -> &Module {
        &self.modules[idx as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_addresses_in_files_and_anonymous_code() {
        let entries = maps::parse(
            "1000-2000 r-xp 00004000 fe:00 5 /usr/lib/ld-linux-x86-64.so.2\n\
             3000-4000 rw-p 00000000 00:00 0 \n\
             5000-6000 r-xp 00000000 00:00 0 \n\
             7000-9000 r-xp 00002000 fe:00 6 /usr/bin/app\n",
        );
        let mut map = ModuleMap::from_entries(&entries);
        let loc = map.locate(0x7010).unwrap();
        assert_eq!(loc.offset, 0x2010);
        assert_eq!(map.module(loc.module.unwrap()).path, "/usr/bin/app");
        assert!(!map.module(loc.module.unwrap()).is_loader);
        let ld = map.locate(0x1800).unwrap();
        assert!(map.module(ld.module.unwrap()).is_loader);
        assert_eq!(map.locate(0x5004), Some(Location { module: None, offset: 4 }));
        // Not executable, or nowhere.
        assert_eq!(map.locate(0x3004), None);
        assert_eq!(map.locate(0x9000), None);
    }

    #[test]
    fn files_stay_readable_through_their_descriptor() {
        let map = ModuleMap::new(std::process::id());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let module = map.modules.iter().find(|m| std::path::Path::new(&m.path) == exe).unwrap();
        let through_fd = std::fs::metadata(module.symbol_path()).unwrap();
        assert_eq!(through_fd.len(), std::fs::metadata(&exe).unwrap().len());
    }
}
