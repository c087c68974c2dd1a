//! Calls of kernel functions (kfuncs), through the placeholders of `tracer_ebpf::kfunc`
//! that userspace rewrites into real kfunc calls before loading.

use tracer_ebpf::kfunc;

/// `bpf_session_is_return()`: false in a uprobe session program's entry half, true in
/// its return half. Only for programs loaded as uprobe session programs (the verifier
/// refuses the call anywhere else, and the placeholder is not a helper).
#[inline(always)]
pub fn session_is_return() -> bool {
    // SAFETY: a call through a constant "address", which LLVM's BPF backend emits as
    // `call imm` (the way aya-ebpf calls helpers); the loader makes it the kfunc call,
    // which takes no argument and returns a bool, before the verifier sees it.
    unsafe {
        let f: unsafe extern "C" fn() -> bool = core::mem::transmute(kfunc::SESSION_IS_RETURN as usize);
        f()
    }
}
