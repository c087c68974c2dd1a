//! Struct member offsets from DWARF.
//!
//! Runtime struct layouts move between Go releases (e.g. `runtime.g.goid` is 152, 160, then
//! 152 again), so when the target still has DWARF the offsets are read from it rather than
//! from a table. Go emits DWARF 4 up to 1.24 and DWARF 5 from 1.25, with zlib-compressed
//! sections (`SHF_COMPRESSED`); both are handled by `gimli` on top of [`Binary::section_data`].

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, RunTimeEndian, UnitOffset};

use super::binary::Binary;
use super::reader::Endian;
use super::{Error, Result};

/// Most components accepted in a member path such as `stack.lo`.
const MAX_PATH_DEPTH: usize = 8;
/// Most typedef/qualifier hops followed when resolving a member's type.
const MAX_TYPE_HOPS: usize = 16;
/// Most members returned for one struct.
const MAX_MEMBERS: usize = 4096;
/// Most runtime constants indexed.
const MAX_CONSTANTS: usize = 65536;

/// A `DW_TAG_constant` of the runtime (`runtime.` names only): name and value.
fn runtime_constant(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Slice<'_>>,
) -> Result<Option<(String, i64)>> {
    let Some(name) = entry_name(dwarf, unit, entry)? else { return Ok(None) };
    if !name.starts_with("runtime.") {
        return Ok(None);
    }
    let value = match entry.attr_value(gimli::DW_AT_const_value)? {
        Some(AttributeValue::Sdata(v)) => v,
        Some(AttributeValue::Udata(v)) => i64::try_from(v).unwrap_or(i64::MAX),
        Some(v) => match v.udata_value() {
            Some(v) => i64::try_from(v).unwrap_or(i64::MAX),
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    Ok(Some((name, value)))
}

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// A unit and an offset inside it.
type UnitAt<'a> = (gimli::Unit<Slice<'a>>, UnitOffset);

/// Where a DIE lives.
#[derive(Debug, Clone, Copy)]
struct DieRef {
    unit: DebugInfoOffset,
    die: UnitOffset,
}

/// One struct member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// `DW_AT_data_member_location`.
    pub offset: u64,
    /// Name of the member's type, if it has one.
    pub type_name: Option<String>,
}

/// An index of the named struct types in a binary's DWARF.
pub struct DwarfInfo<'data> {
    sections: gimli::DwarfSections<Cow<'data, [u8]>>,
    endian: RunTimeEndian,
    structs: HashMap<String, DieRef>,
    /// The runtime's constants (`runtime._KindSpecialProfile`, `runtime._Gleaked`, ...).
    constants: HashMap<String, i64>,
    /// Start offsets of all units, sorted, to resolve `DW_FORM_ref_addr` references.
    units: Vec<DebugInfoOffset>,
}

/// Convenience: the offset of `path` (e.g. `goid` or `stack.lo`) in struct `name`, loading
/// the DWARF for this one query. Prefer [`DwarfInfo`] for several queries.
pub fn member_offset(bin: &Binary<'_>, name: &str, path: &str) -> Option<u64> {
    DwarfInfo::load(bin).ok()??.member_offset(name, path)
}

