//! Test-only builder for small ELF64 files, so unit tests can exercise the parsers on
//! exact, known layouts without a Go toolchain.

/// One section of the synthetic file; each also gets its own `PT_LOAD` segment.
pub(super) struct Section<'a> {
    pub name: &'a str,
    pub addr: u64,
    pub data: &'a [u8],
    /// `PF_*` flags of the segment (X=1, W=2, R=4); the section flags follow from them.
    pub flags: u32,
    /// `SHT_*` type (1 = PROGBITS, 4 = RELA, 8 = NOBITS).
    pub kind: u32,
    /// Extra `sh_flags` (e.g. `SHF_COMPRESSED` = 0x800).
    pub extra_flags: u64,
}

impl<'a> Section<'a> {
    /// A PROGBITS section mapped read-only (`flags` = 4), read-write (6) or executable (5).
    pub fn new(name: &'a str, addr: u64, data: &'a [u8], flags: u32) -> Self {
        Section { name, addr, data, flags, kind: 1, extra_flags: 0 }
    }

    /// Whether the section is mapped (gets a `PT_LOAD`); address 0 means not.
    fn loaded(&self) -> bool {
        self.addr != 0
    }
}

/// Options for [`elf64`].
#[derive(Clone, Copy)]
pub(super) struct Options {
    /// `ET_EXEC` (2) or `ET_DYN` (3).
    pub e_type: u16,
    /// `EM_X86_64` (62) or `EM_AARCH64` (183).
    pub machine: u16,
    /// Whether to write section headers (else only program headers).
    pub section_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { e_type: 2, machine: 62, section_headers: true }
    }
}

fn push_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn push_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn push_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Builds a little-endian ELF64 file containing `sections`.
pub(super) fn elf64(sections: &[Section<'_>], opts: Options) -> Vec<u8> {
    let phoff = 64u64;
    let phnum = sections.iter().filter(|s| s.loaded()).count() as u16;
    let mut offset = phoff + 56 * u64::from(phnum);
    let mut offsets = Vec::new();
    for s in sections {
        offset = offset.next_multiple_of(16);
        offsets.push(offset);
        offset += if s.kind == 8 { 0 } else { s.data.len() as u64 };
    }
    let mut shstrtab = vec![0u8];
    let mut names = Vec::new();
    for s in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
        names.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(s.as_bytes());
        shstrtab.push(0);
    }
    let shstr_off = offset;
    let shoff = (shstr_off + shstrtab.len() as u64).next_multiple_of(8);
    let shnum = if opts.section_headers { sections.len() as u16 + 2 } else { 0 };
    let mut out = header(opts, phoff, if opts.section_headers { shoff } else { 0 }, phnum, shnum);
    for (s, off) in sections.iter().zip(&offsets).filter(|(s, _)| s.loaded()) {
        program_header(&mut out, s, *off);
    }
    for (s, off) in sections.iter().zip(&offsets) {
        out.resize(*off as usize, 0);
        if s.kind != 8 {
            out.extend_from_slice(s.data);
        }
    }
    out.resize(shstr_off as usize, 0);
    out.extend_from_slice(&shstrtab);
    if opts.section_headers {
        out.resize(shoff as usize, 0);
        section_headers(&mut out, sections, &offsets, &names, shstr_off, shstrtab.len() as u64);
    }
    out
}

/// The ELF file header.
fn header(opts: Options, phoff: u64, shoff: u64, phnum: u16, shnum: u16) -> Vec<u8> {
    let mut v = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    push_u16(&mut v, opts.e_type);
    push_u16(&mut v, opts.machine);
    push_u32(&mut v, 1);
    push_u64(&mut v, 0x401000);
    push_u64(&mut v, phoff);
    push_u64(&mut v, shoff);
    push_u32(&mut v, 0);
    for x in [64, 56, phnum, 64, shnum, shnum.saturating_sub(1)] {
        push_u16(&mut v, x);
    }
    v
}

/// One `PT_LOAD` program header.
fn program_header(out: &mut Vec<u8>, s: &Section<'_>, off: u64) {
    let filesz = if s.kind == 8 { 0 } else { s.data.len() as u64 };
    push_u32(out, 1);
    push_u32(out, s.flags);
    for x in [off, s.addr, s.addr, filesz, s.data.len() as u64, 1] {
        push_u64(out, x);
    }
}

