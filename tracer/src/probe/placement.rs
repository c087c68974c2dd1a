//! Where on a function to put its uprobe. The kernel emulates a few instructions at a
//! probe (push of a register, jumps, calls) and single-steps every other one out of line,
//! which costs ten times more: glibc's `free` starts with `test %rdi,%rdi`, jemalloc's
//! with nine loads and shifts before its first jump, a single-step on every call. So the
//! probe goes on the first emulated instruction, as long as every instruction before it
//! leaves the function's own arguments, the stack pointer and the frame pointer as they
//! were (the entry program then sees exactly what it would at the entry: arguments, the
//! return address at the stack pointer, the caller's frame) and no jump in the function
//! lands in between (the probe would fire twice). Otherwise, the entry.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register,
};

/// Instructions looked at before giving up on finding an emulated one (jemalloc's `free`
/// has its first jump tenth).
const LOOKAHEAD: usize = 16;

/// Registers that hold arguments, in order (SysV x86-64).
const ARGUMENTS: [Register; 6] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9];

/// Bytes past the entry of the function whose machine code is `code` (starting at
/// virtual address `ip`) and which takes `arguments` integer arguments, at which to put
/// the probe; 0 for the entry itself.
pub fn fast_offset(code: &[u8], ip: u64, arguments: usize) -> u64 {
    let args = &ARGUMENTS[..arguments.min(ARGUMENTS.len())];
    let kept = |r: Register| r == Register::RSP || r == Register::RBP || args.contains(&r);
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut offset = 0;
    for _ in 0..LOOKAHEAD {
        if !decoder.can_decode() {
            return 0;
        }
        let ins = decoder.decode();
        if ins.is_invalid() {
            return 0;
        }
        if emulated(&ins) {
            return if offset != 0 && !jumped_into(code, ip, offset) { offset } else { 0 };
        }
        let writes_kept = info.info(&ins).used_registers().iter().any(|r| {
            !matches!(r.access(), OpAccess::Read | OpAccess::CondRead | OpAccess::None)
                && kept(r.register().full_register())
        });
        if ins.flow_control() != FlowControl::Next || writes_kept {
            return 0;
        }
        offset += ins.len() as u64;
    }
    0
}

/// Does the kernel emulate this instruction at a uprobe (no single-step)?
fn emulated(ins: &Instruction) -> bool {
    matches!(ins.code(), Code::Push_r64 | Code::Push_r16)
        || (matches!(
            ins.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
        ) && !ins.is_ip_rel_memory_operand()
            && (ins.is_jmp_short_or_near() || ins.is_jcc_short_or_near() || ins.is_call_near()))
}

/// Does any branch of the function land within its first `offset` bytes (after the
/// entry)?
fn jumped_into(code: &[u8], ip: u64, offset: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.is_invalid() {
            // Data or padding: stop reading, assume the worst.
            return true;
        }
        if matches!(ins.flow_control(), FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch)
            && (ins.is_jmp_short_or_near() || ins.is_jcc_short_or_near())
        {
            let target = ins.near_branch_target();
            if target > ip && target <= ip + offset {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_skips_its_test_for_the_jump() {
        // test %rdi,%rdi; je +0xbf; push %rbp; lea -0x10(%rdi),%rsi
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d, 0x77, 0xf0];
        assert_eq!(fast_offset(&code, 0x98ef0, 1), 3);
    }

    #[test]
    fn a_function_starting_with_a_push_keeps_its_entry() {
        // push %r12; push %rbp
        assert_eq!(fast_offset(&[0x41, 0x54, 0x55], 0x1000, 1), 0);
    }

    #[test]
    fn writing_an_argument_first_keeps_the_entry() {
        // mov %rsi,%rax; mul %rdx; mov %rax,%rsi; jo ...: mul writes rdx.
        let code = [0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x48, 0x89, 0xc6, 0x70, 0x05];
        assert_eq!(fast_offset(&code, 0x1000, 3), 0);
    }

    #[test]
    fn a_jump_back_into_the_skipped_part_keeps_the_entry() {
        // test %rdi,%rdi; je +0; jmp back to +3 (the je): the je is a branch target.
        let code = [0x48, 0x85, 0xff, 0x74, 0x00, 0xeb, 0xfc];
        assert_eq!(fast_offset(&code, 0x1000, 1), 0);
        // A jump to the entry itself is fine: the probe is not there.
        let code = [0x48, 0x85, 0xff, 0x74, 0x00, 0xeb, 0xf9];
        assert_eq!(fast_offset(&code, 0x1000, 1), 3);
    }

    #[test]
    fn rip_relative_compare_then_push() {
        // cmpb $0x0,0x140201(%rip); push %r12
        let code = [0x80, 0x3d, 0x01, 0x02, 0x14, 0x00, 0x00, 0x41, 0x54];
        assert_eq!(fast_offset(&code, 0x9a280, 1), 7);
    }

    /// jemalloc 5.3's `free` (Debian 12): nine straight-line instructions, then `jne`.
    const JEMALLOC_FREE: [u8; 54] = [
        0x48, 0x89, 0xf8, // mov %rdi,%rax
        0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov 0xa530e(%rip),%rdx
        0x48, 0x89, 0xf9, // mov %rdi,%rcx
        0x48, 0xc1, 0xe8, 0x1a, // shr $0x1a,%rax
        0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and $0xffffffffc0000000,%rcx
        0x25, 0xf0, 0x00, 0x00, 0x00, // and $0xf0,%eax
        0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // add %fs:0x0,%rax
        0x48, 0x01, 0xd0, // add %rdx,%rax
        0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp 0x1b0(%rax),%rcx
        0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne +0x8a
    ];

    #[test]
    fn jemalloc_free_moves_to_its_first_jump() {
        assert_eq!(fast_offset(&JEMALLOC_FREE, 0x27c60, 1), 0x30);
    }

    #[test]
    fn only_the_functions_own_arguments_are_kept() {
        // The same code writes rdx and rcx: fine for free (one argument), not for a
        // function whose third or fourth argument they hold.
        assert_eq!(fast_offset(&JEMALLOC_FREE, 0x27c60, 2), 0x30);
        assert_eq!(fast_offset(&JEMALLOC_FREE, 0x27c60, 3), 0);
    }

    #[test]
    fn writing_the_frame_pointer_keeps_the_entry() {
        // mov %rdi,%rbp; jmp +0: the caller's frame pointer is gone at the jump.
        assert_eq!(fast_offset(&[0x48, 0x89, 0xfd, 0xeb, 0x00], 0x1000, 1), 0);
    }
}
