//! User stacks, read from the kernel once per distinct stack and placed in the target's
//! modules right away, while the process is alive to say where its code is.
//!
//! A stack's id is the hash of its frames, whichever side walked it: stacks the kernel
//! stored come under their hash already; a stack userspace unwound from a sample is
//! filed under the hash of what it found, and the sample's random id is translated, so
//! one call path is one stack (and one site) however it was walked.

use std::{collections::HashMap, sync::Arc};

use tracer_ebpf::unwind::{CodeRange, UnwindRule, stack_hash};

use super::{
    modules::{Location, ModuleMap},
    unwind::{Sample, Unwinder},
};

/// Identifies a user stack: the hash of its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u64);

/// Distinct stacks kept at most; beyond, new stacks are counted and not kept (their
/// events count at a site without a stack).
pub const MAX_STACKS: usize = 500_000;
/// Sample ids waiting for their event at most.
const MAX_PENDING_ALIASES: usize = 65_536;

/// A stack as the kernel stored it: innermost first, `frames[0]` the probed instruction,
/// `frames[1]` the return address into the direct caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStack {
    pub frames: Vec<u64>,
    pub truncated: bool,
}

/// Where stacks come from, and where unwind rules go: the kernel's maps, or fixed
/// tables in tests.
/// A source with no stacks at all, for tests of what does not need them.
#[cfg(test)]
pub(crate) struct NoStacks;

#[cfg(test)]
impl StackSource for NoStacks {
    fn fetch(&mut self, _: StackId) -> Option<RawStack> {
        None
    }
}

pub trait StackSource {
    fn fetch(&mut self, id: StackId) -> Option<RawStack>;
    /// Hands unwind rules to the kernel side, by key.
    fn teach(&mut self, _rules: &[(u64, UnwindRule)]) {}
    /// Takes rules back (the code they describe is gone).
    fn forget(&mut self, _keys: &[u64]) {}
    /// Sets the code ranges with one rule each (Go code).
    fn set_code_ranges(&mut self, _ranges: &[CodeRange]) {}
}

/// One frame: its runtime address and where that is in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackInfo {
    /// Innermost first, without the probed instruction (the allocator or syscall wrapper
    /// itself): `frames[0]` is the code that asked for the memory.
    pub frames: Vec<Frame>,
    pub truncated: bool,
    /// The probed instruction is in the dynamic loader: mappings made here are libraries
    /// being loaded.
    pub in_loader: bool,
}

pub struct StackTable {
    source: Box<dyn StackSource>,
    pub modules: ModuleMap,
    unwinder: Unwinder,
    known: HashMap<StackId, Option<Arc<StackInfo>>>,
    /// Sample ids to the content ids their stacks were filed under.
    aliases: HashMap<u64, StackId>,
    /// Stacks the kernel side reported but userspace could not read back.
    pub missing: u64,
    /// Stack samples unwound here, and how many of them were cut short.
    pub samples: u64,
    pub truncated_samples: u64,
    /// New stacks not kept because the table was full.
    pub dropped: u64,
}

impl StackTable {
    pub fn new(source: Box<dyn StackSource>, modules: ModuleMap) -> Self {
        Self {
            source,
            modules,
            unwinder: Unwinder::default(),
            known: HashMap::new(),
            aliases: HashMap::new(),
            missing: 0,
            samples: 0,
            truncated_samples: 0,
            dropped: 0,
        }
    }

    /// Code ranges with one unwind rule each (Go code), for both walks.
    pub fn set_code_ranges(&mut self, ranges: Vec<CodeRange>) {
        self.source.set_code_ranges(&ranges);
        self.unwinder.set_ranges(ranges);
    }

    /// The id an event's stack is known by: a sample's id becomes its content's.
    pub fn canonical(&mut self, id: StackId) -> StackId {
        self.aliases.remove(&id.0).unwrap_or(id)
    }

