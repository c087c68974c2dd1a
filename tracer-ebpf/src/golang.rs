//! What the Go probes need to know about the target's runtime, which changes from one Go
//! version to the next: where fields are in its structures, and how its enums number
//! things. Userspace reads these from the target's DWARF, or from tables generated from
//! each Go toolchain for stripped binaries, and sets the `GO_OFFSETS` global.

/// Byte offsets and values for the target's Go version; 0 for an offset means "not
/// present in this version" where the field says so.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    /// `runtime.g`: goid, gopc, startpc, waiting, _defer; parentGoid (0: absent, before
    /// Go 1.21).
    pub g_goid: u32,
    pub g_gopc: u32,
    pub g_startpc: u32,
    pub g_parent_goid: u32,
    pub g_waiting: u32,
    pub g_defer: u32,
    /// `runtime._defer`: heap (a byte), pc.
    pub defer_heap: u32,
    pub defer_pc: u32,
    /// `runtime.special.kind` (a byte) and the value of `_KindSpecialProfile`.
    pub special_kind: u32,
    pub special_profile: u32,
    /// Nonzero when pops go through `runtime.popDefer(gp)` (Go 1.23+; the record is
    /// `gp._defer`), 0 when through `runtime.freedefer(d)`.
    pub pop_takes_g: u32,
    /// `runtime._defer.openDefer` (a byte; Go 1.21 and before, else 0): records of
    /// open-coded defers made during a panic, which no `deferproc` pushed.
    pub defer_open: u32,
    /// Address, in the target, of `runtime.gcController.heapMarked` (0: unknown).
    pub heap_marked_addr: u64,
}
const _: () = assert!(core::mem::size_of::<GoOffsets>() == 56);
