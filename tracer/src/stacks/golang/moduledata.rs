//! Locating `runtime.firstmoduledata` without symbols.
//!
//! Go 1.26+ no longer stores the text start in the pclntab header, and the inline tree is
//! addressed relative to `moduledata.gofunc`, so stripped binaries need the module data.
//! It is found as a pointer to the pclntab header (its first field) and accepted only when
//! several other fields agree with the header, so a stray word cannot be mistaken for it.

use super::binary::Binary;

/// What the validation needs to know about the pclntab header.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeaderFacts {
    /// Address of the pcHeader.
    pub addr: u64,
    /// `funcnameOffset` from the header.
    pub funcname_offset: u64,
    /// `pclnOffset` from the header.
    pub pcln_offset: u64,
    /// Number of functions.
    pub nfunc: u64,
    /// `ftab[0].entryoff`.
    pub first_entry_off: u64,
    /// True for the Go 1.18–1.19 layout (magic `0xfffffff0`).
    pub go118: bool,
}

/// The fields of `runtime.moduledata` that this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleData {
    /// Address of the `moduledata` (normally `runtime.firstmoduledata`).
    pub address: u64,
    /// `moduledata.text`: base of the pclntab entry offsets.
    pub text: u64,
    /// `moduledata.gofunc`: base of funcdata offsets (inline trees); `None` unless a
    /// candidate passed the layout check here and the inline tree check in the pclntab.
    pub gofunc: Option<u64>,
    /// `moduledata.types`: base of type name offsets; `None` if not validated.
    pub types: Option<u64>,
}

/// Word indexes of fields that have been stable since Go 1.18.
const IDX_FUNCNAMETAB: u64 = 1;
const IDX_FTAB: u64 = 16;
const IDX_MINPC: u64 = 20;
const IDX_TEXT: u64 = 22;

/// Finds the module data for the pclntab described by `facts`. `minor` (the Go minor
/// version, if known) selects the layout of the later, version-dependent fields.
pub(super) fn find(bin: &Binary<'_>, facts: &HeaderFacts, minor: Option<u32>) -> Option<ModuleData> {
    let from_symtab = bin.symbol("runtime.firstmoduledata").map(|s| s.address);
    let candidates = from_symtab.into_iter().chain(bin.pointers_to(facts.addr));
    candidates.take(64).find_map(|addr| validate(bin, facts, addr, minor))
}

/// Reads word `idx` of the structure at `base`.
fn word(bin: &Binary<'_>, base: u64, idx: u64) -> Option<u64> {
    let off = idx.checked_mul(u64::from(bin.ptr_size()))?;
    bin.read_ptr(base.checked_add(off)?)
}

/// Accepts `addr` as module data only if the header pointer, funcname table, function
/// table and text/minpc fields are all consistent with the pclntab header.
fn validate(bin: &Binary<'_>, facts: &HeaderFacts, addr: u64, minor: Option<u32>) -> Option<ModuleData> {
    let ptr = |idx| word(bin, addr, idx);
    let expect_ftab = facts.addr.checked_add(facts.pcln_offset)?;
    let checks = [
        ptr(0)? == facts.addr,
        ptr(IDX_FUNCNAMETAB)? == facts.addr.checked_add(facts.funcname_offset)?,
        ptr(IDX_FTAB)? == expect_ftab,
        ptr(IDX_FTAB + 1)? == facts.nfunc.checked_add(1)?,
    ];
    if checks.contains(&false) {
        return None;
    }
    let text = ptr(IDX_TEXT)?;
    if text == 0 || ptr(IDX_MINPC)? != text.checked_add(facts.first_entry_off)? {
        return None;
    }
    let gofunc = gofunc_candidates(bin, addr, facts.go118, minor).first().copied();
    let types = minor.and_then(|m| types_at(bin, addr, facts.go118, m));
    Some(ModuleData { address: addr, text, gofunc, types })
}

/// The `gofunc` values that pass the layout check, most likely first.
pub(super) fn gofunc_candidates(bin: &Binary<'_>, addr: u64, go118: bool, minor: Option<u32>) -> Vec<u64> {
    gofunc_indexes(go118, minor).iter().filter_map(|&i| gofunc_at(bin, addr, i)).collect()
}

/// Word index of `gofunc`, by layout: 1.18–1.19 have no `covctrs`; 1.27 added
/// `typedesclen`, `itaboffset` and `itabsize` before it. Unknown versions try both.
fn gofunc_indexes(go118: bool, minor: Option<u32>) -> &'static [u64] {
    match (go118, minor) {
        (true, _) => &[38],
        (false, Some(m)) if m < 27 => &[40],
        (false, Some(27)) => &[43],
        _ => &[43, 40],
    }
}