    /// Unwinds a sample the kernel side could not, files the stack under the sample's id
    /// and teaches the kernel the rules it lacked.
    pub fn add_sample(&mut self, sample: &Sample) {
        let mut learned = Vec::new();
        let raw = self.unwinder.unwind(&mut self.modules, sample, &mut learned);
        self.samples += 1;
        if raw.truncated {
            self.truncated_samples += 1;
        }
        log::debug!(
            "sample {:#x}: {} frames{}, {} rules learnt: {:x?}",
            sample.id,
            raw.frames.len(),
            if raw.truncated { " (truncated)" } else { "" },
            learned.len(),
            raw.frames
        );
        if !learned.is_empty() {
            self.source.teach(&learned);
        }
        let id = StackId(stack_hash(&raw.frames));
        if self.aliases.len() >= MAX_PENDING_ALIASES {
            self.aliases.clear();
        }
        self.aliases.insert(sample.id, id);
        if !self.known.contains_key(&id) && self.room() {
            let info = Arc::new(self.place(&raw));
            self.known.insert(id, Some(info));
        }
    }

    /// A stack made of the frames given (no probed instruction: a goroutine known only
    /// by its `go` statement). Marked cut short: its callers are not known.
    pub fn synthetic(&mut self, frames: &[u64]) -> StackId {
        let raw =
            RawStack { frames: std::iter::once(0).chain(frames.iter().copied()).collect(), truncated: true };
        let id = StackId(stack_hash(&raw.frames));
        if !self.known.contains_key(&id) && self.room() {
            let info = Arc::new(self.place(&raw));
            self.known.insert(id, Some(info));
        }
        id
    }

    /// Whether another stack may be kept; counts the ones that may not.
    fn room(&mut self) -> bool {
        let room = self.known.len() < MAX_STACKS;
        if !room {
            self.dropped += 1;
        }
        room
    }

    /// The target exec'd: its code, and every rule about it, is gone.
    pub fn reset_code(&mut self) {
        let keys = self.unwinder.reset();
        self.source.forget(&keys);
        self.modules.reset();
    }

    /// The stack for `id`, read and placed on first sight.
    pub fn resolve(&mut self, id: StackId) -> Option<Arc<StackInfo>> {
        if let Some(known) = self.known.get(&id) {
            return known.clone();
        }
        if !self.room() {
            return None;
        }
        let info = match self.source.fetch(id) {
            Some(raw) => {
                log::debug!(
                    "stack {:#x}: {:x?}{}",
                    id.0,
                    raw.frames,
                    if raw.truncated { " (truncated)" } else { "" }
                );
                Some(Arc::new(self.place(&raw)))
            }
            None => {
                self.missing += 1;
                None
            }
        };
        self.known.insert(id, info.clone());
        info
    }

    /// Resolves `id` unless already done, without handing it out (the allocation path).
    pub fn ensure(&mut self, id: StackId) {
        if !self.known.contains_key(&id) {
            self.resolve(id);
        }
    }

    /// Stacks already resolved (for symbolizing at report time).
    pub fn get(&self, id: StackId) -> Option<&Arc<StackInfo>> {
        self.known.get(&id).and_then(Option::as_ref)
    }

