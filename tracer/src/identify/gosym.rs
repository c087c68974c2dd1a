//! Go code symbolized from its own `.gopclntab` (function, file, line, inlined
//! functions), which every Go binary keeps, stripped or not: blazesym does not read it,
//! and a stripped Go binary has nothing else.

use std::collections::HashMap;

use super::symbolize::SymFrame;
use crate::stacks::{
    StackTable,
    elf::ElfFile,
    golang::{binary::Binary, pclntab::Pclntab, runtime, version},
    modules::ModuleIdx,
};

/// Go modules' bytes, read once, by module (`None`: not Go).
#[derive(Default)]
pub struct GoModules {
    modules: HashMap<ModuleIdx, Option<ElfFile>>,
}

impl GoModules {
    /// Whether `module` is a Go binary (read and remembered on first ask).
    pub fn is_go(&mut self, stacks: &StackTable, module: ModuleIdx) -> bool {
        self.get(stacks, module).is_some()
    }

    fn get(&mut self, stacks: &StackTable, module: ModuleIdx) -> Option<&ElfFile> {
        self.modules
            .entry(module)
            .or_insert_with(|| {
                let elf = ElfFile::read(&mut stacks.modules.module(module).open()?).ok()?;
                let bin = Binary::parse(elf.data()).ok()?;
                version::is_go(&bin).then_some(elf)
            })
            .as_ref()
    }

    /// Frames at each file offset of `module` (looked up exactly as given: pass a
    /// return address minus one), innermost first; unknown ones give one empty frame.
    pub fn symbolize(
        &mut self,
        stacks: &StackTable,
        module: ModuleIdx,
        offsets: &[u64],
    ) -> Vec<Vec<SymFrame>> {
        let unknown = || vec![SymFrame::default()];
        let Some(elf) = self.get(stacks, module) else { return offsets.iter().map(|_| unknown()).collect() };
        let Ok(bin) = Binary::parse(elf.data()) else { return offsets.iter().map(|_| unknown()).collect() };
        let Ok(tab) = Pclntab::from_binary(&bin) else { return offsets.iter().map(|_| unknown()).collect() };
        offsets
            .iter()
            .map(|&offset| {
                let frames = offset_to_vaddr(&bin, offset).map(|pc| tab.frames(pc)).unwrap_or_default();
                if frames.is_empty() {
                    return unknown();
                }
                frames
                    .into_iter()
                    .map(|f| SymFrame {
                        function: Some(f.function),
                        file: (f.file != "?").then_some(f.file),
                        line: (f.line != 0).then_some(f.line),
                    })
                    .collect()
            })
            .collect()
    }
}

impl GoModules {
    /// The name of the function starting at file offset `offset` of `module` (a
    /// goroutine's start function), past the compiler's `go` statement wrapper.
    pub fn start_function(&mut self, stacks: &StackTable, module: ModuleIdx, offset: u64) -> Option<String> {
        let elf = self.get(stacks, module)?;
        let bin = Binary::parse(elf.data()).ok()?;
        let tab = Pclntab::from_binary(&bin).ok()?;
        let pc = offset_to_vaddr(&bin, offset)?;
        runtime::wrapped_function(&bin, &tab, pc).or_else(|| Some(tab.function_at(pc)?.name))
    }
}

/// The link-time address of a file offset, through the loadable segments.
fn offset_to_vaddr(bin: &Binary<'_>, offset: u64) -> Option<u64> {
    bin.loads().iter().find_map(|l| {
        let delta = offset.checked_sub(l.offset).filter(|d| *d < l.filesz)?;
        l.vaddr.checked_add(delta)
    })
}
