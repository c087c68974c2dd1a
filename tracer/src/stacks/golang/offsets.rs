//! The runtime struct offsets the tracer's BPF programs need, read from DWARF.
//!
//! For binaries with DWARF the tracer calls this at attach time. For stripped binaries it
//! uses a table keyed by Go minor version that an xtask generates by calling
//! [`offsets_from_dwarf`] on probe programs built with every supported toolchain.
//! Fields that exist only in some Go versions are `Option`; all others are required and
//! their absence is an error (an unknown layout must not be guessed).

use std::path::Path;

use super::binary::{self, Binary};
use super::dwarf::DwarfInfo;
use super::{Error, Result};

/// Byte offsets of runtime struct members (amd64/arm64 layouts are identical).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeOffsets {
    /// `sizeof(runtime.g)`.
    pub g_size: u64,
    /// `runtime.g._defer`.
    pub g_defer: u64,
    /// `runtime.g.m`.
    pub g_m: u64,
    /// `runtime.g.atomicstatus`.
    pub g_atomicstatus: u64,
    /// `runtime.g.goid`.
    pub g_goid: u64,
    /// `runtime.g.waitsince`.
    pub g_waitsince: u64,
    /// `runtime.g.waitreason`.
    pub g_waitreason: u64,
    /// `runtime.g.parentGoid` (Go 1.21+).
    pub g_parent_goid: Option<u64>,
    /// `runtime.g.gopc`.
    pub g_gopc: u64,
    /// `runtime.g.startpc`.
    pub g_startpc: u64,
    /// `runtime.g.waiting` (`*sudog`).
    pub g_waiting: u64,
    /// `runtime.g.stack.lo`.
    pub g_stack_lo: u64,
    /// `runtime.g.stack.hi`.
    pub g_stack_hi: u64,
    /// `runtime.m.curg`.
    pub m_curg: u64,
    /// `runtime.m.procid`.
    pub m_procid: u64,
    /// `runtime._defer.heap`.
    pub defer_heap: u64,
    /// `runtime._defer.sp`.
    pub defer_sp: u64,
    /// `runtime._defer.pc`.
    pub defer_pc: u64,
    /// `runtime._defer.link`.
    pub defer_link: u64,
    /// `runtime._defer.openDefer` (Go ≤1.21).
    pub defer_open_defer: Option<u64>,
    /// `runtime._defer.rangefunc` (Go 1.22+).
    pub defer_rangefunc: Option<u64>,
    /// `runtime.special.kind`.
    pub special_kind: u64,
    /// `runtime.gcControllerState.heapLive`.
    pub gc_heap_live: u64,
    /// `runtime.gcControllerState.heapMarked`.
    pub gc_heap_marked: u64,
    /// `runtime.sudog.g`.
    pub sudog_g: u64,
    /// `runtime.sudog.c` (the channel).
    pub sudog_c: u64,
    /// `runtime.sudog.isSelect`.
    pub sudog_is_select: u64,
    /// `runtime.sudog.waitlink`.
    pub sudog_waitlink: u64,
    /// `runtime.moduledata.types`.
    pub moduledata_types: u64,
}

/// Reads the file at `path` and extracts [`RuntimeOffsets`] from its DWARF.
pub fn offsets_from_dwarf(path: &Path) -> Result<RuntimeOffsets> {
    let data = binary::read_file(path, binary::DEFAULT_FILE_LIMIT)?;
    let bin = Binary::parse(&data)?;
    let dwarf = DwarfInfo::load(&bin)?.ok_or(Error::NotFound("DWARF (.debug_info)"))?;
    RuntimeOffsets::from_dwarf(&dwarf)
}

/// Looks up a required member.
fn req(d: &DwarfInfo<'_>, ty: &str, path: &str) -> Result<u64> {
    d.member_offset(ty, path).ok_or(Error::NotFound("runtime struct member in DWARF"))
}

impl RuntimeOffsets {
    /// Extracts all offsets from an indexed DWARF.
    pub fn from_dwarf(d: &DwarfInfo<'_>) -> Result<Self> {
        let mut o = Self::g_offsets(d)?;
        o.m_curg = req(d, "runtime.m", "curg")?;
        o.m_procid = req(d, "runtime.m", "procid")?;
        o.defer_heap = req(d, "runtime._defer", "heap")?;
        o.defer_sp = req(d, "runtime._defer", "sp")?;
        o.defer_pc = req(d, "runtime._defer", "pc")?;
        o.defer_link = req(d, "runtime._defer", "link")?;
        o.defer_open_defer = d.member_offset("runtime._defer", "openDefer");
        o.defer_rangefunc = d.member_offset("runtime._defer", "rangefunc");
        o.special_kind = req(d, "runtime.special", "kind")?;
        o.gc_heap_live = req(d, "runtime.gcControllerState", "heapLive")?;
        o.gc_heap_marked = req(d, "runtime.gcControllerState", "heapMarked")?;
        o.sudog_g = req(d, "runtime.sudog", "g")?;
        o.sudog_c = req(d, "runtime.sudog", "c")?;
        o.sudog_is_select = req(d, "runtime.sudog", "isSelect")?;
        o.sudog_waitlink = req(d, "runtime.sudog", "waitlink")?;
        o.moduledata_types = req(d, "runtime.moduledata", "types")?;
        Ok(o)
    }

