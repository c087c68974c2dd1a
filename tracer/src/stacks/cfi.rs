//! Call frame information of one ELF file (`.eh_frame`, else `.debug_frame`), turned
//! into the compact per-address rules the kernel side walks stacks with.

use std::fs::File;

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};
use object::{Object, ObjectSection, ObjectSegment};
use tracer_ebpf::unwind::{UnwindRule, cfa};

use super::elf::ElfFile;

/// Call frame sections larger than this (decompressed) are not read.
const MAX_SECTION_BYTES: u64 = 64 << 20;

type Slice<'a> = gimli::EndianSlice<'a, LittleEndian>;

/// Where an FDE is.
#[derive(Debug, Clone, Copy)]
struct FdeRef {
    start: u64,
    end: u64,
    offset: usize,
    debug_frame: bool,
}

/// CFI of a file, indexed by address.
pub struct ModuleCfi {
    eh_frame: Vec<u8>,
    debug_frame: Vec<u8>,
    bases: BaseAddresses,
    index: Vec<FdeRef>,
    /// PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// The ELF entry point: the code there (`_start`) is where stacks begin.
    entry: u64,
    ctx: Box<UnwindContext<usize>>,
}

/// What a rule lookup can say when there is nothing to say.
pub const NO_RULE: UnwindRule = UnwindRule::NONE;

impl ModuleCfi {
    /// Reads the CFI of an opened file (bounded: see `target::files`).
    pub fn load(file: &mut File) -> Option<Self> {
        Self::from_elf(&ElfFile::read(file).ok()?)
    }

    /// The CFI of an ELF file read: its bytes are the target's, so any of them may lie.
    pub fn from_elf(elf: &ElfFile) -> Option<Self> {
        let file = elf.parse().ok()?;
        let section = |name: &str| -> (Vec<u8>, u64) { section_data(&file, name).unwrap_or_default() };
        let (eh_frame, eh_frame_addr) = section(".eh_frame");
        let (debug_frame, _) = section(".debug_frame");
        let text = file.section_by_name(".text").map_or(0, |s| s.address());
        let got = file.section_by_name(".got").map_or(0, |s| s.address());
        let bases = BaseAddresses::default().set_eh_frame(eh_frame_addr).set_text(text).set_got(got);
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let entry = file.entry();
        let mut cfi = Self {
            eh_frame,
            debug_frame,
            bases,
            index: Vec::new(),
            segments,
            entry,
            ctx: Box::new(UnwindContext::new()),
        };
        cfi.build_index();
        Some(cfi)
    }

    #[cfg(test)]
    fn load_path(path: &std::path::Path) -> Option<Self> {
        Self::load(&mut crate::target::files::open_local(path).ok()?)
    }

    fn build_index(&mut self) {
        let mut index = fdes(&EhFrame::new(&self.eh_frame, LittleEndian), &self.bases, false);
        index.extend(fdes(&DebugFrame::new(&self.debug_frame, LittleEndian), &self.bases, true));
        // .eh_frame first among equals: it is what the program itself unwinds with.
        index.sort_by_key(|f| (f.start, f.debug_frame));
        self.index = index;
    }

    /// The virtual address of a file offset (through the loadable segments).
    pub fn vaddr_of(&self, file_offset: u64) -> Option<u64> {
        self.segments.iter().find_map(|&(off, size, vaddr)| {
            let delta = file_offset.checked_sub(off).filter(|d| *d < size)?;
            vaddr.checked_add(delta)
        })
    }

    /// The rule at virtual address `vaddr`: how to find the caller's frame from there.
    pub fn rule_at(&mut self, vaddr: u64) -> UnwindRule {
        let i = self.index.partition_point(|f| f.start <= vaddr);
        let candidates = self.index[..i].iter().rev().take_while(|f| f.start <= vaddr);
        let Some(fde) = candidates.filter(|f| vaddr < f.end).copied().next() else {
            return self.entry_code_end(vaddr);
        };
        let row = if fde.debug_frame {
            let section = DebugFrame::new(&self.debug_frame, LittleEndian);
            row_rule(&section, &self.bases, &mut self.ctx, gimli::DebugFrameOffset(fde.offset), vaddr)
        } else {
            let section = EhFrame::new(&self.eh_frame, LittleEndian);
            row_rule(&section, &self.bases, &mut self.ctx, gimli::EhFrameOffset(fde.offset), vaddr)
        };
        match row.unwrap_or(NO_RULE) {
            NO_RULE => self.entry_code_end(vaddr),
            rule => rule,
        }
    }

    /// Entry code (the dynamic loader's `_start` and `_dl_start_user`) often has no CFI
    /// saying it is outermost; a walk that reaches it is complete all the same.
    fn entry_code_end(&self, vaddr: u64) -> UnwindRule {
        if self.entry != 0 && vaddr >= self.entry && vaddr < self.entry.saturating_add(128) {
            UnwindRule::END
        } else {
            NO_RULE
        }
    }
}

