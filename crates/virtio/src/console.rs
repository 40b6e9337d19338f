//! virtio-console with one port (the guest's `hvc0`): output to a `Write` sink, input from a
//! [`ConsoleInput`] handle the VMM feeds (e.g. from its stdin).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{ChainReader, ChainWriter};
use crate::device::{read_config_bytes, DeviceContext, DeviceError, DeviceEvent, VirtioDevice};

pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Input held for the guest before more is dropped.
pub const MAX_PENDING_INPUT: usize = 1 << 20;

type Pending = Arc<Mutex<VecDeque<u8>>>;

/// Feeds bytes to the guest's console (from any thread).
#[derive(Debug)]
pub struct ConsoleInput {
    pending: Pending,
    evt: EventFd,
}

impl ConsoleInput {
    /// Queue `bytes` for the guest; returns how many were accepted (the rest is dropped
    /// because the guest is not reading).
    pub fn send(&self, bytes: &[u8]) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = bytes.len().min(MAX_PENDING_INPUT.saturating_sub(p.len()));
        p.extend(&bytes[..n]);
        drop(p);
        let _ = self.evt.write(1);
        n
    }
}

/// A virtio-console device.
pub struct Console {
    output: Box<dyn Write + Send>,
    pending: Pending,
    evt: EventFd,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console writing guest output to `output`, and the handle that feeds it input.
    pub fn new(output: Box<dyn Write + Send>) -> std::io::Result<(Self, ConsoleInput)> {
        let evt = EventFd::new(EFD_NONBLOCK)?;
        let pending: Pending = Arc::default();
        let input = ConsoleInput {
            pending: pending.clone(),
            evt: evt.try_clone()?,
        };
        Ok((
            Console {
                output,
                pending,
                evt,
            },
            input,
        ))
    }

    fn fill_rx(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        loop {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            let Some(head) = ctx.pop(RX)? else {
                return Ok(());
            };
            let (table, size) = ctx.table(RX);
            let mut len = 0;
            if let Ok(chain) = crate::chain::DescChain::walk(ctx.ram, table, size, head) {
                let mut w = ChainWriter::new(ctx.ram, &chain.writable);
                let n = (w.remaining() as usize).min(pending.len());
                let bytes: Vec<u8> = pending.drain(..n).collect();
                if w.write(&bytes).is_ok() {
                    len = w.written() as u32;
                }
            }
            drop(pending);
            ctx.complete(RX, head, len)?;
        }
    }

    fn drain_tx(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let output = &mut self.output;
        let mut buf = vec![0u8; 4096];
        ctx.for_each_chain(TX, |ram, chain| {
            let Ok(chain) = chain else { return 0 };
            let mut r = ChainReader::new(ram, &chain.readable);
            while let Ok(n @ 1..) = r.read(&mut buf) {
                if output.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            0
        })?;
        let _ = self.output.flush();
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn config_len(&self) -> usize {
        12
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows (unused without F_SIZE), max_nr_ports = 1, emerg_wr.
        let mut c = [0u8; 12];
        c[4..8].copy_from_slice(&1u32.to_le_bytes());
        read_config_bytes(&c, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // emerg_wr: one character of emergency output.
        if offset == 8 && !data.is_empty() {
            let _ = self.output.write_all(&data[..1]);
            let _ = self.output.flush();
        }
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        match event {
            DeviceEvent::Queue(TX) => self.drain_tx(ctx),
            DeviceEvent::Queue(RX) => self.fill_rx(ctx),
            DeviceEvent::Extra(0) => {
                let _ = self.evt.read();
                self.fill_rx(ctx)
            }
            _ => Ok(()),
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.evt.as_raw_fd()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::{r, w, TestDriver};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_and_input() {
        let out = Shared::default();
        let (console, input) = Console::new(Box::new(out.clone())).unwrap();
        let mut d = TestDriver::new(Box::new(console));
        assert_eq!(
            d.read32(virtio_bindings::virtio_mmio::VIRTIO_MMIO_DEVICE_ID),
            3
        );
        // Input typed before the driver is up waits for it.
        assert_eq!(input.send(b"early "), 6);
        d.init(0, 2, 16);

        // Output: two buffers in one chain reach the sink in order.
        let a = d.alloc(6);
        d.write_mem(a, b"hello ");
        let b = d.alloc(5);
        d.write_mem(b, b"hvc0\n");
        assert_eq!(d.request(TX, &[r(a, 6), r(b, 5)]), 0);
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello hvc0\n");

        // Input: the pending bytes fill the first receive buffer offered.
        let rx = d.alloc(4);
        assert_eq!(d.request(RX, &[w(rx, 4)]), 4);
        assert_eq!(d.read_mem(rx, 4), b"earl");
        let rx2 = d.alloc(16);
        assert_eq!(d.request(RX, &[w(rx2, 16)]), 2);
        assert_eq!(d.read_mem(rx2, 2), b"y ");

        // A buffer waiting in the queue is filled when input arrives later.
        let rx3 = d.alloc(16);
        let head = d.add_chain(RX, &[w(rx3, 16)]);
        d.kick(RX);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = d.ram_image();
        input.send(b"ls\n");
        assert_eq!(d.wait_used(RX), Some((head.into(), 3)));
        d.take_interrupt();
        assert_eq!(d.read_mem(rx3, 3), b"ls\n");
        d.assert_changes_reported(&before);
    }
}
