//! A small pool of threads that run block requests, so disk I/O never blocks the event loop
//! (and with it every other virtio device).
//!
//! The event loop walks each chain and hands it over; a worker runs it against the image
//! (writing guest memory through [`GuestRam`], so writes are still reported), queues the
//! completion and signals an eventfd, on which the event loop puts it on the used ring. The
//! pool counts requests in flight so a device reset can wait until no worker touches guest
//! memory any more.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::block::backend::Disk;
use crate::block::request::{execute, BlockBackend};
use crate::chain::{ChainError, DescChain};
use crate::guest_ram::GuestRam;

/// One request handed to a worker.
pub struct Job {
    pub head: u16,
    pub chain: Result<DescChain, ChainError>,
    pub ram: GuestRam,
}

struct Shared {
    disk: Disk,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    discard: bool,
    /// Finished `(head, used length)` pairs for the event loop.
    done: Mutex<Vec<(u16, u32)>>,
    done_evt: EventFd,
    in_flight: Mutex<usize>,
    idle: Condvar,
}

/// The worker threads of one block device.
pub struct WorkerPool {
    shared: Arc<Shared>,
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WorkerPool {
    pub fn new(
        disk: Disk,
        serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
        discard: bool,
        workers: usize,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            disk,
            serial,
            discard,
            done: Mutex::new(Vec::new()),
            done_evt: EventFd::new(EFD_NONBLOCK)?,
            in_flight: Mutex::new(0),
            idle: Condvar::new(),
        });
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (shared, rx) = (shared.clone(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("virtio-blk-io{i}"))
                    .spawn(move || work(&shared, &rx))?,
            );
        }
        Ok(WorkerPool {
            shared,
            tx: Some(tx),
            threads,
        })
    }

    pub fn disk(&self) -> &Disk {
        &self.shared.disk
    }

    /// Queue a request. Returns it back if the pool is gone.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        *lock(&self.shared.in_flight) += 1;
        let Some(tx) = &self.tx else {
            return Err(job);
        };
        tx.send(job).map_err(|e| {
            self.finish_one();
            e.0
        })
    }

    fn finish_one(&self) {
        let mut n = lock(&self.shared.in_flight);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.shared.idle.notify_all();
        }
    }

    /// Completions ready for the used ring.
    pub fn take_done(&self) -> Vec<(u16, u32)> {
        let _ = self.shared.done_evt.read();
        std::mem::take(&mut *lock(&self.shared.done))
    }

    /// Wait until no request is running, then drop all completions (device reset).
    pub fn quiesce(&self) {
        let mut n = lock(&self.shared.in_flight);
        while *n > 0 {
            n = self.shared.idle.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        drop(n);
        self.take_done();
    }

    /// The eventfd signalled when completions are ready.
    pub fn done_fd(&self) -> RawFd {
        self.shared.done_evt.as_raw_fd()
    }
}

fn work(shared: &Shared, rx: &Mutex<Receiver<Job>>) {
    let mut buf = Vec::new();
    loop {
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return, // The device is gone.
        };
        let mut be = BlockBackend {
            disk: &shared.disk,
            serial: &shared.serial,
            discard: shared.discard,
            buf: &mut buf,
        };
        // A bug here must not take the worker (and every later request) down with it.
        let len = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(&job.ram, job.chain, &mut be)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("virtio-blk: request handler panicked; request failed");
            0
        });
        lock(&shared.done).push((job.head, len));
        let _ = shared.done_evt.write(1);
        let mut n = lock(&shared.in_flight);
        *n = n.saturating_sub(1);
        if *n == 0 {
            shared.idle.notify_all();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
