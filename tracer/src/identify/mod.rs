//! What one site is: stacks symbolized (`symbolize`), and raw sites whose symbolized
//! stacks are the same grouped into one reported site (`group`). Verdicts and reports
//! both work on these groups.

pub mod group;
pub mod symbolize;

use std::hash::{Hash, Hasher};

pub use self::group::Group;
use self::{
    group::Grouping,
    symbolize::{ResolvedFrame, Symbolizer, Symbols},
};
use crate::{
    aggregate::{Aggregator, sites::SiteKey},
    stacks::{StackId, StackTable},
};

/// Symbolized frames and site identities for the whole run.
pub struct Identities {
    symbols: Symbols,
    grouping: Grouping,
}

impl Identities {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self { symbols: Symbols::new(symbolizer), grouping: Grouping::default() }
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
            let frames = self.frames(&agg.stacks, key.stack);
            self.grouping.add(site as u32, identity(&key, &frames));
        }
    }

    /// Every site so far, as groups of raw sites (after [`Identities::update`]).
    pub fn groups(&self) -> &[Group] {
        self.grouping.groups()
    }

    /// The symbolized frames of a stack, innermost first.
    pub fn frames(&self, stacks: &StackTable, stack: Option<StackId>) -> Vec<ResolvedFrame> {
        stack.map(|id| self.symbols.frames(stacks, id)).unwrap_or_default()
    }
}

/// What makes two raw sites the same reported site: kind, detail, and the symbolized
/// stack (an unsymbolized frame by its address).
fn identity(key: &SiteKey, frames: &[ResolvedFrame]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key.kind, key.detail).hash(&mut h);
    if key.stack.is_none() {
        // Sites without a stack stay apart from any with one.
        0xdead_u64.hash(&mut h);
    }
    for f in frames {
        match &f.symbol.function {
            Some(function) => (function, &f.symbol.file, f.symbol.line, &f.module).hash(&mut h),
            None => (&f.module, f.addr).hash(&mut h),
        }
    }
    h.finish()
}