impl<'data> DwarfInfo<'data> {
    /// Loads the DWARF sections and indexes struct types by name. `Ok(None)` when the
    /// binary has no `.debug_info` (e.g. built with `-ldflags=-w`).
    pub fn load(bin: &Binary<'data>) -> Result<Option<Self>> {
        if bin.section_range(".debug_info").is_none() {
            return Ok(None);
        }
        let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'data, [u8]>> {
            Ok(bin.section_data(id.name())?.unwrap_or(Cow::Borrowed(&[])))
        })?;
        let endian = match bin.endian() {
            Endian::Little => RunTimeEndian::Little,
            Endian::Big => RunTimeEndian::Big,
        };
        let mut info = DwarfInfo {
            sections,
            endian,
            structs: HashMap::new(),
            constants: HashMap::new(),
            units: Vec::new(),
        };
        (info.structs, info.units, info.constants) = info.index_structs()?;
        Ok(Some(info))
    }

    /// A `gimli::Dwarf` borrowing the owned sections.
    fn dwarf(&self) -> gimli::Dwarf<Slice<'_>> {
        self.sections.borrow(|s| EndianSlice::new(s, self.endian))
    }

    /// Walks every unit once, recording the first complete definition of each named
    /// struct, and the runtime's constants.
    #[allow(clippy::type_complexity, reason = "three indexes built in one walk")]
    fn index_structs(&self) -> Result<(HashMap<String, DieRef>, Vec<DebugInfoOffset>, HashMap<String, i64>)> {
        let dwarf = self.dwarf();
        let mut out = HashMap::new();
        let mut constants = HashMap::new();
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            let Some(unit_off) = header.offset().as_debug_info_offset() else { continue };
            units.push(unit_off);
            let unit = dwarf.unit(header)?;
            let mut cursor = unit.entries();
            while let Some((_, entry)) = cursor.next_dfs()? {
                if entry.tag() == gimli::DW_TAG_constant && constants.len() < MAX_CONSTANTS {
                    if let Some((name, value)) = runtime_constant(&dwarf, &unit, entry)? {
                        constants.entry(name).or_insert(value);
                    }
                    continue;
                }
                if !is_struct_definition(entry)? {
                    continue;
                }
                if let Some(name) = entry_name(&dwarf, &unit, entry)? {
                    out.entry(name).or_insert(DieRef { unit: unit_off, die: entry.offset() });
                }
            }
        }
        units.sort_unstable();
        Ok((out, units, constants))
    }

    /// The value of a runtime constant (`runtime._KindSpecialProfile`).
    pub fn constant(&self, name: &str) -> Option<i64> {
        self.constants.get(name).copied()
    }

    /// The unit containing the `.debug_info` offset `off` (for `DW_FORM_ref_addr`).
    fn unit_containing<'a>(
        &self,
        dwarf: &gimli::Dwarf<Slice<'a>>,
        off: DebugInfoOffset,
    ) -> Option<UnitAt<'a>> {
        let i = self.units.partition_point(|u| u.0 <= off.0).checked_sub(1)?;
        let header = dwarf.debug_info.header_from_offset(*self.units.get(i)?).ok()?;
        let die = off.to_unit_offset(&header)?;
        Some((dwarf.unit(header).ok()?, die))
    }

    /// Names of all indexed struct types.
    pub fn struct_names(&self) -> impl Iterator<Item = &str> {
        self.structs.keys().map(String::as_str)
    }

    /// `DW_AT_byte_size` of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u64> {
        let r = self.structs.get(name)?;
        let dwarf = self.dwarf();
        let unit = dwarf.unit(dwarf.debug_info.header_from_offset(r.unit).ok()?).ok()?;
        let entry = unit.entry(r.die).ok()?;
        entry.attr_value(gimli::DW_AT_byte_size).ok()??.udata_value()
    }

    /// The members of struct `name`, in declaration order.
    pub fn members(&self, name: &str) -> Option<Vec<Member>> {
        let r = *self.structs.get(name)?;
        self.read_members(r).ok()
    }

    /// Offset of a member path inside struct `name`: `goid`, or `stack.lo` for a member of
    /// an embedded struct (offsets are summed). `None` when any component is absent.
    pub fn member_offset(&self, name: &str, path: &str) -> Option<u64> {
        let mut current = name.to_owned();
        let mut total = 0u64;
        for (depth, part) in path.split('.').enumerate() {
            if depth >= MAX_PATH_DEPTH {
                return None;
            }
            let member = self.members(&current)?.into_iter().find(|m| m.name == part)?;
            total = total.checked_add(member.offset)?;
            current = member.type_name.unwrap_or_default();
        }
        Some(total)
    }

    /// Name of the type referenced by `entry`'s `DW_AT_type`, following unnamed
    /// qualifiers (Go emits named types directly, so this is normally one hop). References
    /// may be unit-relative or `.debug_info`-relative.
    fn type_name(
        &self,
        dwarf: &gimli::Dwarf<Slice<'_>>,
        unit: &gimli::Unit<Slice<'_>>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Slice<'_>>,
    ) -> Result<Option<String>> {
        let mut target = entry.attr_value(gimli::DW_AT_type)?;
        let mut other: Option<UnitAt> = None;
        for _ in 0..MAX_TYPE_HOPS {
            let (u, off) = match target {
                Some(AttributeValue::UnitRef(off)) => match &other {
                    Some((u, _)) => (u, off),
                    None => (unit, off),
                },
                Some(AttributeValue::DebugInfoRef(off)) => {
                    other = self.unit_containing(dwarf, off);
                    let Some((u, die)) = &other else { return Ok(None) };
                    (u, *die)
                }
                _ => return Ok(None),
            };
            let ty = u.entry(off)?;
            if let Some(name) = entry_name(dwarf, u, &ty)? {
                return Ok(Some(name));
            }
            target = ty.attr_value(gimli::DW_AT_type)?;
        }
        Err(Error::Malformed("DWARF type chain"))
    }

    /// Reads the `DW_TAG_member` children of the struct at `r`.
    fn read_members(&self, r: DieRef) -> Result<Vec<Member>> {
        let dwarf = self.dwarf();
        let unit = dwarf.unit(dwarf.debug_info.header_from_offset(r.unit)?)?;
        let mut tree = unit.entries_tree(Some(r.die))?;
        let mut children = tree.root()?.children();
        let mut out = Vec::new();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_member || out.len() >= MAX_MEMBERS {
                continue;
            }
            let (Some(name), Some(offset)) = (entry_name(&dwarf, &unit, entry)?, member_location(entry)?)
            else {
                continue;
            };
            let type_name = self.type_name(&dwarf, &unit, entry)?;
            out.push(Member { name, offset, type_name });
        }
        Ok(out)
    }
}

