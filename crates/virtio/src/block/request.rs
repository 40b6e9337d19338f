//! One virtio-blk request: parse the chain the guest offered, run it against the image,
//! write the status byte.
//!
//! Layout (virtio 1.x §5.2.6): a 16-byte header (type, reserved, sector) in the readable
//! part, then data (readable for writes, writable for reads), then one writable status byte
//! at the very end. Anything else fails the request with IOERR (or UNSUPP for unknown
//! types); the device keeps going.

use virtio_bindings::virtio_blk::*;

use crate::block::backend::{Disk, DIRECT_MEM_ALIGN};
use crate::chain::{split_at, ChainError, ChainReader, ChainWriter, DescChain};
use crate::guest_ram::GuestRam;

pub const SECTOR_SIZE: u64 = 512;
const HEADER_LEN: usize = 16;
/// Discard / write-zeroes segment: sector u64, num_sectors u32, flags u32.
const DWZ_SEGMENT_LEN: usize = 16;
/// Most discard / write-zeroes segments one request may carry.
pub const MAX_DWZ_SEGMENTS: u64 = 16;
/// Bytes copied per step between the image and guest memory.
const CHUNK: usize = 128 * 1024;

/// The status a request ended with (the byte written for the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = VIRTIO_BLK_S_OK as isize,
    IoErr = VIRTIO_BLK_S_IOERR as isize,
    Unsupp = VIRTIO_BLK_S_UNSUPP as isize,
}

/// What a device needs to run requests.
pub struct BlockBackend<'a> {
    pub disk: &'a Disk,
    pub serial: &'a [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// Whether discard / write-zeroes were offered (not for read-only disks).
    pub discard: bool,
    pub buf: &'a mut Vec<u8>,
}

