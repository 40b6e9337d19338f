//! virtio-blk over a raw or qcow2 image.
//!
//! The event loop pops and checks request chains and hands them to a small pool of I/O
//! threads ([`workers`]); completions come back through an eventfd. No disk I/O ever runs on a
//! vCPU thread or the event loop. `FLUSH` is `fdatasync`, so a write the guest flushed (after
//! its completion, as Linux does) is on the host disk.

pub mod backend;
pub mod qcow2;
pub mod request;
pub mod workers;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use crate::block::backend::Disk;
use crate::block::request::{MAX_DWZ_SEGMENTS, SECTOR_SIZE};
use crate::block::workers::{Job, WorkerPool};
use crate::chain::DescChain;
use crate::config::DiskConfig;
use crate::device::{read_config_bytes, DeviceContext, DeviceError, DeviceEvent, VirtioDevice};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// I/O threads per disk.
pub const IO_WORKERS: usize = 2;
/// Data segments per request the driver may use (queue size minus header and status).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
const CONFIG_LEN: usize = 60;

/// Why a block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path} (check the path and format=): {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the disk I/O threads: {0}")]
    Workers(std::io::Error),
}

/// A virtio-blk device.
pub struct Block {
    pool: WorkerPool,
    config: [u8; CONFIG_LEN],
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("disk", self.pool.disk())
            .finish()
    }
}

impl Block {
    pub fn new(cfg: &DiskConfig) -> Result<Self, BlockError> {
        let disk =
            Disk::open(&cfg.path, cfg.format, cfg.readonly, cfg.direct).map_err(|source| {
                BlockError::Open {
                    path: cfg.path.clone(),
                    source,
                }
            })?;
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        if let Some(s) = &cfg.serial {
            let n = s.len().min(serial.len());
            serial[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        let config = build_config(disk.len() / SECTOR_SIZE);
        let discard = !disk.readonly();
        let pool =
            WorkerPool::new(disk, serial, discard, IO_WORKERS).map_err(BlockError::Workers)?;
        Ok(Block { pool, config })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.pool.disk().len() / SECTOR_SIZE
    }
}

fn build_config(capacity: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity.to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(34, &1u16.to_le_bytes()); // num_queues
    let max_sectors = u32::MAX >> 9;
    put(36, &max_sectors.to_le_bytes()); // max_discard_sectors
    put(40, &(MAX_DWZ_SEGMENTS as u32).to_le_bytes()); // max_discard_seg
    put(44, &8u32.to_le_bytes()); // discard_sector_alignment: 4 KiB
    put(48, &max_sectors.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &(MAX_DWZ_SEGMENTS as u32).to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f =
            1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE;
        if self.pool.disk().readonly() {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        f
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        match event {
            DeviceEvent::Queue(0) => {
                while let Some(head) = ctx.pop(0)? {
                    let (table, size) = ctx.table(0);
                    let job = Job {
                        head,
                        chain: DescChain::walk(ctx.ram, table, size, head),
                        ram: ctx.ram.clone(),
                    };
                    if let Err(job) = self.pool.submit(job) {
                        ctx.complete(0, job.head, 0)?;
                    }
                }
                Ok(())
            }
            DeviceEvent::Extra(0) => {
                for (head, len) in self.pool.take_done() {
                    ctx.complete(0, head, len)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {
        // No worker may touch guest memory after the driver reset the device.
        self.pool.quiesce();
    }

    fn extra_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.pool.done_fd()]
    }
}

#[cfg(test)]
mod tests;
