//! Where on a function to put its uprobe. The kernel emulates a few instructions at a
//! probe (push of a register, jumps, calls) and single-steps every other one out of line,
//! which costs ten times more: glibc's `free` starts with `test %rdi,%rdi`, a single-step
//! on every call. So the probe goes on the first emulated instruction, as long as every
//! instruction before it leaves the arguments and the stack pointer as they were (the
//! entry program then sees exactly what it would at the entry) and no jump in the
//! function lands in between (the probe would fire twice). Otherwise, the entry.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register,
};

/// Instructions looked at before giving up on finding an emulated one.
const LOOKAHEAD: usize = 4;

/// Registers that hold arguments (SysV x86-64) or the stack pointer.
const KEPT: [Register; 7] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9, Register::RSP];

/// Bytes past the entry of the function whose machine code is `code` (starting at
/// virtual address `ip`) at which to put the probe; 0 for the entry itself.
pub fn fast_offset(code: &[u8], ip: u64) -> u64 {
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
                && KEPT.contains(&r.register().full_register())
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
        assert_eq!(fast_offset(&code, 0x98ef0), 3);
    }

    #[test]
    fn a_function_starting_with_a_push_keeps_its_entry() {
        // push %r12; push %rbp
        assert_eq!(fast_offset(&[0x41, 0x54, 0x55], 0x1000), 0);
    }

    #[test]
    fn writing_an_argument_first_keeps_the_entry() {
        // mov %rsi,%rax; mul %rdx; mov %rax,%rsi; jo ...: mul writes rdx.
        let code = [0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x48, 0x89, 0xc6, 0x70, 0x05];
        assert_eq!(fast_offset(&code, 0x1000), 0);
    }

    #[test]
    fn a_jump_back_into_the_skipped_part_keeps_the_entry() {
        // test %rdi,%rdi; je +0; jmp back to +3 (the je): the je is a branch target.
        let code = [0x48, 0x85, 0xff, 0x74, 0x00, 0xeb, 0xfc];
        assert_eq!(fast_offset(&code, 0x1000), 0);
        // A jump to the entry itself is fine: the probe is not there.
        let code = [0x48, 0x85, 0xff, 0x74, 0x00, 0xeb, 0xf9];
        assert_eq!(fast_offset(&code, 0x1000), 3);
    }

    #[test]
    fn rip_relative_compare_then_push() {
        // cmpb $0x0,0x140201(%rip); push %r12
        let code = [0x80, 0x3d, 0x01, 0x02, 0x14, 0x00, 0x00, 0x41, 0x54];
        assert_eq!(fast_offset(&code, 0x9a280), 7);
    }
}