/// Whether `entry` is a struct definition (not a declaration) with a size.
fn is_struct_definition(entry: &gimli::DebuggingInformationEntry<'_, '_, Slice<'_>>) -> Result<bool> {
    if entry.tag() != gimli::DW_TAG_structure_type {
        return Ok(false);
    }
    let declaration = matches!(entry.attr_value(gimli::DW_AT_declaration)?, Some(AttributeValue::Flag(true)));
    Ok(!declaration && entry.attr_value(gimli::DW_AT_byte_size)?.is_some())
}

/// `DW_AT_name` of an entry as an owned string.
fn entry_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Slice<'_>>,
) -> Result<Option<String>> {
    let Some(value) = entry.attr_value(gimli::DW_AT_name)? else { return Ok(None) };
    let s = dwarf.attr_string(unit, value)?;
    Ok(Some(String::from_utf8_lossy(s.slice()).into_owned()))
}

/// `DW_AT_data_member_location` as a constant, or a `DW_OP_plus_uconst` expression.
fn member_location(entry: &gimli::DebuggingInformationEntry<'_, '_, Slice<'_>>) -> Result<Option<u64>> {
    let Some(value) = entry.attr_value(gimli::DW_AT_data_member_location)? else { return Ok(None) };
    if let Some(v) = value.udata_value() {
        return Ok(Some(v));
    }
    let AttributeValue::Exprloc(expr) = value else { return Ok(None) };
    let mut bytes = expr.0;
    let op = gimli::read::Reader::read_u8(&mut bytes)?;
    if op != gimli::DW_OP_plus_uconst.0 {
        return Ok(None);
    }
    Ok(Some(gimli::read::Reader::read_uleb128(&mut bytes)?))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{
        Options, Section, compress, dwarf_sections, elf_with_debug as elf_with, elf64,
    };
    use super::*;
    use gimli::write::{self as w, AttributeValue as V};

    /// DWARF sections `(name, bytes)` describing `runtime.g` (with a nested `runtime.stack`
    /// and an expression-located member) and `runtime.m`.
    fn synthetic_dwarf(version: u16) -> Vec<(&'static str, Vec<u8>)> {
        let encoding = gimli::Encoding { format: gimli::Format::Dwarf32, version, address_size: 8 };
        let mut dwarf = w::DwarfUnit::new(encoding);
        let root = dwarf.unit.root();
        let stack = add_struct(&mut dwarf, root, "runtime.stack", 16, &[("lo", 0, None), ("hi", 8, None)]);
        let g =
            add_struct(&mut dwarf, root, "runtime.g", 456, &[("stack", 0, Some(stack)), ("goid", 152, None)]);
        let mut expr = w::Expression::new();
        expr.op_plus_uconst(288);
        let gopc = dwarf.unit.add(g, gimli::DW_TAG_member);
        dwarf.unit.get_mut(gopc).set(gimli::DW_AT_name, V::String(b"gopc".to_vec()));
        dwarf.unit.get_mut(gopc).set(gimli::DW_AT_data_member_location, V::Exprloc(expr));
        let decl = dwarf.unit.add(root, gimli::DW_TAG_structure_type);
        dwarf.unit.get_mut(decl).set(gimli::DW_AT_name, V::String(b"runtime.m".to_vec()));
        dwarf.unit.get_mut(decl).set(gimli::DW_AT_declaration, V::Flag(true));
        add_struct(&mut dwarf, root, "runtime.m", 1000, &[("curg", 184, None)]);
        dwarf_sections(&mut dwarf)
    }

    /// Adds a struct with `(name, offset, type)` members; returns its id.
    pub(in super::super) fn add_struct(
        dwarf: &mut w::DwarfUnit,
        parent: w::UnitEntryId,
        name: &str,
        size: u64,
        members: &[(&str, u64, Option<w::UnitEntryId>)],
    ) -> w::UnitEntryId {
        let s = dwarf.unit.add(parent, gimli::DW_TAG_structure_type);
        dwarf.unit.get_mut(s).set(gimli::DW_AT_name, V::String(name.as_bytes().to_vec()));
        dwarf.unit.get_mut(s).set(gimli::DW_AT_byte_size, V::Udata(size));
        for &(member, offset, ty) in members {
            let m = dwarf.unit.add(s, gimli::DW_TAG_member);
            let e = dwarf.unit.get_mut(m);
            e.set(gimli::DW_AT_name, V::String(member.as_bytes().to_vec()));
            e.set(gimli::DW_AT_data_member_location, V::Udata(offset));
            if let Some(t) = ty {
                e.set(gimli::DW_AT_type, V::UnitRef(t));
            }
        }
        s
    }

    #[test]
    fn offsets_from_v4_v5_plain_and_compressed() {
        for (version, compressed) in [(4, false), (4, true), (5, false), (5, true)] {
            let file = elf_with(&synthetic_dwarf(version), compressed);
            let bin = Binary::parse(&file).unwrap();
            let d = DwarfInfo::load(&bin).unwrap().unwrap();
            let what = format!("v{version} compressed={compressed}");
            assert_eq!(d.member_offset("runtime.g", "goid"), Some(152), "{what}");
            assert_eq!(d.member_offset("runtime.g", "stack.hi"), Some(8), "{what}");
            assert_eq!(d.member_offset("runtime.g", "gopc"), Some(288), "{what}: DW_OP_plus_uconst");
            assert_eq!(d.member_offset("runtime.m", "curg"), Some(184), "{what}: declaration skipped");
            assert_eq!(d.struct_size("runtime.g"), Some(456));
            assert_eq!(d.member_offset("runtime.g", "nope"), None);
            assert_eq!(d.member_offset("runtime.nope", "goid"), None);
            assert_eq!(d.member_offset("runtime.g", "goid.x"), None);
            assert_eq!(member_offset(&bin, "runtime.g", "goid"), Some(152));
            let names: Vec<String> = d.members("runtime.g").unwrap().into_iter().map(|m| m.name).collect();
            assert_eq!(names, ["stack", "goid", "gopc"]);
        }
    }

    #[test]
    fn no_dwarf_is_none_and_corrupt_dwarf_is_safe() {
        let file = elf64(&[Section::new(".text", 0x40_1000, &[0xc3], 5)], Options::default());
        assert!(DwarfInfo::load(&Binary::parse(&file).unwrap()).unwrap().is_none());
        let sections = synthetic_dwarf(5);
        for (i, (_, data)) in sections.iter().enumerate() {
            for pos in 0..data.len() {
                for flip in [0x01u8, 0xff] {
                    let mut s = sections.clone();
                    s[i].1[pos] ^= flip;
                    let file = elf_with(&s, false);
                    let bin = Binary::parse(&file).unwrap();
                    if let Ok(Some(d)) = DwarfInfo::load(&bin) {
                        let _ = d.member_offset("runtime.g", "stack.hi");
                        let _ = d.members("runtime.m");
                        let _ = d.struct_size("runtime.g");
                    }
                }
            }
        }
    }

    #[test]
    fn absurd_compressed_size_is_refused() {
        let mut bogus = compress(b"tiny");
        bogus[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let list = [
            Section::new(".text", 0x40_1000, &[0xc3], 5),
            Section { extra_flags: 0x800, ..Section::new(".debug_info", 0, &bogus, 4) },
        ];
        let bin_data = elf64(&list, Options::default());
        let bin = Binary::parse(&bin_data).unwrap();
        assert!(matches!(bin.section_data(".debug_info"), Err(Error::TooLarge { .. })));
        assert!(DwarfInfo::load(&bin).is_err());
    }
}