/// The section header table: null, the sections, `.shstrtab`.
fn section_headers(
    out: &mut Vec<u8>,
    sections: &[Section<'_>],
    offsets: &[u64],
    names: &[u32],
    stroff: u64,
    strsz: u64,
) {
    out.extend_from_slice(&[0u8; 64]);
    for ((s, off), name) in sections.iter().zip(offsets).zip(names) {
        let mut flags = if s.loaded() { 2u64 } else { 0 };
        flags |= if s.flags & 2 != 0 { 1 } else { 0 };
        flags |= if s.flags & 1 != 0 { 4 } else { 0 };
        flags |= s.extra_flags;
        let (addr, flags, entsize) = if s.kind == 4 { (0, 0, 24) } else { (s.addr, flags, 0) };
        one_section_header(out, *name, s.kind, flags, addr, *off, s.data.len() as u64, entsize);
    }
    one_section_header(out, names[names.len() - 1], 3, 0, 0, stroff, strsz, 0);
}

/// One `Elf64_Shdr` with `sh_link` 0 and alignment 1.
#[allow(clippy::too_many_arguments)]
fn one_section_header(
    out: &mut Vec<u8>,
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    off: u64,
    size: u64,
    entsize: u64,
) {
    push_u32(out, name);
    push_u32(out, kind);
    for x in [flags, addr, off, size] {
        push_u64(out, x);
    }
    push_u32(out, 0);
    push_u32(out, 0);
    push_u64(out, 1);
    push_u64(out, entsize);
}

/// An `Elf64_Rela` `R_X86_64_RELATIVE` entry.
pub(super) fn rela_relative(offset: u64, addend: u64) -> Vec<u8> {
    let mut v = Vec::new();
    push_u64(&mut v, offset);
    push_u64(&mut v, 8);
    push_u64(&mut v, addend);
    v
}

/// `SHF_COMPRESSED` payload: an `Elf64_Chdr` (zlib) and the zlib stream, as Go's linker
/// writes debug sections.
pub(super) fn compress(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    let mut out = Vec::new();
    push_u32(&mut out, 1);
    push_u32(&mut out, 0);
    push_u64(&mut out, data.len() as u64);
    push_u64(&mut out, 1);
    out.extend(z.finish().unwrap());
    out
}

/// An ELF with a one-byte `.text` and the given unmapped debug sections.
pub(super) fn elf_with_debug(sections: &[(&'static str, Vec<u8>)], compressed: bool) -> Vec<u8> {
    let bodies: Vec<Vec<u8>> =
        sections.iter().map(|(_, d)| if compressed { compress(d) } else { d.clone() }).collect();
    let mut list = vec![Section::new(".text", 0x40_1000, &[0xc3], 5)];
    for ((name, _), body) in sections.iter().zip(&bodies) {
        let extra_flags = if compressed { 0x800 } else { 0 };
        list.push(Section { extra_flags, ..Section::new(name, 0, body, 4) });
    }
    elf64(&list, Options::default())
}

/// A struct for [`dwarf_with_structs`]: name, byte size, `(member, offset, type name)`.
pub(super) type TestStruct<'a> = (&'a str, u64, &'a [(&'a str, u64, Option<&'a str>)]);

/// DWARF sections `(name, bytes)` with one unit holding `structs`; member types refer to
/// other structs of the list by name.
pub(super) fn dwarf_with_structs(structs: &[TestStruct<'_>], version: u16) -> Vec<(&'static str, Vec<u8>)> {
    use gimli::write::{self as w, AttributeValue as V};
    let encoding = gimli::Encoding { format: gimli::Format::Dwarf32, version, address_size: 8 };
    let mut dwarf = w::DwarfUnit::new(encoding);
    let root = dwarf.unit.root();
    let ids: Vec<w::UnitEntryId> =
        structs.iter().map(|_| dwarf.unit.add(root, gimli::DW_TAG_structure_type)).collect();
    for ((name, size, members), &id) in structs.iter().zip(&ids) {
        dwarf.unit.get_mut(id).set(gimli::DW_AT_name, V::String(name.as_bytes().to_vec()));
        dwarf.unit.get_mut(id).set(gimli::DW_AT_byte_size, V::Udata(*size));
        for (member, offset, ty) in members.iter() {
            let m = dwarf.unit.add(id, gimli::DW_TAG_member);
            dwarf.unit.get_mut(m).set(gimli::DW_AT_name, V::String(member.as_bytes().to_vec()));
            dwarf.unit.get_mut(m).set(gimli::DW_AT_data_member_location, V::Udata(*offset));
            let target = ty.and_then(|t| structs.iter().position(|s| s.0 == t));
            if let Some(i) = target {
                dwarf.unit.get_mut(m).set(gimli::DW_AT_type, V::UnitRef(ids[i]));
            }
        }
    }
    dwarf_sections(&mut dwarf)
}

/// The non-empty DWARF sections `(name, bytes)` of a written unit.
pub(super) fn dwarf_sections(dwarf: &mut gimli::write::DwarfUnit) -> Vec<(&'static str, Vec<u8>)> {
    let mut sections = gimli::write::Sections::new(gimli::write::EndianVec::new(gimli::LittleEndian));
    dwarf.write(&mut sections).unwrap();
    let mut out = Vec::new();
    sections
        .for_each(|id, data| -> gimli::Result<()> {
            if !data.slice().is_empty() {
                out.push((id.name(), data.slice().to_vec()));
            }
            Ok(())
        })
        .unwrap();
    out
}
