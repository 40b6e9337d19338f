//! virtio-rng: entropy for the guest from the host's `getrandom`.

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use crate::chain::ChainWriter;
use crate::device::{DeviceContext, DeviceError, DeviceEvent, VirtioDevice};

pub const QUEUE_SIZE: u16 = 64;
/// Most bytes handed out per request, so one huge buffer cannot stall the loop.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// A virtio-rng device.
#[derive(Debug, Default)]
pub struct Rng;

impl Rng {
    pub fn new() -> Self {
        Rng
    }
}

fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn config_len(&self) -> usize {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        if event != DeviceEvent::Queue(0) {
            return Ok(());
        }
        let mut buf = vec![0u8; 4096];
        ctx.for_each_chain(0, |ram, chain| {
            let Ok(chain) = chain else { return 0 };
            let mut w = ChainWriter::new(ram, &chain.writable);
            let want = (w.remaining() as usize).min(MAX_BYTES_PER_REQUEST);
            let mut done = 0;
            while done < want {
                let n = (want - done).min(buf.len());
                if host_random(&mut buf[..n]).is_err() || w.write(&buf[..n]).is_err() {
                    break;
                }
                done += n;
            }
            w.written() as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::{w, TestDriver};

    #[test]
    fn fills_buffers_with_host_entropy() {
        let mut d = TestDriver::new(Box::new(Rng::new()));
        d.init(0, 1, 16);
        let a = d.alloc(64);
        let b = d.alloc(100);
        let head = d.add_chain(0, &[w(a, 64), w(b, 100)]);
        let before = d.ram_image();
        d.kick(0);
        assert_eq!(d.wait_used(0), Some((head.into(), 164)));
        d.take_interrupt();
        d.assert_changes_reported(&before);
        let (x, y) = (d.read_mem(a, 64), d.read_mem(b, 100));
        assert!(
            x.iter().filter(|&&v| v == 0).count() < 8,
            "random, not zeroes"
        );
        assert_ne!(x[..64], y[..64]);
        assert!(d.reported(a, 64) && d.reported(b, 100));

        // A huge buffer gets at most MAX_BYTES_PER_REQUEST; a buffer outside RAM nothing.
        let big = d.alloc(2 * MAX_BYTES_PER_REQUEST as u64);
        assert_eq!(
            d.request(0, &[w(big, 2 * MAX_BYTES_PER_REQUEST as u32)]),
            MAX_BYTES_PER_REQUEST as u32
        );
        assert_eq!(d.request(0, &[w(0x1_0000_0000, 64)]), 0);
        assert_eq!(d.request(0, &[w(a, 16)]), 16);
    }
}
