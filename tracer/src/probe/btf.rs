//! Facts about the running kernel from its own type information
//! (`/sys/kernel/btf/vmlinux`): where `exit_code` is in `struct task_struct`, which the
//! exit tracepoint reads (its record has no exit status), and the BTF ids of the kernel
//! functions the session programs call (`multi::kfunc`). aya does not expose either, and
//! BTF is simple enough to walk here: a header, types, strings.

const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;

/// The kernel's BTF, read once by whoever needs it.
pub fn vmlinux() -> Option<Vec<u8>> {
    std::fs::read("/sys/kernel/btf/vmlinux").ok()
}

/// The byte offset of `exit_code` in `struct task_struct`.
pub fn task_exit_code_offset(vmlinux: &[u8]) -> Option<u32> {
    member_offset(vmlinux, "task_struct", "exit_code")
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// One type of a BTF blob: its id, kind, member count, name, and the bytes after the
/// 12-byte common part (members, parameters, ...).
struct Type<'a> {
    id: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    name: &'a [u8],
    body: &'a [u8],
}

/// The types and strings sections of a little-endian BTF blob.
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types = section(u32_at(data, 8)? as usize, u32_at(data, 12)? as usize)?;
        let strings = section(u32_at(data, 16)? as usize, u32_at(data, 20)? as usize)?;
        Some(Self { types, strings })
    }

    fn name(&self, off: u32) -> Option<&'a [u8]> {
        let rest = self.strings.get(off as usize..)?;
        rest.get(..rest.iter().position(|b| *b == 0)?)
    }

    /// The first type `f` maps to `Some`, walking in id order. `None` at the end, or at
    /// the first type that cannot be read (a kind unknown here, a type cut short).
    fn find<T>(&self, mut f: impl FnMut(&Type<'a>) -> Option<T>) -> Option<T> {
        let mut at = 0usize;
        let mut id = 1u32;
        while at < self.types.len() {
            let (name_off, info) = (u32_at(self.types, at)?, u32_at(self.types, at + 4)?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let start = at.checked_add(12)?;
            let end = start.checked_add(extra_bytes(kind, vlen)?)?;
            let ty = Type {
                id,
                kind,
                vlen,
                kind_flag: info >> 31 != 0,
                name: self.name(name_off)?,
                body: self.types.get(start..end)?,
            };
            if let Some(found) = f(&ty) {
                return Some(found);
            }
            at = end;
            id += 1;
        }
        None
    }
}

/// The byte offset of `member` in the struct named `strukt`, from raw BTF.
fn member_offset(data: &[u8], strukt: &str, member: &str) -> Option<u32> {
    let btf = Btf::parse(data)?;
    let s = btf.find(|t| {
        (t.kind == KIND_STRUCT && t.name == strukt.as_bytes()).then_some((t.vlen, t.kind_flag, t.body))
    });
    let (vlen, kind_flag, body) = s?;
    (0..vlen).find_map(|i| {
        let m = i * 12;
        (btf.name(u32_at(body, m)?)? == member.as_bytes()).then_some(())?;
        let offset = u32_at(body, m + 8)?;
        let bits = if kind_flag { offset & 0xff_ffff } else { offset };
        Some(bits / 8)
    })
}

/// The BTF id of the function (`BTF_KIND_FUNC`) named `name`: what a kfunc call's `imm`
/// holds.
pub fn func_id(data: &[u8], name: &str) -> Option<u32> {
    Btf::parse(data)?.find(|t| (t.kind == KIND_FUNC && t.name == name.as_bytes()).then_some(t.id))
}

/// Bytes after the 12-byte common part, by BTF kind.
fn extra_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // int, var, decl tag
        3 => 12,                      // array
        4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
        6 | 13 => vlen * 8,           // enum, func proto
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small BTF blob: [1] INT "int", [2] STRUCT "task" { int a; int exit_code; },
    /// [3] FUNC_PROTO () -> int, [4] FUNC "bpf_session_is_return", [5] ENUM64 "e" {X}.
    pub(crate) fn blob() -> Vec<u8> {
        let strings = b"\0int\0task\0a\0exit_code\0bpf_session_is_return\0e\0X\0";
        let off = |s: &str| -> u32 {
            let needle = [b"\0", s.as_bytes(), b"\0"].concat();
            strings.windows(needle.len()).position(|w| w == needle).unwrap() as u32 + 1
        };
        let mut t: Vec<u32> = Vec::new();
        t.extend([off("int"), 1 << 24, 4, 32]); // INT, size 4, 32 bits
        t.extend([off("task"), 4 << 24 | 2, 8, off("a"), 1, 0, off("exit_code"), 1, 32]);
        t.extend([0, 13 << 24, 1]); // FUNC_PROTO returning [1], no parameters
        t.extend([off("bpf_session_is_return"), 12 << 24 | 1, 3]); // FUNC, global
        t.extend([off("e"), 19 << 24 | 1, 8, off("X"), 0, 1]); // ENUM64 X = 1 << 32
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend(v.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn the_running_kernel_says_where_exit_code_is() {
        // leaktracer requires a kernel with BTF (README), so this one must have it.
        let offset = vmlinux().and_then(|v| task_exit_code_offset(&v)).expect("task_struct.exit_code in BTF");
        assert!(offset > 0 && offset < 16384, "{offset}");
    }

    #[test]
    fn members_and_functions_of_a_synthetic_blob() {
        let b = blob();
        assert_eq!(member_offset(&b, "task", "exit_code"), Some(4));
        assert_eq!(member_offset(&b, "task", "nope"), None);
        assert_eq!(func_id(&b, "bpf_session_is_return"), Some(4));
        // A struct is not a function; a function past an unknown kind is not found.
        assert_eq!(func_id(&b, "task"), None);
        let mut cut = b.clone();
        cut[24 + 16 + 7] = 31; // [2]'s kind byte: an unknown kind
        assert_eq!(func_id(&cut, "bpf_session_is_return"), None);
    }

    #[test]
    fn garbage_is_not_a_struct() {
        assert_eq!(member_offset(&[], "a", "b"), None);
        assert_eq!(member_offset(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], "a", "b"), None);
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert_eq!(member_offset(&noise, "task_struct", "exit_code"), None);
        assert_eq!(func_id(&noise, "bpf_session_is_return"), None);
        let mut b = blob();
        b[12] = 0xff; // the types section runs past the end
        assert_eq!(func_id(&b, "bpf_session_is_return"), None);
    }
}
