//! Draining the ring buffer.
//!
//! The kernel side wakes the reader only when a good share of the ring is full, so the
//! session also drains on a short timer; either way every record is consumed here.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as
        // long as the AsyncFd owns the ring buffer.
        let ring =
            unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Self { ring })
    }

    /// Waits until the kernel signals waiting data.
    pub async fn readable(&self) -> io::Result<()> {
        let mut guard = self.ring.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every waiting record to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(record) = ring.next() {
            f(&record);
            n += 1;
        }
        n
    }
}
