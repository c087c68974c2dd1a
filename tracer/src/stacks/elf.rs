//! The few facts leaktracer needs from the target's ELF files: where functions are in the
//! file, which dynamic loader a program asks for, the build id. The bytes come from a
//! file opened by `target::files` (regular, bounded); every offset read from them is
//! checked.

use std::{collections::HashMap, fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::target::files::{self, FileError};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: FileError },
    #[error("{path} is not an ELF file the tracer understands: {cause}")]
    Parse { path: String, cause: object::Error },
}

/// A function in a file.
#[derive(Debug, Clone)]
pub struct FunctionAt {
    /// File offset of its first instruction.
    pub offset: u64,
    pub vaddr: u64,
    /// Its machine code.
    pub code: Vec<u8>,
}

/// A parsed ELF file, kept only as long as lookups need it.
pub struct ElfFile {
    data: Vec<u8>,
}

impl ElfFile {
    /// Reads a file of our own choosing (not one the target names).
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let read = |cause| ElfError::Read { path: path.display().to_string(), cause };
        let mut file = files::open_local(path).map_err(read)?;
        let elf = Self::read(&mut file).map_err(read)?;
        elf.parse().map_err(|cause| ElfError::Parse { path: path.display().to_string(), cause })?;
        Ok(elf)
    }

    /// Reads an opened file, bounded in size.
    pub fn read(file: &mut File) -> Result<Self, FileError> {
        Ok(Self::from_bytes(files::read_bounded(file, files::MAX_FILE_BYTES)?))
    }

    /// The bytes of a file already read.
    pub fn from_bytes(data: Vec<u8>) -> Self {
        Self { data }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn parse(&self) -> Result<object::File<'_>, object::Error> {
        object::File::parse(&*self.data)
    }

    /// Where the defined functions among `names` are, from the dynamic and the static
    /// symbol tables.
    pub fn functions(&self, names: &[&str]) -> Result<HashMap<String, FunctionAt>, object::Error> {
        let file = self.parse()?;
        let mut found = HashMap::new();
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            if symbol.kind() != SymbolKind::Text || symbol.is_undefined() || symbol.address() == 0 {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if !names.contains(&name) || found.contains_key(name) {
                continue;
            }
            if let Some(at) = self.function_at(&file, symbol.address(), symbol.size()) {
                found.insert(name.to_string(), at);
            }
        }
        Ok(found)
    }

    /// The function at `[vaddr, vaddr + size)`, located in the file.
    pub fn function_at(&self, file: &object::File<'_>, vaddr: u64, size: u64) -> Option<FunctionAt> {
        let offset = file_offset(file, vaddr)?;
        let start = usize::try_from(offset).ok()?;
        let end = start.saturating_add(usize::try_from(size).ok()?).min(self.data.len());
        let code = self.data.get(start..end)?.to_vec();
        Some(FunctionAt { offset, vaddr, code })
    }

    /// The program interpreter (PT_INTERP), for dynamically linked executables.
    pub fn interpreter(&self) -> Option<String> {
        use object::read::elf::{ElfFile64, ProgramHeader as _};
        let file = ElfFile64::<object::Endianness>::parse(&*self.data).ok()?;
        let endian = file.endian();
        file.elf_program_headers().iter().find_map(|ph| {
            let interp = ph.interpreter(endian, &*self.data).ok()??;
            Some(String::from_utf8_lossy(interp).into_owned())
        })
    }

    /// The GNU build id, hex.
    pub fn build_id(&self) -> Option<String> {
        let id = self.parse().ok()?.build_id().ok()??;
        Some(id.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Virtual address to file offset, through the loadable segment that holds it.
pub fn file_offset(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|segment| {
        let (start, size) = (segment.address(), segment.size());
        let (file_start, file_size) = segment.file_range();
        let end = start.checked_add(size.min(file_size))?;
        (address >= start && address < end).then(|| address - start).and_then(|d| file_start.checked_add(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_malloc_in_the_test_binary_s_own_libc() {
        let maps = crate::target::maps::read(std::process::id()).unwrap();
        let libc = maps
            .iter()
            .filter_map(|m| m.file_path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
            .expect("the test binary maps libc");
        let elf = ElfFile::open(&libc).unwrap();
        let found = elf.functions(&["malloc", "free", "no_such_function"]).unwrap();
        assert!(found["malloc"].offset > 0);
        assert!(!found["free"].code.is_empty());
        assert!(!found.contains_key("no_such_function"));
        assert!(elf.build_id().is_some_and(|id| id.len() == 40));
    }

    #[test]
    fn dynamic_executables_name_their_interpreter() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let elf = ElfFile::open(&exe).unwrap();
        assert!(elf.interpreter().is_some_and(|i| i.contains("ld-linux")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in [0, 1, 16, 64, 4096] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let elf = ElfFile { data };
            assert!(elf.parse().is_err() || elf.functions(&["malloc"]).is_ok());
            assert_eq!(elf.interpreter(), None);
        }
    }
}
