//! A parsed ELF image with bounds-checked access by virtual address.
//!
//! All other modules look at the binary through this type so that address translation,
//! PIE relocations and section decompression limits live in one place.

use std::borrow::Cow;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationTarget, SegmentFlags};

use super::reader::{self, Endian};
use super::{Error, Result};

/// Default cap for [`read_file`]: Go binaries are rarely above a few hundred MiB.
pub const DEFAULT_FILE_LIMIT: u64 = 1 << 30;

/// Largest decompressed section accepted, whatever the header claims.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Largest accepted compression ratio; zlib cannot exceed ~1032:1, DWARF is ~3-10:1.
const MAX_RATIO: u64 = 1100;

/// `PF_X`, `PF_W` program header flags.
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_flags` (`PF_X` = 1, `PF_W` = 2, `PF_R` = 4).
    pub flags: u32,
}

impl Load {
    /// Whether the segment is executable.
    pub fn is_exec(&self) -> bool {
        self.flags & PF_X != 0
    }

    /// Whether the segment is writable.
    pub fn is_writable(&self) -> bool {
        self.flags & PF_W != 0
    }

    /// File offset of `vaddr` when it lies in the file-backed part of this segment.
    fn offset_of(&self, vaddr: u64) -> Option<u64> {
        let delta = vaddr.checked_sub(self.vaddr)?;
        (delta < self.filesz).then_some(self.offset.checked_add(delta)?)
    }

    /// Whether `vaddr` lies in the memory image of this segment (file-backed or not).
    pub fn contains(&self, vaddr: u64) -> bool {
        vaddr.checked_sub(self.vaddr).is_some_and(|d| d < self.memsz)
    }
}

/// A symbol from `.symtab`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// `st_value`.
    pub address: u64,
    /// `st_size`.
    pub size: u64,
}

/// A parsed ELF file plus the indexes needed to read it by virtual address.
pub struct Binary<'data> {
    data: &'data [u8],
    file: object::File<'data>,
    loads: Vec<Load>,
    /// `(r_offset, addend)` of `R_*_RELATIVE` dynamic relocations, sorted by offset.
    relative: Vec<(u64, u64)>,
    endian: Endian,
    ptr_size: u8,
}

/// Reads a whole file, refusing files larger than `limit` bytes.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |cause| Error::Io { path: path.to_path_buf(), cause };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limit {
        return Err(Error::TooLarge { what: "file", size, limit });
    }
    let mut out = Vec::new();
    out.try_reserve_exact(usize::try_from(size).map_err(|_| Error::Unsupported("file size"))?)
        .map_err(|_| Error::TooLarge { what: "file", size, limit })?;
    file.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(io)?;
    match u64::try_from(out.len()) {
        Ok(n) if n <= limit => Ok(out),
        _ => Err(Error::TooLarge { what: "file", size: out.len() as u64, limit }),
    }
}

impl<'data> Binary<'data> {
    /// Parses an ELF file from memory.
    pub fn parse(data: &'data [u8]) -> Result<Self> {
        let file = object::File::parse(data)?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(Error::Unsupported("non-ELF object"));
        }
        let endian = if file.is_little_endian() { Endian::Little } else { Endian::Big };
        let ptr_size = if file.is_64() { 8 } else { 4 };
        let loads = collect_loads(&file);
        let relative = collect_relative(&file);
        Ok(Binary { data, file, loads, relative, endian, ptr_size })
    }

    /// The raw file bytes.
    pub fn data(&self) -> &'data [u8] {
        self.data
    }

    /// The underlying `object` file.
    pub fn object(&self) -> &object::File<'data> {
        &self.file
    }

    /// Pointer size in bytes (4 or 8).
    pub fn ptr_size(&self) -> u8 {
        self.ptr_size
    }

    /// Byte order of the target.
    pub(super) fn endian(&self) -> Endian {
        self.endian
    }

    /// Target architecture.
    pub fn architecture(&self) -> object::Architecture {
        self.file.architecture()
    }

    /// Whether this is a position-independent (`ET_DYN`) executable, whose globals move by
    /// the load bias at run time.
    pub fn is_pie(&self) -> bool {
        self.file.kind() == object::ObjectKind::Dynamic
    }

    /// The `PT_LOAD` segments.
    pub fn loads(&self) -> &[Load] {
        &self.loads
    }

    /// The segment whose memory image contains `vaddr`.
    pub fn load_containing(&self, vaddr: u64) -> Option<&Load> {
        self.loads.iter().find(|l| l.contains(vaddr))
    }

    /// Converts a virtual address to a file offset through the `PT_LOAD` segments (what
    /// uprobes want). `None` for addresses not backed by file bytes.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|l| l.offset_of(vaddr))
    }

    /// The file bytes from `vaddr` to the end of the file-backed part of its segment (or of
    /// the file, if it is truncated).
    pub fn bytes_from(&self, vaddr: u64) -> Option<&'data [u8]> {
        let load = self.loads.iter().find(|l| l.offset_of(vaddr).is_some())?;
        let start = usize::try_from(load.offset_of(vaddr)?).ok()?;
        let end = usize::try_from(load.offset.checked_add(load.filesz)?).unwrap_or(usize::MAX);
        self.data.get(start..end.min(self.data.len()))
    }

    /// Exactly `len` file bytes at `vaddr`, within one segment.
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&'data [u8]> {
        self.bytes_from(vaddr)?.get(..len)
    }

    /// Reads a `u8` from the file image.
    pub fn read_u8(&self, vaddr: u64) -> Option<u8> {
        reader::u8_at(self.bytes_at(vaddr, 1)?, 0)
    }

    /// Reads a `u32` from the file image.
    pub fn read_u32(&self, vaddr: u64) -> Option<u32> {
        reader::u32_at(self.bytes_at(vaddr, 4)?, 0, self.endian)
    }

    /// Reads a `u64` from the file image (no relocation applied).
    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        reader::u64_at(self.bytes_at(vaddr, 8)?, 0, self.endian)
    }

    /// Reads a pointer-sized word as the loader would see it with a zero load bias: when a
    /// `R_*_RELATIVE` relocation targets `vaddr`, its addend wins over the file bytes (PIE
    /// files may store 0 there).
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        if let Ok(i) = self.relative.binary_search_by_key(&vaddr, |r| r.0) {
            return self.relative.get(i).map(|r| r.1);
        }
        reader::word_at(self.bytes_at(vaddr, usize::from(self.ptr_size))?, 0, self.ptr_size, self.endian)
    }

    /// Whether `vaddr` holds a relocated pointer (its run-time value is addend + load bias).
    pub fn is_relocated(&self, vaddr: u64) -> bool {
        self.relative.binary_search_by_key(&vaddr, |r| r.0).is_ok()
    }

    /// A symbol from `.symtab` (absent in `-s` builds).
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        let sym = self.file.symbol_by_name(name)?;
        Some(Symbol { address: sym.address(), size: sym.size() })
    }

    /// Whether the file has a non-empty `.symtab`.
    pub fn has_symtab(&self) -> bool {
        self.file.symbols().next().is_some()
    }

    /// Address and size of a section.
    pub fn section_range(&self, name: &str) -> Option<(u64, u64)> {
        let s = self.file.section_by_name(name)?;
        Some((s.address(), s.size()))
    }

    /// Name of the allocated section containing `vaddr`.
    pub fn section_name_at(&self, vaddr: u64) -> Option<&str> {
        self.file
            .sections()
            .filter(|s| s.address() != 0)
            .find(|s| vaddr.checked_sub(s.address()).is_some_and(|d| d < s.size()))
            .and_then(|s| s.name().ok())
    }

    /// The contents of a section, decompressed if needed (zlib only, size capped).
    /// `Ok(None)` when the section does not exist.
    pub fn section_data(&self, name: &str) -> Result<Option<Cow<'data, [u8]>>> {
        let Some(section) = self.file.section_by_name(name) else { return Ok(None) };
        let compressed = section.compressed_data()?;
        match compressed.format {
            object::CompressionFormat::None => Ok(Some(Cow::Borrowed(compressed.data))),
            object::CompressionFormat::Zlib => {
                check_decompressed_size(compressed.data.len(), compressed.uncompressed_size)?;
                Ok(Some(compressed.decompress()?))
            }
            _ => Err(Error::Unsupported("section compression format")),
        }
    }

    /// Locations (virtual addresses) in the file image that hold a pointer to `target`:
    /// relocations whose addend is `target`, then aligned words with that value in writable
    /// segments.
    pub fn pointers_to(&self, target: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self.relative.iter().filter(|r| r.1 == target).map(|r| r.0).collect();
        for load in self.loads.iter().filter(|l| l.is_writable()) {
            self.scan_segment_for_word(load, target, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Appends every pointer-aligned address in `load` whose word equals `target`.
    fn scan_segment_for_word(&self, load: &Load, target: u64, out: &mut Vec<u64>) {
        let Some(bytes) = self.bytes_from(load.vaddr) else { return };
        let step = usize::from(self.ptr_size);
        let skew = usize::try_from(load.vaddr % step as u64).unwrap_or(0);
        let first = (step - skew) % step;
        let words = bytes.get(first..).unwrap_or_default().chunks_exact(step);
        for (i, chunk) in words.enumerate() {
            if reader::word_at(chunk, 0, self.ptr_size, self.endian) == Some(target) {
                let off = (first as u64).checked_add((i as u64).saturating_mul(step as u64));
                if let Some(addr) = off.and_then(|o| load.vaddr.checked_add(o)) {
                    out.push(addr);
                }
            }
        }
    }
}

/// Rejects decompression whose claimed output is absurd for its input.
fn check_decompressed_size(compressed: usize, uncompressed: u64) -> Result<()> {
    let limit = (compressed as u64).saturating_mul(MAX_RATIO).min(MAX_DECOMPRESSED);
    if uncompressed > limit {
        return Err(Error::TooLarge { what: "decompressed section", size: uncompressed, limit });
    }
    Ok(())
}

/// Collects the `PT_LOAD` segments (reads past the end of the file fail later, per read).
fn collect_loads(file: &object::File<'_>) -> Vec<Load> {
    let load = |seg: object::Segment<'_, '_>| {
        let (offset, filesz) = seg.file_range();
        let flags = match seg.flags() {
            SegmentFlags::Elf { p_flags } => p_flags,
            _ => 0,
        };
        Load { vaddr: seg.address(), memsz: seg.size(), offset, filesz, flags }
    };
    file.segments().map(load).collect()
}

/// `R_*_RELATIVE` relocation type for the architectures Go supports on Linux.
fn relative_reloc_type(arch: object::Architecture) -> Option<u32> {
    use object::Architecture as A;
    match arch {
        A::X86_64 => Some(object::elf::R_X86_64_RELATIVE),
        A::Aarch64 => Some(object::elf::R_AARCH64_RELATIVE),
        A::I386 => Some(object::elf::R_386_RELATIVE),
        A::Arm => Some(object::elf::R_ARM_RELATIVE),
        A::Riscv64 => Some(object::elf::R_RISCV_RELATIVE),
        A::PowerPc64 => Some(object::elf::R_PPC64_RELATIVE),
        A::S390x => Some(object::elf::R_390_RELATIVE),
        _ => None,
    }
}

/// Collects `(offset, addend)` of all symbol-less RELATIVE dynamic relocations with an
/// explicit addend (RELA). `REL` entries are skipped: their addend is the file value.
fn collect_relative(file: &object::File<'_>) -> Vec<(u64, u64)> {
    let (Some(kind), Some(iter)) = (relative_reloc_type(file.architecture()), file.dynamic_relocations())
    else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u64)> = iter
        .filter(|(_, r)| {
            r.flags() == object::RelocationFlags::Elf { r_type: kind } && !r.has_implicit_addend()
        })
        .filter(|(_, r)| {
            matches!(r.target(), RelocationTarget::Absolute)
                || r.target() == RelocationTarget::Symbol(object::SymbolIndex(0))
        })
        .map(|(off, r)| (off, r.addend() as u64))
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_offset_math_is_checked() {
        let l = Load { vaddr: 0x1000, memsz: 0x300, offset: 0x10, filesz: 0x200, flags: 5 };
        assert_eq!(l.offset_of(0x1000), Some(0x10));
        assert_eq!(l.offset_of(0x11ff), Some(0x20f));
        assert_eq!(l.offset_of(0x1200), None, "bss part has no file bytes");
        assert!(l.contains(0x12ff));
        assert!(!l.contains(0x1300));
        assert_eq!(l.offset_of(0xfff), None);
        let wrap = Load { vaddr: 0, memsz: u64::MAX, offset: u64::MAX, filesz: u64::MAX, flags: 0 };
        assert_eq!(wrap.offset_of(5), None);
    }

    #[test]
    fn decompression_limits() {
        assert!(check_decompressed_size(100, 100 * 1000).is_ok());
        assert!(check_decompressed_size(100, 100 * 2000).is_err());
        assert!(check_decompressed_size(usize::MAX, u64::MAX).is_err());
    }

    #[test]
    fn reads_by_virtual_address() {
        use super::super::testutil::{Options, Section, elf64, rela_relative};
        let text = [0x90u8; 16];
        let mut data = vec![0u8; 32];
        data[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        let rela = rela_relative(0x60_0010, 0x40_1000);
        let sections = [
            Section::new(".text", 0x40_1000, &text, 5),
            Section::new(".data", 0x60_0000, &data, 6),
            Section { kind: 4, ..Section::new(".rela.dyn", 0, &rela, 4) },
        ];
        let file = elf64(&sections, Options { e_type: 3, ..Options::default() });
        let bin = Binary::parse(&file).unwrap();
        assert!(bin.is_pie());
        assert_eq!(bin.ptr_size(), 8);
        assert_eq!(bin.read_u64(0x60_0008), Some(0x1234));
        assert_eq!(bin.read_ptr(0x60_0008), Some(0x1234));
        assert_eq!(bin.read_ptr(0x60_0010), Some(0x40_1000), "relocation addend wins over file bytes");
        assert!(bin.is_relocated(0x60_0010));
        assert_eq!(bin.read_u8(0x40_100f), Some(0x90));
        assert_eq!(bin.read_u8(0x40_1010), None);
        assert_eq!(bin.bytes_at(0x60_0018, 9), None, "reads do not cross the segment end");
        assert_eq!(bin.pointers_to(0x40_1000), vec![0x60_0010]);
        assert_eq!(bin.pointers_to(0x1234), vec![0x60_0008]);
        assert_eq!(bin.section_name_at(0x60_0004), Some(".data"));
        let off = bin.vaddr_to_offset(0x40_1004).unwrap();
        assert_eq!(file[usize::try_from(off).unwrap()], 0x90);
        assert!(bin.section_data(".nope").unwrap().is_none());
        assert_eq!(bin.section_data(".data").unwrap().unwrap().len(), 32);
    }

    #[test]
    fn truncated_segment_is_clamped_to_file() {
        use super::super::testutil::{Options, Section, elf64};
        let data = [7u8; 64];
        let opts = Options { section_headers: false, ..Options::default() };
        let file = elf64(&[Section::new(".data", 0x60_0000, &data, 6)], opts);
        let cut = &file[..file.len() - 40];
        let bin = Binary::parse(cut).unwrap();
        let avail = bin.bytes_from(0x60_0000).map_or(0, <[u8]>::len);
        assert!(avail < 64);
        assert_eq!(bin.bytes_at(0x60_0000, 64), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Binary::parse(&[]).is_err());
        assert!(Binary::parse(b"\x7fELF garbage").is_err());
    }

    #[test]
    fn read_file_enforces_limit() {
        let path = std::env::temp_dir().join(format!("goinfo-limit-{}", std::process::id()));
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert_eq!(read_file(&path, 100).unwrap().len(), 100);
        assert!(matches!(read_file(&path, 99), Err(Error::TooLarge { .. })));
        std::fs::remove_file(&path).unwrap();
    }
}
