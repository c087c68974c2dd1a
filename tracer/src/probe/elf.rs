//! Reading the few facts the probes need from ELF files: where a function is in the file,
//! and which dynamic loader a program asks for.

use std::{collections::HashMap, fs, io, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not an ELF file the tracer understands: {source}")]
    Parse { path: String, source: object::Error },
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
    path: String,
}

impl ElfFile {
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let data =
            fs::read(path).map_err(|source| ElfError::Read { path: path.display().to_string(), source })?;
        let file = Self { data, path: path.display().to_string() };
        file.parse()?;
        Ok(file)
    }

    fn parse(&self) -> Result<object::File<'_>, ElfError> {
        object::File::parse(&*self.data).map_err(|source| ElfError::Parse { path: self.path.clone(), source })
    }

    /// Where the defined functions among `names` are, from the dynamic and the static
    /// symbol tables.
    pub fn functions(&self, names: &[&str]) -> Result<HashMap<String, FunctionAt>, ElfError> {
        let file = self.parse()?;
        let mut found = HashMap::new();
        let symbols = file.dynamic_symbols().chain(file.symbols());
        for symbol in symbols {
            if symbol.kind() != SymbolKind::Text || symbol.is_undefined() || symbol.address() == 0 {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if !names.contains(&name) || found.contains_key(name) {
                continue;
            }
            if let Some(offset) = file_offset(&file, symbol.address()) {
                let end = usize::try_from(offset + symbol.size()).unwrap_or(usize::MAX).min(self.data.len());
                let code = self.data.get(offset as usize..end).unwrap_or_default().to_vec();
                found.insert(name.to_string(), FunctionAt { offset, vaddr: symbol.address(), code });
            }
        }
        Ok(found)
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
}

/// Virtual address to file offset, through the loadable segment that holds it.
fn file_offset(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|segment| {
        let (start, size) = (segment.address(), segment.size());
        let (file_start, file_size) = segment.file_range();
        (address >= start && address < start + size.min(file_size)).then(|| address - start + file_start)
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
    }

    #[test]
    fn dynamic_executables_name_their_interpreter() {
        let elf = ElfFile::open(Path::new("/proc/self/exe")).unwrap();
        assert!(elf.interpreter().is_some_and(|i| i.contains("ld-linux")));
    }
}
