//! What one site is: stacks symbolized (`symbolize`), and raw sites whose symbolized
//! stacks are the same grouped into one reported site (`group`). Verdicts and reports
//! both work on these groups.

mod gosym;
pub mod group;
mod minidebug;
pub mod symbolize;

use std::hash::{Hash, Hasher};

pub use self::group::Group;
use self::{
    group::Grouping,
    symbolize::{ResolvedFrame, Symbolizer, Symbols},
};
use std::collections::HashMap;

use crate::{
    aggregate::{
        Aggregator,
        sites::{SiteKey, SiteKind},
    },
    stacks::StackTable,
};

/// Symbolized frames and site identities for the whole run.
pub struct Identities {
    symbols: Symbols,
    grouping: Grouping,
    /// Goroutine start functions, by address.
    start_functions: HashMap<u64, Option<String>>,
}

impl Identities {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbols: Symbols::new(symbolizer),
            grouping: Grouping::default(),
            start_functions: HashMap::new(),
        }
    }

    /// Symbolizes the stacks of sites seen since the last call and groups them.
    pub async fn update(&mut self, agg: &Aggregator) {
        let new = self.grouping.sites()..agg.sites.len();
        if new.is_empty() {
            return;
        }
        let keys: Vec<SiteKey> = agg.sites.iter().skip(new.start).map(|(_, s)| s.key).collect();
        self.symbols.load(&agg.stacks, keys.iter().filter_map(|k| k.stack)).await;
        for (site, key) in new.zip(keys) {
            let frames = self.frames(&agg.stacks, &key);
            if key.kind == SiteKind::Goroutine {
                let name = self.symbols.go_function_at(&agg.stacks, key.detail);
                self.start_functions.insert(key.detail, name);
            }
            let runtime_heap = matches!(key.kind, SiteKind::Mmap { .. } | SiteKind::Brk)
                && frames.first().is_some_and(|f| {
                    f.symbol.function.as_deref().is_some_and(|n| n.starts_with("runtime."))
                        && f.module_idx.is_some_and(|m| self.symbols.is_go(&agg.stacks, m))
                });
            self.grouping.add(site as u32, identity(&key, &frames), runtime_heap);
        }
    }

    /// The name of a goroutine's start function, by its address.
    pub fn start_function(&self, addr: u64) -> Option<&str> {
        self.start_functions.get(&addr)?.as_deref()
    }

    /// Every site so far, as groups of raw sites (after [`Identities::update`]).
    pub fn groups(&self) -> &[Group] {
        self.grouping.groups()
    }

    /// The symbolized frames of a site's stack, innermost first, starting at the code
    /// that asked: for goroutines and the Go heap, past the runtime's own frames
    /// (`newproc1`, `systemstack`, `mallocgc`, ...), unless nothing else is there.
    pub fn frames(&self, stacks: &StackTable, key: &SiteKey) -> Vec<ResolvedFrame> {
        let Some(id) = key.stack else { return Vec::new() };
        let mut frames = self.symbols.frames(stacks, id);
        if matches!(key.kind, SiteKind::Goroutine | SiteKind::GoHeap) {
            let runtime =
                |f: &ResolvedFrame| f.symbol.function.as_deref().is_some_and(|n| n.starts_with("runtime."));
            let skip = frames.iter().take_while(|f| runtime(f)).count();
            if skip < frames.len() {
                frames.drain(..skip);
            }
        }
        frames
    }
}

/// What makes two raw sites the same reported site: kind, detail, and the symbolized
/// stack (an unsymbolized frame by its address). Goroutines and defers are one site per
/// statement (`go`, `defer`): only the first frame counts, so goroutines seen at attach
/// (whose creation stack is just the `go` statement) join those created later.
fn identity(key: &SiteKey, frames: &[ResolvedFrame]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key.kind, key.detail).hash(&mut h);
    if key.stack.is_none() {
        // Sites without a stack stay apart from any with one.
        0xdead_u64.hash(&mut h);
    }
    let statement = matches!(key.kind, SiteKind::Goroutine | SiteKind::Defer);
    for f in frames.iter().take(if statement { 1 } else { usize::MAX }) {
        match &f.symbol.function {
            Some(function) => (function, &f.symbol.file, f.symbol.line, &f.module).hash(&mut h),
            None => (&f.module, f.addr).hash(&mut h),
        }
    }
    h.finish()
}
