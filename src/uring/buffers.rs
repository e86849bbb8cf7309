//! The provided buffer ring (`IORING_REGISTER_PBUF_RING`): receive buffers
//! the kernel picks from only when bytes arrive, so a socket waiting for
//! data owns no buffer. A buffer goes back at the ring's tail once its bytes
//! were copied out.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id receives name (the ring has one group).
pub(super) const GROUP: u16 = 0;

/// `count` buffers of `size` bytes registered with one ring.
pub(super) struct BufRing {
    /// The entries shared with the kernel (page aligned, `count` of them).
    entries: *mut BufRingEntry,
    /// The buffers' memory: `count * size` bytes.
    memory: *mut u8,
    size: usize,
    mask: u16,
    /// The tail as written here; `give_back` publishes it to the kernel.
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes with `ring`.
    ///
    /// The memory is never freed (see `Drop`): a ring lives as long as its
    /// worker thread.
    pub(super) fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let entries_layout =
            std::alloc::Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let memory_layout = std::alloc::Layout::from_size_align(count as usize * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let entries = unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let memory = unsafe { std::alloc::alloc(memory_layout) };
        if entries.is_null() || memory.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "io_uring receive buffers"));
        }
        let mut this = Self {
            entries,
            memory,
            size,
            mask: count - 1,
            tail: 0,
        };
        // SAFETY: the entries are valid for `count` slots and are never freed
        // (see `Drop`), so they outlive the registration.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, GROUP, 0)?
        };
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    pub(super) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid & self.mask;
        let len = len.min(self.size);
        // SAFETY: `bid` is within the `count` buffers and `len` within one
        // buffer; the kernel wrote these bytes before posting the completion
        // and writes this buffer again only after `give_back`.
        unsafe { std::slice::from_raw_parts(self.memory.add(bid as usize * self.size), len) }
    }

    /// Hands buffer `bid` back to the kernel.
    pub(super) fn give_back(&mut self, bid: u16) {
        self.push(bid & self.mask);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        // SAFETY: the slot index is masked into the ring; the kernel reads
        // only slots between its head and the published tail, and this one
        // is at the unpublished tail.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        // SAFETY: `bid` is within the buffers (masked by every caller).
        entry.set_addr(unsafe { self.memory.add(bid as usize * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail field lies in the first entry, valid and aligned
        // for a u16; the kernel reads it concurrently, hence the atomic.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// Whether `ring`'s kernel takes a provided buffer ring (Linux 5.19 and
/// later): registers a ring of one entry and unregisters it again.
pub(super) fn probe(ring: &IoUring) -> io::Result<()> {
    let layout = std::alloc::Layout::from_size_align(4096, 4096).map_err(io::Error::other)?;
    // SAFETY: the layout has a non-zero size.
    let entries = unsafe { std::alloc::alloc_zeroed(layout) };
    if entries.is_null() {
        return Err(io::Error::new(io::ErrorKind::OutOfMemory, "io_uring probe"));
    }
    // SAFETY: the memory is valid for one entry and stays allocated until
    // the registration is gone (unregistered below, or refused).
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(entries as u64, 1, GROUP, 0)
    };
    let unregistered = registered.and_then(|()| ring.submitter().unregister_buf_ring(GROUP));
    if unregistered.is_ok() {
        // SAFETY: allocated above with this layout; the kernel no longer names it.
        unsafe { std::alloc::dealloc(entries, layout) };
    }
    unregistered
}

impl Drop for BufRing {
    /// Leaks the memory on purpose: after the ring's file is closed the
    /// kernel tears its requests down asynchronously, and nothing here can
    /// tell when it stopped using the buffers. A ring lives as long as its
    /// worker thread, so this happens once per thread, at its end.
    fn drop(&mut self) {}
}
