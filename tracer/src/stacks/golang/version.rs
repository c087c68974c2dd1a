//! Go detection and toolchain version from `.go.buildinfo`.
//!
//! The version decides which offset table and which probe points apply. `.go.buildinfo` is
//! written by the linker for every Go 1.13+ executable and survives `-ldflags="-s -w"`, unlike
//! `.symtab` and DWARF. Layout (see `debug/buildinfo`): a 32-byte header
//! `"\xff Go buildinf:" ptrsize flags`, then either two varint-prefixed strings (flags & 2,
//! Go 1.18+) or, in older binaries, two pointers to Go string headers.

use object::Object;

use super::binary::Binary;
use super::reader::{self, Endian};
use super::{Error, Result};

/// The 14-byte magic at the start of `.go.buildinfo`.
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// The buildinfo header is 16-byte aligned in the data segment.
const ALIGN: usize = 16;

/// Size of the header preceding the inline strings.
const HEADER: usize = 32;

/// Cap on the version and modinfo strings; real ones are a few KiB at most.
const MAX_STRING: u64 = 1 << 20;

/// `flags` bit: pointers and lengths are big-endian.
const FLAG_BIG_ENDIAN: u8 = 1;

/// `flags` bit: strings are stored inline after the header (Go 1.18+).
const FLAG_INLINE: u8 = 2;

/// A Go toolchain version such as `go1.27.3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version (e.g. 27).
    pub minor: u32,
    /// Patch level; 0 for `go1.20` or pre-releases such as `go1.21rc2`.
    pub patch: u32,
    /// The raw string from the binary, e.g. `go1.22.0 X:boringcrypto`.
    pub raw: String,
}

impl GoVersion {
    /// Whether this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// The decoded `.go.buildinfo` contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The toolchain version string, e.g. `go1.27.3`.
    pub version: String,
    /// The module info blob (`runtime/debug.BuildInfo` text with sentinels), possibly empty.
    pub modinfo: String,
}

/// Returns whether the binary looks like a Go executable: it has buildinfo, a pclntab
/// section, or a Go build ID note.
pub fn is_go(bin: &Binary<'_>) -> bool {
    const SECTIONS: [&str; 3] = [".gopclntab", ".data.rel.ro.gopclntab", ".note.go.buildid"];
    SECTIONS.iter().any(|s| bin.object().section_by_name(s).is_some()) || find_header(bin).is_some()
}

/// Reads the Go version from `.go.buildinfo`.
pub fn go_version(bin: &Binary<'_>) -> Result<GoVersion> {
    let info = build_info(bin)?;
    parse_version(&info.version).ok_or(Error::Malformed("Go version string"))
}

/// Reads and decodes `.go.buildinfo`.
pub fn build_info(bin: &Binary<'_>) -> Result<BuildInfo> {
    let (addr, data) = find_header(bin).ok_or(Error::NotFound(".go.buildinfo"))?;
    let ptr_size = reader::u8_at(data, 14).ok_or(Error::Malformed("buildinfo header"))?;
    let flags = reader::u8_at(data, 15).ok_or(Error::Malformed("buildinfo header"))?;
    if flags & FLAG_INLINE != 0 {
        return parse_inline(data.get(HEADER..).ok_or(Error::Malformed("buildinfo header"))?);
    }
    let endian = if flags & FLAG_BIG_ENDIAN != 0 { Endian::Big } else { Endian::Little };
    let version = read_pointer_string(bin, addr.checked_add(16), ptr_size, endian)?;
    let modinfo_at = addr.checked_add(16 + u64::from(ptr_size));
    let modinfo = read_pointer_string(bin, modinfo_at, ptr_size, endian).unwrap_or_default();
    Ok(BuildInfo { version, modinfo })
}

/// Finds the buildinfo header: the `.go.buildinfo` section, else a 16-aligned magic in a
/// writable segment (what `debug/buildinfo` does for files without section headers).
fn find_header<'data>(bin: &Binary<'data>) -> Option<(u64, &'data [u8])> {
    if let Some((addr, _)) = bin.section_range(".go.buildinfo") {
        let data = bin.bytes_from(addr)?;
        return data.starts_with(MAGIC).then_some((addr, data));
    }
    bin.loads().iter().filter(|l| l.is_writable()).find_map(|load| {
        let data = bin.bytes_from(load.vaddr)?;
        let pos =
            (0..data.len()).step_by(ALIGN).find(|&i| data.get(i..).is_some_and(|d| d.starts_with(MAGIC)))?;
        Some((load.vaddr.checked_add(pos as u64)?, data.get(pos..)?))
    })
}