/// Whether `value` is a non-executable address with bytes in the file.
fn is_data_address(bin: &Binary<'_>, value: u64) -> bool {
    bin.load_containing(value).is_some_and(|l| !l.is_exec()) && bin.vaddr_to_offset(value).is_some()
}

/// `gofunc` at word `idx`, accepted if it is file-backed data not below `rodata` (the
/// preceding field in every layout).
fn gofunc_at(bin: &Binary<'_>, addr: u64, idx: u64) -> Option<u64> {
    let value = word(bin, addr, idx)?;
    let rodata = word(bin, addr, idx.checked_sub(1)?)?;
    (rodata <= value && is_data_address(bin, value)).then_some(value)
}

/// `types`, accepted if `types < etypes` and both are file-backed data. The `etypes` index
/// moved in 1.27 (`typedesclen` was inserted), so the minor version is required.
fn types_at(bin: &Binary<'_>, addr: u64, go118: bool, minor: u32) -> Option<u64> {
    let (types_idx, etypes_idx) = match (go118, minor) {
        (true, _) => (35, 36),
        (false, m) if m < 27 => (37, 38),
        (false, 27) => (37, 39),
        _ => return None,
    };
    let types = word(bin, addr, types_idx)?;
    let etypes = word(bin, addr, etypes_idx)?;
    let ok = types < etypes && is_data_address(bin, types) && bin.load_containing(etypes).is_some();
    ok.then_some(types)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Options, Section, elf64};
    use super::*;

    const PCLN: u64 = 0x50_0000;
    const MD: u64 = 0x60_0100;

    fn facts() -> HeaderFacts {
        HeaderFacts {
            addr: PCLN,
            funcname_offset: 0x48,
            pcln_offset: 0x1000,
            nfunc: 10,
            first_entry_off: 0x20,
            go118: false,
        }
    }

    /// `.noptrdata` with a decoy pointer to the pclntab at +0 and a Go 1.20–1.26 layout
    /// module data at +0x100.
    fn noptrdata() -> Vec<u8> {
        let mut d = vec![0u8; 0x100 + 44 * 8];
        d[..8].copy_from_slice(&PCLN.to_le_bytes());
        let words = [
            (0, PCLN),
            (1, PCLN + 0x48),
            (16, PCLN + 0x1000),
            (17, 11),
            (20, 0x40_1020),
            (22, 0x40_1000),
            (37, PCLN + 0x100),
            (38, PCLN + 0x400),
            (39, PCLN),
            (40, PCLN + 0x800),
        ];
        for (i, v) in words {
            d[0x100 + i * 8..0x100 + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        d
    }

    fn with_binary(data: &[u8], f: impl FnOnce(&Binary<'_>)) {
        let rodata = vec![0u8; 0x2000];
        let sections = [
            Section::new(".text", 0x40_1000, &[0xc3; 0x40], 5),
            Section::new(".rodata", PCLN, &rodata, 4),
            Section::new(".noptrdata", 0x60_0000, data, 6),
        ];
        let file = elf64(&sections, Options::default());
        f(&Binary::parse(&file).unwrap());
    }

    #[test]
    fn finds_and_validates_moduledata() {
        with_binary(&noptrdata(), |bin| {
            let md = find(bin, &facts(), Some(21)).unwrap();
            let want = ModuleData {
                address: MD,
                text: 0x40_1000,
                gofunc: Some(PCLN + 0x800),
                types: Some(PCLN + 0x100),
            };
            assert_eq!(md, want);
            assert_eq!(find(bin, &facts(), None).unwrap().gofunc, Some(PCLN + 0x800), "tries both layouts");
            let md27 = find(bin, &facts(), Some(27)).unwrap();
            assert_eq!((md27.gofunc, md27.types), (None, None), "1.27 layout does not validate here");
        });
    }

    #[test]
    fn rejects_inconsistent_candidates() {
        for (word, value) in [(1usize, 0u64), (17, 12), (20, 0x40_1000), (22, 0)] {
            let mut d = noptrdata();
            d[0x100 + word * 8..0x100 + word * 8 + 8].copy_from_slice(&value.to_le_bytes());
            with_binary(&d, |bin| assert_eq!(find(bin, &facts(), Some(21)), None, "word {word}"));
        }
    }

    #[test]
    fn gofunc_layouts() {
        assert_eq!(gofunc_indexes(true, Some(19)), &[38]);
        assert_eq!(gofunc_indexes(false, Some(20)), &[40]);
        assert_eq!(gofunc_indexes(false, Some(26)), &[40]);
        assert_eq!(gofunc_indexes(false, Some(27)), &[43]);
        assert_eq!(gofunc_indexes(false, None), &[43, 40]);
        assert_eq!(gofunc_indexes(false, Some(28)), &[43, 40]);
    }
}
