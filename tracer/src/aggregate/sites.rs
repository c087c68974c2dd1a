//! Call sites: what made a tracked thing (kind + stack + a detail such as the allocator
//! function), with running figures. Every kind (heap blocks, mappings, goroutines,
//! defers, file descriptors, Go heap samples, resident pages) lands in the same model,
//! so the verdicts and reports treat them alike.

use std::collections::HashMap;

use crate::stacks::StackId;

/// What a site makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    /// Blocks from the malloc family.
    Heap,
    /// Mappings from mmap/mremap, anonymous or backed by a file.
    Mmap { file: bool },
    /// Break growth made outside any traced allocator.
    Brk,
    /// Goroutines, by the `go` statement that created them.
    Goroutine,
    /// Heap-allocated deferred calls, by `defer` statement.
    Defer,
    /// File descriptors, by the call that made them.
    Fd,
    /// The Go heap, from the runtime's heap-profile samples.
    GoHeap,
    /// Resident pages, by the code that first touched them (`--mode growth`).
    Resident,
}

impl SiteKind {
    /// The name reports use (`kind` in the JSON schema).
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Heap => "heap",
            SiteKind::Mmap { .. } => "mmap",
            SiteKind::Brk => "brk",
            SiteKind::Goroutine => "goroutine",
            SiteKind::Defer => "defer",
            SiteKind::Fd => "fd",
            SiteKind::GoHeap => "goheap",
            SiteKind::Resident => "resident",
        }
    }

    /// Whether the site's figures are memory (bytes mean something).
    pub fn is_memory(self) -> bool {
        !matches!(self, SiteKind::Goroutine | SiteKind::Defer | SiteKind::Fd)
    }
}

/// Identity of a site: two things with equal keys are the same site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteKey {
    pub kind: SiteKind,
    pub stack: Option<StackId>,
    /// What else tells sites of a kind apart: the allocator function
    /// (`tracer_ebpf::func`) for the heap, the start function for goroutines, the
    /// `defer` statement for defers, the syscall for descriptors; 0 otherwise.
    pub detail: u64,
}

/// Index of a site in [`Sites`]; also its stable id within the run.
pub type SiteIdx = u32;

/// Sites kept at most. Beyond, things go to one overflow site per kind (without a
/// stack), counted in `Sites::overflowed`.
pub const MAX_SITES: usize = 200_000;

/// Running figures of one site. Each thing counts with its weight: 1 when every
/// allocation is traced (the figures are then exact integers, far below f64's 2^53),
/// the inverse of its sampling probability when sampling (unbiased estimates).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub key: SiteKey,
    pub live_count: f64,
    pub live_bytes: f64,
    pub allocs: f64,
    pub frees: f64,
    pub alloc_bytes: f64,
    pub free_bytes: f64,
}

impl Site {
    pub(crate) fn born(&mut self, bytes: u64, weight: f64) {
        let bytes = bytes as f64 * weight;
        self.allocs += weight;
        self.alloc_bytes += bytes;
        self.live_count += weight;
        self.live_bytes += bytes;
    }

    /// Made, but not live yet (Go heap samples until a collection starts).
    pub(crate) fn made(&mut self, bytes: u64, weight: f64) {
        self.allocs += weight;
        self.alloc_bytes += bytes as f64 * weight;
    }

    /// Made earlier, live from now on.
    pub(crate) fn became_live(&mut self, bytes: u64, weight: f64) {
        self.live_count += weight;
        self.live_bytes += bytes as f64 * weight;
    }

    /// Released before it ever counted as live.
    pub(crate) fn released_unseen(&mut self, bytes: u64, weight: f64) {
        self.frees += weight;
        self.free_bytes += bytes as f64 * weight;
    }

    /// `bytes` of one thing released; `whole` when nothing of it remains.
    pub(crate) fn released(&mut self, bytes: u64, whole: bool, weight: f64) {
        let bytes = bytes as f64 * weight;
        self.free_bytes += bytes;
        self.live_bytes = (self.live_bytes - bytes).max(0.0);
        if whole {
            self.frees += weight;
            self.live_count = (self.live_count - weight).max(0.0);
        }
    }
}

#[derive(Debug, Default)]
pub struct Sites {
    list: Vec<Site>,
    index: HashMap<SiteKey, SiteIdx>,
    /// Things charged to an overflow site because the table was full.
    pub overflowed: u64,
}

impl Sites {
    /// The site for `key`, created on first sight.
    pub fn intern(&mut self, key: SiteKey) -> SiteIdx {
        if let Some(&idx) = self.index.get(&key) {
            return idx;
        }
        let key = if self.list.len() >= MAX_SITES {
            self.overflowed += 1;
            let overflow = SiteKey { kind: key.kind, stack: None, detail: u64::MAX };
            if let Some(&idx) = self.index.get(&overflow) {
                return idx;
            }
            overflow
        } else {
            key
        };
        self.list.push(Site {
            key,
            live_count: 0.0,
            live_bytes: 0.0,
            allocs: 0.0,
            frees: 0.0,
            alloc_bytes: 0.0,
            free_bytes: 0.0,
        });
        let idx = (self.list.len() - 1) as SiteIdx;
        self.index.insert(key, idx);
        idx
    }

    pub fn get(&self, idx: SiteIdx) -> &Site {
        &self.list[idx as usize]
    }

    pub fn get_mut(&mut self, idx: SiteIdx) -> &mut Site {
        &mut self.list[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (SiteIdx, &Site)> {
        self.list.iter().enumerate().map(|(i, s)| (i as SiteIdx, s))
    }
}