/// Decodes the Go 1.18+ inline form: two uvarint-length-prefixed strings.
fn parse_inline(data: &[u8]) -> Result<BuildInfo> {
    let mut pos = 0;
    let version = inline_string(data, &mut pos).ok_or(Error::Malformed("buildinfo version"))?;
    let modinfo = inline_string(data, &mut pos).unwrap_or_default();
    Ok(BuildInfo { version, modinfo })
}

/// One uvarint-prefixed string at `*pos`.
fn inline_string(data: &[u8], pos: &mut usize) -> Option<String> {
    let len = reader::uvarint(data, pos)?;
    if len > MAX_STRING {
        return None;
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let bytes = data.get(*pos..end)?;
    *pos = end;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Decodes the pre-1.18 form: the word at `at` points to a Go string header `{ptr, len}`.
/// Pointers are read with relocations applied, for PIE files.
fn read_pointer_string(bin: &Binary<'_>, at: Option<u64>, ptr_size: u8, endian: Endian) -> Result<String> {
    let malformed = Error::Malformed("buildinfo string pointer");
    let at = at.ok_or(Error::Malformed("buildinfo"))?;
    let header = read_word(bin, at, ptr_size, endian).ok_or(Error::Malformed("buildinfo"))?;
    let str_ptr = read_word(bin, header, ptr_size, endian).ok_or(Error::Malformed("buildinfo"))?;
    let len_addr = header.checked_add(u64::from(ptr_size)).ok_or(Error::Malformed("buildinfo"))?;
    let len = read_word(bin, len_addr, ptr_size, endian).ok_or(Error::Malformed("buildinfo"))?;
    if len > MAX_STRING {
        return Err(malformed);
    }
    let bytes = bin.bytes_at(str_ptr, usize::try_from(len).map_err(|_| Error::Malformed("len"))?);
    Ok(String::from_utf8_lossy(bytes.ok_or(malformed)?).into_owned())
}

/// Reads a word of the header's declared size and byte order, honouring relocations.
fn read_word(bin: &Binary<'_>, addr: u64, ptr_size: u8, endian: Endian) -> Option<u64> {
    if ptr_size == bin.ptr_size() && endian == bin.endian() {
        return bin.read_ptr(addr);
    }
    reader::word_at(bin.bytes_at(addr, usize::from(ptr_size))?, 0, ptr_size, endian)
}

/// Parses `go1.N[.P]` out of a version string such as `go1.21.3`, `go1.21rc2`,
/// `go1.22.0 X:boringcrypto` or `devel go1.23-abcdef Tue ...`.
pub fn parse_version(raw: &str) -> Option<GoVersion> {
    let start = raw.find("go1")?;
    let rest = raw.get(start + 2..)?;
    let mut parts = rest.splitn(3, '.');
    let major = leading_number(parts.next()?)?;
    let minor_part = parts.next()?;
    let minor = leading_number(minor_part)?;
    let minor_is_plain = minor_part.bytes().all(|b| b.is_ascii_digit());
    let patch = match parts.next() {
        Some(p) if minor_is_plain => leading_number(p).unwrap_or(0),
        _ => 0,
    };
    Some(GoVersion { major, minor, patch, raw: raw.to_owned() })
}

/// The decimal number at the start of `s` (at least one digit, at most 9).
fn leading_number(s: &str) -> Option<u32> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    s.get(..digits)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> (u32, u32, u32) {
        (major, minor, patch)
    }

    fn parsed(s: &str) -> Option<(u32, u32, u32)> {
        parse_version(s).map(|g| (g.major, g.minor, g.patch))
    }

    #[test]
    fn parses_release_strings() {
        assert_eq!(parsed("go1.27.3"), Some(v(1, 27, 3)));
        assert_eq!(parsed("go1.20"), Some(v(1, 20, 0)));
        assert_eq!(parsed("go1.21rc2"), Some(v(1, 21, 0)));
        assert_eq!(parsed("go1.22.0 X:boringcrypto"), Some(v(1, 22, 0)));
        assert_eq!(parsed("devel go1.23-abcdef Tue Jan 1"), Some(v(1, 23, 0)));
        assert_eq!(parsed("go1.19.8"), Some(v(1, 19, 8)));
    }

    #[test]
    fn rejects_non_versions() {
        assert_eq!(parsed(""), None);
        assert_eq!(parsed("go"), None);
        assert_eq!(parsed("go1."), None);
        assert_eq!(parsed("go1.x"), None);
        assert_eq!(parsed("go1.99999999999"), None);
        assert_eq!(parsed("gcc 12"), None);
    }

    #[test]
    fn at_least_compares_minor() {
        let g = parse_version("go1.21.13").unwrap();
        assert!(g.at_least(1, 21));
        assert!(g.at_least(1, 19));
        assert!(!g.at_least(1, 22));
    }

    use super::super::testutil::{Options, Section, elf64, rela_relative};

    /// A pre-1.18 pointer-format buildinfo blob at `base`: header, two string headers,
    /// then the strings. `absolute` writes the pointers into the file (else 0s, for PIE).
    fn pointer_blob(base: u64, absolute: bool) -> Vec<u8> {
        let mut d = vec![0u8; 0xc0];
        d[..14].copy_from_slice(MAGIC);
        d[14] = 8;
        let words =
            [(16, base + 0x40), (24, base + 0x50), (0x40, base + 0x80), (0x48, 8), (0x50, base + 0x90)];
        for (off, val) in words {
            let keep = absolute || !matches!(off, 16 | 24 | 0x40 | 0x50);
            d[off..off + 8].copy_from_slice(&(if keep { val } else { 0 }).to_le_bytes());
        }
        d[0x58..0x60].copy_from_slice(&3u64.to_le_bytes());
        d[0x80..0x88].copy_from_slice(b"go1.16.5");
        d[0x90..0x93].copy_from_slice(b"mod");
        d
    }

    #[test]
    fn inline_form_in_section() {
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&[8, FLAG_INLINE]);
        d.resize(HEADER, 0);
        d.push(8);
        d.extend_from_slice(b"go1.27.3");
        d.extend_from_slice(&[2, b'm', b'i']);
        let file = elf64(&[Section::new(".go.buildinfo", 0x60_0000, &d, 6)], Options::default());
        let bin = Binary::parse(&file).unwrap();
        assert!(is_go(&bin));
        let v = go_version(&bin).unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.raw.as_str()), (1, 27, 3, "go1.27.3"));
        assert_eq!(build_info(&bin).unwrap().modinfo, "mi");
    }

    #[test]
    fn pointer_form_found_without_section_headers() {
        let d = pointer_blob(0x60_0000, true);
        let opts = Options { section_headers: false, ..Options::default() };
        let file = elf64(&[Section::new(".data", 0x60_0000, &d, 6)], opts);
        let bin = Binary::parse(&file).unwrap();
        assert!(is_go(&bin));
        let info = build_info(&bin).unwrap();
        assert_eq!((info.version.as_str(), info.modinfo.as_str()), ("go1.16.5", "mod"));
    }

    #[test]
    fn pointer_form_through_pie_relocations() {
        let base = 0x60_0000;
        let d = pointer_blob(base, false);
        let mut rela = Vec::new();
        for (off, val) in [(16, base + 0x40), (24, base + 0x50), (0x40, base + 0x80), (0x50, base + 0x90)] {
            rela.extend(rela_relative(base + off, val));
        }
        let sections = [
            Section::new(".go.buildinfo", base, &d, 6),
            Section { kind: 4, ..Section::new(".rela.dyn", 0, &rela, 4) },
        ];
        let file = elf64(&sections, Options { e_type: 3, ..Options::default() });
        let bin = Binary::parse(&file).unwrap();
        assert_eq!(go_version(&bin).unwrap().minor, 16);
    }

    #[test]
    fn non_go_elf() {
        let file = elf64(&[Section::new(".text", 0x40_1000, &[0xc3; 16], 5)], Options::default());
        let bin = Binary::parse(&file).unwrap();
        assert!(!is_go(&bin));
        assert!(matches!(go_version(&bin), Err(Error::NotFound(_))));
    }

    #[test]
    fn inline_form() {
        let mut d = vec![8u8, b'g', b'o', b'1', b'.', b'2', b'7', b'.', b'3'];
        d.extend_from_slice(&[3, b'a', b'b', b'c']);
        let info = parse_inline(&d).unwrap();
        assert_eq!(info.version, "go1.27.3");
        assert_eq!(info.modinfo, "abc");
        assert!(parse_inline(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(parse_inline(&[5, b'g']).is_err());
    }
}
