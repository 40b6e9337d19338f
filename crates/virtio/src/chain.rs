//! Walking a descriptor chain the guest offered, with every malformation an error.
//!
//! `virtio-queue`'s own chain iterator stops silently on a loop, an out-of-range index or an
//! unreadable descriptor, which a device cannot tell from a short chain. Here each of those is
//! a [`ChainError`], every buffer is checked to lie in guest RAM, and the spec's rule that all
//! device-readable buffers come before the device-writable ones is enforced. The result is
//! plain lists of segments that [`ChainReader`] and [`ChainWriter`] consume; writes go
//! through [`GuestRam`] so they are reported.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use crate::guest_ram::{GuestRam, GuestRamError};

/// The most descriptors one chain may have (direct plus indirect), to bound work per request.
pub const MAX_CHAIN_DESCRIPTORS: usize = 1024;
/// Size of one split-ring descriptor.
const DESC_SIZE: u64 = 16;

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// What is wrong with a descriptor chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor index {index} is outside the table of {size}")]
    IndexOutOfRange { index: u16, size: u32 },
    #[error("the chain has more than {MAX_CHAIN_DESCRIPTORS} descriptors (or loops)")]
    TooLong,
    #[error("descriptor table or buffer outside guest RAM: {0}")]
    OutOfRam(#[from] GuestRamError),
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    #[error("an indirect table inside an indirect table")]
    NestedIndirect,
    #[error("indirect table length {0} is not a non-zero multiple of 16")]
    BadIndirectLength(u32),
    #[error("zero-length descriptor")]
    ZeroLength,
}

/// A chain split into its device-readable and device-writable parts.
///
/// Structural faults (loops, indices outside the table, a table outside RAM) make
/// [`DescChain::walk`] fail; a bad *buffer* is recorded in `bad_buffer` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescChain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
    /// The first buffer that is empty or not (entirely) in guest RAM, if any. The chain's
    /// structure is sound, so the request can still be failed with a status; reads and
    /// writes through [`ChainReader`] / [`ChainWriter`] check every address again anyway.
    pub bad_buffer: Option<ChainError>,
}