/// Run the request in `chain` (or fail it if the chain is malformed). Returns the number of
/// bytes written into the chain, for the used ring.
pub fn execute(
    ram: &GuestRam,
    chain: Result<DescChain, ChainError>,
    be: &mut BlockBackend<'_>,
) -> u32 {
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            // Without a trustworthy chain there is no status byte to write.
            tracing::debug!("virtio-blk: malformed chain: {e}");
            return 0;
        }
    };
    let wlen = chain.writable_len();
    let Some((data_out, status_addr)) = wlen
        .checked_sub(1)
        .and_then(|n| split_at(&chain.writable, n))
    else {
        tracing::debug!("virtio-blk: request without a status byte");
        return 0;
    };
    let mut written = 0u64;
    let result = match &chain.bad_buffer {
        Some(e) => Err(RequestError::BadBuffer(e.clone())),
        None => run(ram, &chain, &data_out, be, &mut written),
    };
    let status = result.unwrap_or_else(|e| {
        tracing::debug!("virtio-blk: request failed: {e}");
        e.status()
    });
    if ram.write(status_addr, &[status as u8]).is_err() {
        return 0;
    }
    u32::try_from(written + 1).unwrap_or(u32::MAX)
}

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request header is {0} bytes, need {HEADER_LEN}")]
    ShortHeader(u64),
    #[error("bad buffer: {0}")]
    BadBuffer(ChainError),
    #[error("{0}")]
    WrongDirection(&'static str),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("data length {0} is not a multiple of {SECTOR_SIZE}")]
    Unaligned(u64),
    #[error("sectors {sector}+{len} bytes run past the end of the disk")]
    OutOfDisk { sector: u64, len: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("bad discard/write-zeroes payload: {0}")]
    BadSegments(&'static str),
    #[error("guest memory: {0}")]
    Guest(#[from] crate::guest_ram::GuestRamError),
    #[error("host I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl RequestError {
    fn status(&self) -> Status {
        match self {
            RequestError::Unsupported(_) => Status::Unsupp,
            _ => Status::IoErr,
        }
    }
}

fn byte_range(disk: &Disk, sector: u64, len: u64) -> Result<u64, RequestError> {
    let out = RequestError::OutOfDisk { sector, len };
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .ok_or(RequestError::OutOfDisk { sector, len })?;
    let end = offset.checked_add(len).ok_or(out)?;
    if end > disk.len() / SECTOR_SIZE * SECTOR_SIZE {
        return Err(RequestError::OutOfDisk { sector, len });
    }
    Ok(offset)
}

fn run(
    ram: &GuestRam,
    chain: &DescChain,
    data_out: &[crate::chain::Segment],
    be: &mut BlockBackend<'_>,
    written: &mut u64,
) -> Result<Status, RequestError> {
    let mut reader = ChainReader::new(ram, &chain.readable);
    let mut header = [0u8; HEADER_LEN];
    let got = reader.read(&mut header)?;
    if got < HEADER_LEN {
        return Err(RequestError::ShortHeader(got as u64));
    }
    let req_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let mut writer = ChainWriter::new(ram, data_out);
    // A page-aligned window of the bounce buffer, so that O_DIRECT disks can use it.
    be.buf.resize(CHUNK + DIRECT_MEM_ALIGN, 0);
    let skip = be
        .buf
        .as_ptr()
        .align_offset(DIRECT_MEM_ALIGN)
        .min(DIRECT_MEM_ALIGN);
    let buf = &mut be.buf[skip..skip + CHUNK];
    match req_type {
        VIRTIO_BLK_T_IN => {
            if reader.remaining() != 0 {
                return Err(RequestError::WrongDirection(
                    "read request with device-readable data",
                ));
            }
            let len = writer.remaining();
            if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::Unaligned(len));
            }
            let offset = byte_range(be.disk, sector, len)?;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                be.disk.read_exact_at(&mut buf[..n], offset + done)?;
                writer.write(&buf[..n])?;
                done += n as u64;
            }
            *written = writer.written();
        }
        VIRTIO_BLK_T_OUT => {
            if be.disk.readonly() {
                return Err(RequestError::ReadOnly);
            }
            if writer.remaining() != 0 {
                return Err(RequestError::WrongDirection(
                    "write request with device-writable data",
                ));
            }
            let len = reader.remaining();
            if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::Unaligned(len));
            }
            let offset = byte_range(be.disk, sector, len)?;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                reader.read(&mut buf[..n])?;
                be.disk.write_all_at(&buf[..n], offset + done)?;
                done += n as u64;
            }
        }
        VIRTIO_BLK_T_FLUSH => be.disk.flush()?,
        VIRTIO_BLK_T_GET_ID => {
            writer.write(be.serial)?;
            *written = writer.written();
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES if be.discard => {
            discard_or_zero(&mut reader, be.disk, req_type == VIRTIO_BLK_T_DISCARD)?;
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES if be.disk.readonly() => {
            return Err(RequestError::ReadOnly)
        }
        other => return Err(RequestError::Unsupported(other)),
    }
    Ok(Status::Ok)
}

fn discard_or_zero(
    reader: &mut ChainReader<'_>,
    disk: &Disk,
    discard: bool,
) -> Result<(), RequestError> {
    let len = reader.remaining();
    if len == 0 || !len.is_multiple_of(DWZ_SEGMENT_LEN as u64) {
        return Err(RequestError::BadSegments(
            "length is not a non-zero multiple of 16",
        ));
    }
    if len / DWZ_SEGMENT_LEN as u64 > MAX_DWZ_SEGMENTS {
        return Err(RequestError::BadSegments("too many segments"));
    }
    let mut seg = [0u8; DWZ_SEGMENT_LEN];
    while reader.read(&mut seg)? == DWZ_SEGMENT_LEN {
        let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
        let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
        let bytes = u64::from(sectors) * SECTOR_SIZE;
        let offset = byte_range(disk, sector, bytes)?;
        if discard {
            if flags != 0 {
                return Err(RequestError::BadSegments("discard flags must be 0"));
            }
            disk.punch_hole(offset, bytes)?;
        } else if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
            return Err(RequestError::BadSegments("unknown write-zeroes flags"));
        } else if flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
            disk.punch_hole(offset, bytes)?;
        } else {
            disk.zero_range(offset, bytes)?;
        }
    }
    Ok(())
}