    /// The `runtime.g` fields.
    fn g_offsets(d: &DwarfInfo<'_>) -> Result<Self> {
        let g = |path| req(d, "runtime.g", path);
        Ok(RuntimeOffsets {
            g_size: d.struct_size("runtime.g").ok_or(Error::NotFound("runtime.g in DWARF"))?,
            g_defer: g("_defer")?,
            g_m: g("m")?,
            g_atomicstatus: g("atomicstatus")?,
            g_goid: g("goid")?,
            g_waitsince: g("waitsince")?,
            g_waitreason: g("waitreason")?,
            g_parent_goid: d.member_offset("runtime.g", "parentGoid"),
            g_gopc: g("gopc")?,
            g_startpc: g("startpc")?,
            g_waiting: g("waiting")?,
            g_stack_lo: g("stack.lo")?,
            g_stack_hi: g("stack.hi")?,
            ..Self::default()
        })
    }

    /// `(name, value)` for every field, in declaration order, for printing tables.
    pub fn fields(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("g.size", Some(self.g_size)),
            ("g._defer", Some(self.g_defer)),
            ("g.m", Some(self.g_m)),
            ("g.atomicstatus", Some(self.g_atomicstatus)),
            ("g.goid", Some(self.g_goid)),
            ("g.waitsince", Some(self.g_waitsince)),
            ("g.waitreason", Some(self.g_waitreason)),
            ("g.parentGoid", self.g_parent_goid),
            ("g.gopc", Some(self.g_gopc)),
            ("g.startpc", Some(self.g_startpc)),
            ("g.waiting", Some(self.g_waiting)),
            ("g.stack.lo", Some(self.g_stack_lo)),
            ("g.stack.hi", Some(self.g_stack_hi)),
            ("m.curg", Some(self.m_curg)),
            ("m.procid", Some(self.m_procid)),
            ("_defer.heap", Some(self.defer_heap)),
            ("_defer.sp", Some(self.defer_sp)),
            ("_defer.pc", Some(self.defer_pc)),
            ("_defer.link", Some(self.defer_link)),
            ("_defer.openDefer", self.defer_open_defer),
            ("_defer.rangefunc", self.defer_rangefunc),
            ("special.kind", Some(self.special_kind)),
            ("gcControllerState.heapLive", Some(self.gc_heap_live)),
            ("gcControllerState.heapMarked", Some(self.gc_heap_marked)),
            ("sudog.g", Some(self.sudog_g)),
            ("sudog.c", Some(self.sudog_c)),
            ("sudog.isSelect", Some(self.sudog_is_select)),
            ("sudog.waitlink", Some(self.sudog_waitlink)),
            ("moduledata.types", Some(self.moduledata_types)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{TestStruct, dwarf_with_structs, elf_with_debug};
    use super::*;

    /// The Go 1.22+ shape of every struct this module reads, with made-up offsets.
    fn structs(with_parent_goid: bool) -> Vec<TestStruct<'static>> {
        let g: &[(&str, u64, Option<&str>)] = &[
            ("stack", 0, Some("runtime.stack")),
            ("_defer", 40, None),
            ("m", 48, None),
            ("atomicstatus", 144, None),
            ("goid", 152, None),
            ("waitsince", 168, None),
            ("waitreason", 176, None),
            ("parentGoid", 280, None),
            ("gopc", 288, None),
            ("startpc", 304, None),
            ("waiting", 320, None),
        ];
        let g_len = if with_parent_goid { g.len() } else { 7 };
        vec![
            ("runtime.g", 456, &g[..g_len]),
            ("runtime.stack", 16, &[("lo", 0, None), ("hi", 8, None)]),
            ("runtime.m", 1000, &[("procid", 64, None), ("curg", 184, None)]),
            (
                "runtime._defer",
                48,
                &[
                    ("heap", 0, None),
                    ("rangefunc", 1, None),
                    ("sp", 8, None),
                    ("pc", 16, None),
                    ("link", 32, None),
                ],
            ),
            ("runtime.special", 24, &[("kind", 16, None)]),
            ("runtime.gcControllerState", 400, &[("heapLive", 104, None), ("heapMarked", 152, None)]),
            (
                "runtime.sudog",
                96,
                &[("g", 0, None), ("isSelect", 60, None), ("waitlink", 72, None), ("c", 88, None)],
            ),
            ("runtime.moduledata", 600, &[("types", 296, None)]),
        ]
    }

    fn load(structs: &[TestStruct<'_>]) -> Result<RuntimeOffsets> {
        let file = elf_with_debug(&dwarf_with_structs(structs, 5), true);
        let bin = Binary::parse(&file)?;
        RuntimeOffsets::from_dwarf(&DwarfInfo::load(&bin)?.ok_or(Error::NotFound("dwarf"))?)
    }

    #[test]
    fn reads_every_field() {
        let o = load(&structs(true)).unwrap();
        assert_eq!((o.g_size, o.g_goid, o.g_parent_goid, o.g_stack_hi), (456, 152, Some(280), 8));
        assert_eq!((o.m_curg, o.m_procid, o.defer_open_defer, o.defer_rangefunc), (184, 64, None, Some(1)));
        assert_eq!((o.special_kind, o.gc_heap_marked, o.sudog_c, o.moduledata_types), (16, 152, 88, 296));
        assert_eq!(o.fields().len(), 29);
        assert!(o.fields().contains(&("_defer.openDefer", None)));
    }

    #[test]
    fn missing_required_member_is_an_error() {
        assert!(matches!(load(&structs(false)), Err(Error::NotFound(_))), "gopc and later are required");
        let mut partial = structs(true);
        partial.retain(|s| s.0 != "runtime.sudog");
        assert!(load(&partial).is_err());
        assert!(matches!(offsets_from_dwarf(Path::new("/nonexistent/goinfo")), Err(Error::Io { .. })));
    }
}