#[derive(Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(ram: &GuestRam, table: u64, index: u16) -> Result<RawDesc, ChainError> {
    let addr =
        table
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(GuestRamError::OutOfRange {
                addr: table,
                len: DESC_SIZE,
            })?;
    let mut b = [0u8; DESC_SIZE as usize];
    ram.read(addr, &mut b)?;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    Ok(RawDesc {
        addr: u64_at(0),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

impl DescChain {
    /// Walk the chain starting at `head` in the descriptor table at `table` of `size` entries.
    pub fn walk(ram: &GuestRam, table: u64, size: u16, head: u16) -> Result<Self, ChainError> {
        let mut chain = DescChain {
            head,
            readable: Vec::new(),
            writable: Vec::new(),
            bad_buffer: None,
        };
        let mut table = table;
        let mut table_size = u32::from(size);
        let mut index = head;
        let mut indirect = false;
        let mut count = 0usize;
        loop {
            if u32::from(index) >= table_size {
                return Err(ChainError::IndexOutOfRange {
                    index,
                    size: table_size,
                });
            }
            count += 1;
            if count > MAX_CHAIN_DESCRIPTORS {
                return Err(ChainError::TooLong);
            }
            let d = read_desc(ram, table, index)?;
            if d.flags & VRING_DESC_F_INDIRECT as u16 != 0 {
                if indirect {
                    return Err(ChainError::NestedIndirect);
                }
                if d.len == 0 || d.len % DESC_SIZE as u32 != 0 {
                    return Err(ChainError::BadIndirectLength(d.len));
                }
                if !ram.contains(d.addr, u64::from(d.len)) {
                    return Err(GuestRamError::OutOfRange {
                        addr: d.addr,
                        len: u64::from(d.len),
                    }
                    .into());
                }
                indirect = true;
                table = d.addr;
                table_size = d.len / DESC_SIZE as u32;
                index = 0;
                continue;
            }
            if d.len == 0 {
                chain.bad_buffer.get_or_insert(ChainError::ZeroLength);
            } else if !ram.contains(d.addr, u64::from(d.len)) {
                chain.bad_buffer.get_or_insert(
                    GuestRamError::OutOfRange {
                        addr: d.addr,
                        len: u64::from(d.len),
                    }
                    .into(),
                );
            }
            let seg = Segment {
                addr: d.addr,
                len: d.len,
            };
            if d.flags & VRING_DESC_F_WRITE as u16 != 0 {
                chain.writable.push(seg);
            } else if chain.writable.is_empty() {
                chain.readable.push(seg);
            } else {
                return Err(ChainError::ReadableAfterWritable);
            }
            if d.flags & VRING_DESC_F_NEXT as u16 == 0 {
                return Ok(chain);
            }
            index = d.next;
        }
    }

    /// Total bytes of the device-readable part.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes of the device-writable part.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// The guest address `offset` bytes into `seg` (an error if it wraps around).
fn seg_addr(seg: &Segment, offset: u32) -> Result<u64, GuestRamError> {
    seg.addr
        .checked_add(u64::from(offset))
        .ok_or(GuestRamError::OutOfRange {
            addr: seg.addr,
            len: u64::from(seg.len),
        })
}

/// Reads the device-readable part of a chain as one byte stream.
pub struct ChainReader<'a> {
    ram: &'a GuestRam,
    segs: &'a [Segment],
    /// Offset into `segs[0]`.
    offset: u32,
}

impl<'a> ChainReader<'a> {
    pub fn new(ram: &'a GuestRam, segs: &'a [Segment]) -> Self {
        ChainReader {
            ram,
            segs,
            offset: 0,
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.segs.iter().map(|s| u64::from(s.len)).sum::<u64>() - u64::from(self.offset)
    }

    /// Read up to `buf.len()` bytes; returns how many were read (less only at the end).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, GuestRamError> {
        let mut done = 0;
        while done < buf.len() {
            let Some(seg) = self.segs.first() else { break };
            let avail = (seg.len - self.offset) as usize;
            let n = avail.min(buf.len() - done);
            self.ram
                .read(seg_addr(seg, self.offset)?, &mut buf[done..done + n])?;
            done += n;
            self.offset += n as u32;
            if self.offset == seg.len {
                self.segs = &self.segs[1..];
                self.offset = 0;
            }
        }
        Ok(done)
    }
}

/// Writes into the device-writable part of a chain as one byte stream, reporting each write.
pub struct ChainWriter<'a> {
    ram: &'a GuestRam,
    segs: &'a [Segment],
    offset: u32,
    written: u64,
}

impl<'a> ChainWriter<'a> {
    pub fn new(ram: &'a GuestRam, segs: &'a [Segment]) -> Self {
        ChainWriter {
            ram,
            segs,
            offset: 0,
            written: 0,
        }
    }

    /// Bytes of room left.
    pub fn remaining(&self) -> u64 {
        self.segs.iter().map(|s| u64::from(s.len)).sum::<u64>() - u64::from(self.offset)
    }

    /// Bytes written so far (the used-ring length).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Write as much of `buf` as fits; returns how many bytes were written.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, GuestRamError> {
        let mut done = 0;
        while done < buf.len() {
            let Some(seg) = self.segs.first() else { break };
            let avail = (seg.len - self.offset) as usize;
            let n = avail.min(buf.len() - done);
            self.ram
                .write(seg_addr(seg, self.offset)?, &buf[done..done + n])?;
            done += n;
            self.written += n as u64;
            self.offset += n as u32;
            if self.offset == seg.len {
                self.segs = &self.segs[1..];
                self.offset = 0;
            }
        }
        Ok(done)
    }
}

/// The segments covering the first `len` bytes of `segs`, and the address of byte `len`
/// (for a status byte at the end of the writable part). `None` if `segs` is shorter.
pub fn split_at(segs: &[Segment], len: u64) -> Option<(Vec<Segment>, u64)> {
    let mut head = Vec::new();
    let mut left = len;
    for s in segs {
        if left < u64::from(s.len) {
            if left > 0 {
                head.push(Segment {
                    addr: s.addr,
                    len: left as u32,
                });
            }
            // An address that wraps around is no address at all.
            return s.addr.checked_add(left).map(|a| (head, a));
        }
        head.push(*s);
        left -= u64::from(s.len);
    }
    None
}
