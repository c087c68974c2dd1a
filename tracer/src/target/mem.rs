//! Reading another process's memory: bounded, by `process_vm_readv`, never trusting what
//! is read (a pointer from the target is just a number to check).

use std::io;

/// The most bytes one read may ask for.
pub const MAX_READ: usize = 16 << 20;

/// A process whose memory can be read.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pid: u32,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// Reads `buf.len()` bytes at `addr`; fails unless all of them could be read.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > MAX_READ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "read too large"));
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: one local iovec over our own buffer; the remote one is only read by the
        // kernel, which checks it against the target's address space.
        let n = unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        match usize::try_from(n) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `count` blocks of `size` bytes at the addresses given, in batches; a block
    /// that cannot be read is `None`.
    pub fn read_many(&self, addrs: &[u64], size: usize) -> Vec<Option<Vec<u8>>> {
        addrs
            .iter()
            .map(|&addr| {
                let mut buf = vec![0u8; size];
                self.read(addr, &mut buf).ok().map(|()| buf)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_refuses_bad_addresses() {
        let value: u64 = 0x1234_5678_9abc_def0;
        let mem = ProcessMemory::new(std::process::id());
        assert_eq!(mem.read_u64(&raw const value as u64).unwrap(), value);
        assert!(mem.read_u64(8).is_err(), "page zero");
        let mut big = vec![0u8; MAX_READ + 1];
        assert!(mem.read(&raw const value as u64, &mut big).is_err());
        let blocks = mem.read_many(&[&raw const value as u64, 16], 8);
        assert_eq!(blocks[0].as_deref(), Some(&value.to_le_bytes()[..]));
        assert!(blocks[1].is_none());
    }
}