    fn place(&mut self, raw: &RawStack) -> StackInfo {
        let probed = raw.frames.first().copied().and_then(|ip| self.modules.locate(ip));
        let in_loader = probed.and_then(|l| l.module).is_some_and(|m| self.modules.module(m).is_loader);
        let mut frames = Vec::with_capacity(raw.frames.len().saturating_sub(1));
        let mut truncated = raw.truncated;
        for (i, &addr) in raw.frames.iter().enumerate().skip(1) {
            // frames[1] was read from [sp], which is a return address only when the probe
            // sits on a function's first instruction (glibc's mremap wrapper, for one,
            // moves sp first); anything not in code is dropped.
            if i == 1 {
                if addr != 0
                    && let Some(location) = self.modules.locate(addr)
                {
                    frames.push(Frame { addr, location: Some(location) });
                }
                continue;
            }
            // The frame-pointer chain ends with a zero return address.
            if addr == 0 {
                break;
            }
            // A return address replaced by the uretprobe trampoline: the frame below is
            // a traced allocator still running (a stack taken inside malloc); its caller
            // is not on the stack.
            if self.modules.is_trampoline(addr) {
                truncated = true;
                break;
            }
            let location = self.modules.locate(addr);
            frames.push(Frame { addr, location });
        }
        StackInfo { frames, truncated, in_loader }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::maps;

    struct Fixed(HashMap<StackId, RawStack>);
    impl StackSource for Fixed {
        fn fetch(&mut self, id: StackId) -> Option<RawStack> {
            self.0.get(&id).cloned()
        }
    }

    fn table(stacks: &[(u64, Vec<u64>)]) -> StackTable {
        let modules = ModuleMap::from_entries(&maps::parse(
            "1000-2000 r-xp 00000000 fe:00 5 /lib/ld-linux-x86-64.so.2\n\
             7000-9000 r-xp 00001000 fe:00 6 /usr/bin/app\n",
        ));
        let source = Fixed(
            stacks
                .iter()
                .map(|(id, f)| (StackId(*id), RawStack { frames: f.clone(), truncated: false }))
                .collect(),
        );
        StackTable::new(Box::new(source), modules)
    }

    #[test]
    fn drops_the_probed_instruction_and_places_frames() {
        let mut t = table(&[(1, vec![0x7000, 0x7100, 0x7200])]);
        let info = t.resolve(StackId(1)).unwrap();
        assert_eq!(info.frames.iter().map(|f| f.addr).collect::<Vec<_>>(), [0x7100, 0x7200]);
        assert_eq!(info.frames[0].location.unwrap().offset, 0x1100);
        assert!(!info.in_loader);
    }

    #[test]
    fn a_caller_word_that_is_not_code_is_dropped() {
        let mut t = table(&[(1, vec![0x7000, 0xdead_0000, 0x7200]), (2, vec![0x7000, 0, 0x7200, 0, 0x7300])]);
        let info = t.resolve(StackId(1)).unwrap();
        assert_eq!(info.frames.iter().map(|f| f.addr).collect::<Vec<_>>(), [0x7200]);
        // A zero caller word is skipped; a zero return address ends the chain.
        let info = t.resolve(StackId(2)).unwrap();
        assert_eq!(info.frames.iter().map(|f| f.addr).collect::<Vec<_>>(), [0x7200]);
    }

    #[test]
    fn loader_stacks_are_flagged_and_missing_ones_counted_once() {
        let mut t = table(&[(1, vec![0x1004, 0x7200])]);
        assert!(t.resolve(StackId(1)).unwrap().in_loader);
        assert!(t.resolve(StackId(2)).is_none());
        assert!(t.resolve(StackId(2)).is_none());
        assert_eq!(t.missing, 1);
    }

    /// A sample files its stack under the hash of its frames: two samples of one call
    /// path (the kernel forgot a rule in between) are one stack, and their ids translate.
    #[test]
    fn samples_of_one_path_are_one_stack() {
        let mut t = table(&[]);
        // A frameless stack copy whose only frame is the probed instruction: the walk
        // from an unknown address stops at once, so the frames are [ip].
        let sample = |id| Sample { id, ip: 0x7004, sp: 0x1000, bp: 0, flags: 0, stack: bytes::Bytes::new() };
        t.add_sample(&sample(11));
        t.add_sample(&sample(22));
        let (a, b) = (t.canonical(StackId(11)), t.canonical(StackId(22)));
        assert_eq!(a, b);
        assert_eq!(a, StackId(stack_hash(&[0x7004])));
        assert!(t.get(a).is_some());
        // Translated once: the alias goes with its event.
        assert_eq!(t.canonical(StackId(11)), StackId(11));
        assert_eq!(t.samples, 2);
    }
}