/// A section's bytes (decompressed, refusing sizes beyond `MAX_SECTION_BYTES` before
/// anything is allocated) and its address.
fn section_data(file: &object::File<'_>, name: &str) -> Option<(Vec<u8>, u64)> {
    use object::ObjectSection as _;
    let section = file.section_by_name(name)?;
    let range = section.compressed_file_range().ok()?;
    if range.uncompressed_size > MAX_SECTION_BYTES {
        log::debug!("{name} of {} bytes: not read", range.uncompressed_size);
        return None;
    }
    Some((section.uncompressed_data().ok()?.into_owned(), section.address()))
}

/// Every FDE of a section, as address ranges.
fn fdes<'a, S>(section: &S, bases: &BaseAddresses, debug_frame: bool) -> Vec<FdeRef>
where
    S: UnwindSection<Slice<'a>>,
{
    let mut out = Vec::new();
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(S::cie_from_offset)
        {
            let Some(end) = fde.initial_address().checked_add(fde.len()) else { continue };
            out.push(FdeRef { start: fde.initial_address(), end, offset: fde.offset(), debug_frame });
        }
    }
    out
}

fn row_rule<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    offset: S::Offset,
    vaddr: u64,
) -> Option<UnwindRule>
where
    S: UnwindSection<Slice<'a>>,
{
    let fde = section.fde_from_offset(bases, offset, S::cie_from_offset).ok()?;
    let row = fde.unwind_info_for_address(section, bases, ctx, vaddr).ok()?;
    match row.register(X86_64::RA) {
        RegisterRule::Undefined => return Some(UnwindRule::END),
        // The return address sits just below the CFA; anything else (signal frames) is
        // beyond what the kernel side walks.
        RegisterRule::Offset(-8) => {}
        _ => return Some(NO_RULE),
    }
    let (cfa_reg, cfa_offset) = match *row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => (cfa::SP, offset),
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => (cfa::BP, offset),
        _ => return Some(NO_RULE),
    };
    let bp_offset = match row.register(X86_64::RBP) {
        RegisterRule::Offset(n) => i16::try_from(n).ok()?,
        _ => 0,
    };
    Some(UnwindRule { cfa_offset: i32::try_from(cfa_offset).ok()?, bp_offset, cfa_reg, _pad: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules of this test binary's own functions, compared with what any x86-64 function
    /// must look like at its first instruction.
    #[test]
    fn rules_from_the_test_binary_itself() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut cfi = ModuleCfi::load_path(&exe).unwrap();
        assert!(!cfi.index.is_empty());
        let maps = crate::target::maps::read(std::process::id()).unwrap();
        let addr = rules_from_the_test_binary_itself as *const () as u64;
        let region = maps.iter().find(|m| m.executable && addr >= m.start && addr < m.end).unwrap();
        let vaddr = cfi.vaddr_of(addr - region.start + region.offset).unwrap();
        // At a function's first instruction the CFA is sp + 8 and rbp is untouched.
        assert_eq!(cfi.rule_at(vaddr), UnwindRule::AT_ENTRY);
        assert_eq!(cfi.rule_at(1), NO_RULE, "no FDE covers address 1");
    }

    proptest::proptest! {
        /// Fuzzing the ELF and CFI readers with a real ELF file (/bin/true) damaged:
        /// bytes changed (the headers and .eh_frame more often), or cut. No panic, no
        /// runaway, whatever the bytes say.
        #[test]
        fn damaged_elf_files_are_read_safely(
            edits in proptest::collection::vec((0usize..1 << 16, proptest::num::u8::ANY, proptest::bool::ANY), 1..24),
            cut in proptest::option::of(0usize..1 << 16),
            probes in proptest::collection::vec(0u64..1 << 16, 1..16),
        ) {
            let mut bytes = std::fs::read("/bin/true").unwrap();
            let eh_frame = {
                let elf = ElfFile::from_bytes(bytes.clone());
                let file = elf.parse().unwrap();
                file.section_by_name(".eh_frame").and_then(|s| s.file_range()).unwrap()
            };
            for (at, b, in_cfi) in edits {
                let at = if in_cfi { eh_frame.0 as usize + at % eh_frame.1 as usize } else { at % 512.min(bytes.len()) };
                bytes[at] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            let elf = ElfFile::from_bytes(bytes);
            let _ = elf.interpreter();
            let _ = elf.build_id();
            let _ = elf.functions(&["main", "malloc", "free"]);
            if let Some(mut cfi) = ModuleCfi::from_elf(&elf) {
                for vaddr in probes {
                    let _ = cfi.rule_at(vaddr);
                    let _ = cfi.vaddr_of(vaddr);
                }
            }
        }
    }
}
