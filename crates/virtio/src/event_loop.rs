//! The thread that runs every virtio back end: an epoll loop over queue kicks.
//!
//! vCPU threads only signal a queue's kick eventfd (or KVM does, as an ioeventfd); this loop
//! wakes up, drains the fd and lets the device process the queue. Devices' own fds (console
//! input, ...) are watched edge-triggered, so a device that is not yet running cannot make
//! the loop spin; it picks up pending work when it is activated.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::DeviceEvent;
use crate::interrupt::VirtioInterrupt;
use crate::transport::core::{lock_core, VirtioCore};
use crate::transport::VirtioTransport;

enum Source {
    Stop,
    Kick {
        core: Arc<Mutex<VirtioCore>>,
        kicks: Arc<Vec<EventFd>>,
        queue: usize,
    },
    Extra {
        core: Arc<Mutex<VirtioCore>>,
        index: usize,
    },
    Resample {
        fd: EventFd,
        irq: Arc<VirtioInterrupt>,
    },
}

/// An event loop being assembled; [`EventLoop::spawn`] starts its thread.
pub struct EventLoop {
    epoll: Epoll,
    sources: Vec<Source>,
    stop: EventFd,
}

impl EventLoop {
    pub fn new() -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )?;
        Ok(EventLoop {
            epoll,
            sources: vec![Source::Stop],
            stop,
        })
    }

    fn watch(&mut self, fd: RawFd, events: EventSet, source: Source) -> std::io::Result<()> {
        let token = self.sources.len() as u64;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?;
        self.sources.push(source);
        Ok(())
    }

    /// Serve `transport`'s queues (and its device's own fds) on this loop.
    pub fn add(&mut self, transport: &dyn VirtioTransport) -> std::io::Result<()> {
        let (core, kicks) = transport.shared();
        for (queue, kick) in kicks.iter().enumerate() {
            let source = Source::Kick {
                core: core.clone(),
                kicks: kicks.clone(),
                queue,
            };
            self.watch(kick.as_raw_fd(), EventSet::IN, source)?;
        }
        let extra = lock_core(&core).extra_fds();
        for (index, fd) in extra.into_iter().enumerate() {
            let source = Source::Extra {
                core: core.clone(),
                index,
            };
            self.watch(fd, EventSet::IN | EventSet::EDGE_TRIGGERED, source)?;
        }
        Ok(())
    }

    /// Watch `resample`, which the engine signals after lowering `irq`'s line at the guest's
    /// EOI (a KVM irqfd with resampling), and raise the line again while it is still due.
    pub fn add_resample(
        &mut self,
        resample: EventFd,
        irq: Arc<VirtioInterrupt>,
    ) -> std::io::Result<()> {
        let fd = resample.as_raw_fd();
        self.watch(fd, EventSet::IN, Source::Resample { fd: resample, irq })
    }

    /// Start the loop on its own thread.
    pub fn spawn(self) -> std::io::Result<EventLoopHandle> {
        let stop = self.stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("virtio-events".into())
            .spawn(move || self.run())?;
        Ok(EventLoopHandle {
            stop,
            thread: Some(thread),
        })
    }

    fn run(self) {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio event loop: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match self.sources.get(ev.data() as usize) {
                    Some(Source::Stop) | None => return,
                    Some(Source::Kick { core, kicks, queue }) => {
                        if let Some(kick) = kicks.get(*queue) {
                            // Drain; EAGAIN just means another wake-up already did.
                            let _ = kick.read();
                        }
                        lock_core(core).handle_event(DeviceEvent::Queue(*queue));
                    }
                    Some(Source::Extra { core, index }) => {
                        lock_core(core).handle_event(DeviceEvent::Extra(*index));
                    }
                    Some(Source::Resample { fd, irq }) => {
                        let _ = fd.read();
                        irq.resample();
                    }
                }
            }
        }
    }
}

/// The running loop; stopping (or dropping) it ends and joins the thread.
pub struct EventLoopHandle {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoopHandle {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventLoopHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crate::device::{DeviceContext, DeviceError, DeviceEvent, VirtioDevice};
    use crate::test_driver::{w, TestDriver};

    /// Records which thread handled each event, and takes its time doing so.
    struct Probe(Arc<Mutex<Vec<String>>>);

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![8]
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
            let name = std::thread::current().name().unwrap_or("?").to_string();
            self.0.lock().unwrap().push(name);
            if event == DeviceEvent::Queue(0) {
                std::thread::sleep(Duration::from_millis(200));
                ctx.for_each_chain(0, |_, _| 0)?;
            }
            Ok(())
        }
    }

    #[test]
    fn kicks_only_signal_and_devices_run_on_the_event_loop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut d = TestDriver::new(Box::new(Probe(seen.clone())));
        d.init(0, 1, 8);
        let buf = d.alloc(8);
        d.add_chain(0, &[w(buf, 8)]);
        let t0 = Instant::now();
        d.kick(0);
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "the QueueNotify write returned without waiting for the device"
        );
        assert!(d.wait_used(0).is_some());
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|n| n == "virtio-events"), "ran on {seen:?}");
    }
}
