//! MiniDebugInfo: a stripped binary may carry `.gnu_debugdata`, an xz-compressed ELF
//! with just its function symbols (Fedora and others ship binaries that way). blazesym
//! does not read it; when it finds no name for an address, this does. The section is
//! the target's data: its compressed and decompressed sizes are bounded, and every
//! symbol is checked before use.

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};

/// `.gnu_debugdata` sections larger than this are not read.
const MAX_COMPRESSED: u64 = 64 << 20;
/// Nor decompressed beyond this.
const MAX_DECOMPRESSED: usize = 256 << 20;

/// Function symbols from a binary's MiniDebugInfo, by file offset.
pub struct MiniSymbols {
    /// (start, end, name) in virtual addresses, sorted by start.
    functions: Vec<(u64, u64, String)>,
    /// The outer file's PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

impl MiniSymbols {
    /// The MiniDebugInfo of the ELF file `data`, if it has any that reads.
    pub fn from_elf(data: &[u8]) -> Option<Self> {
        let outer = object::File::parse(data).ok()?;
        let section = outer.section_by_name(".gnu_debugdata")?;
        if section.size() > MAX_COMPRESSED {
            return None;
        }
        let inner = decompress(section.data().ok()?)?;
        let inner = object::File::parse(&*inner).ok()?;
        let mut functions: Vec<(u64, u64, String)> = inner
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                Some((s.address(), s.address().checked_add(s.size())?, s.name().ok()?.to_string()))
            })
            .collect();
        functions.sort_unstable();
        let segments = outer
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        Some(Self { functions, segments })
    }

    /// The function holding file offset `offset`.
    pub fn function_at(&self, offset: u64) -> Option<&str> {
        let vaddr = self.segments.iter().find_map(|&(start, size, vaddr)| {
            let delta = offset.checked_sub(start).filter(|d| *d < size)?;
            vaddr.checked_add(delta)
        })?;
        let i = self.functions.partition_point(|f| f.0 <= vaddr).checked_sub(1)?;
        let (start, end, name) = &self.functions[i];
        (*start..*end).contains(&vaddr).then_some(name.as_str())
    }
}

/// xz-decompresses `data`, giving up past [`MAX_DECOMPRESSED`] bytes.
fn decompress(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Bounded(Vec::new());
    lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out).ok()?;
    Some(out.0)
}

/// A writer that refuses to grow past [`MAX_DECOMPRESSED`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_DECOMPRESSED {
            return Err(std::io::Error::other("MiniDebugInfo too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_it_and_damaged_ones_give_nothing() {
        let exe = std::fs::read("/bin/true").unwrap();
        assert!(MiniSymbols::from_elf(&exe).is_none());
        assert!(MiniSymbols::from_elf(b"not an ELF file").is_none());
        assert!(decompress(b"\xfd7zXZ\0 but cut short").is_none());
    }
}
