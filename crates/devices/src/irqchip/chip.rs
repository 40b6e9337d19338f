//! [`SwIrqChip`]: the whole interrupt fabric of one software-engine VM — PIC pair, IOAPIC,
//! PIT and one local APIC per vCPU — wired as on a PC, shared by all vCPU threads and the
//! device threads.
//!
//! Devices raise GSIs through [`InterruptSink`] (ISA IRQs 0..15 reach the PIC and the
//! IOAPIC, ISA IRQ 0 on IOAPIC pin 2 as the MADT override says; GSIs 16..23 only the
//! IOAPIC). MSIs enter through [`SwIrqChip::send_msi`]. The emulator asks, at instruction
//! boundaries, [`SwIrqChip::interrupt_pending`] (a few atomic loads) and then
//! [`SwIrqChip::acknowledge`], and [`SwIrqChip::nmi_pending`] / [`SwIrqChip::take_nmi`] for
//! NMIs; INIT/SIPI arrive through [`SwIrqChip::take_startup_event`]. Each vCPU reaches its
//! APIC's registers through the MMIO page ([`SwIrqChip::lapic_mmio_offset`], xAPIC mode) or
//! the x2APIC MSRs ([`SwIrqChip::lapic_msr_read`], x2APIC mode).
//!
//! Timers are passive: the vCPU thread calls [`SwIrqChip::poll_timers`] now and then (cheap
//! when nothing is due: one clock read and two atomic loads), and a halted vCPU sleeps in
//! [`SwIrqChip::wait`], which wakes at the next timer deadline, when an interrupt is routed
//! to it from any thread, or on [`SwIrqChip::kick`].
//!
//! Locking: one mutex per component. Order: PIT → PIC → IOAPIC → one LAPIC → that vCPU's
//! sleep lock. No two LAPIC locks are ever held together: messages (IPIs, IOAPIC output)
//! are computed under the sender's lock, the lock is dropped, then each target is locked in
//! turn. In practice the code holds at most one of PIT/PIC/IOAPIC/LAPIC at a time, plus
//! possibly a sleep lock (always innermost) to notify a waiter.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::clock::{Clock, TscRate};
use super::ioapic::{ApicMessage, DeliveryMode, Destination, Ioapic, NUM_PINS};
use super::lapic::{ApicAddress, ApicBaseLimits, Lapic, LapicEffect, StartupEvent};
use super::pic::Pic;
use super::pit::Pit;
use crate::interrupt::InterruptSink;

/// Errors of the chip's setup and restore paths.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IrqChipError {
    #[error("a VM needs between 1 and 254 vCPUs for xAPIC IDs, not {0}")]
    CpuCount(usize),
    #[error("the snapshot has {found} local APICs but this VM has {expected} vCPUs")]
    SnapshotCpuCount { expected: usize, found: usize },
    #[error("the TSC frequency must not be 0")]
    TscFrequency,
}

/// Why [`SwIrqChip::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// A maskable interrupt is pending for the vCPU.
    Interrupt,
    /// An INIT or SIPI is pending.
    Startup,
    /// An NMI is pending (it ends HLT whatever RFLAGS.IF says).
    Nmi,
    /// [`SwIrqChip::kick`] was called.
    Kicked,
    /// The caller's `until` passed.
    Timeout,
}

/// Snapshot of the whole fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwIrqChipState {
    /// The chip clock's reading when the state was taken; times inside are relative to it.
    pub clock_ns: u64,
    pub pic: Pic,
    pub ioapic: Ioapic,
    pub pit: Pit,
    pub lapics: Vec<Lapic>,
}

const NO_DEADLINE: u64 = u64::MAX;
/// `CpuSlot::mmio_base` of an APIC whose page does not answer (disabled or x2APIC).
const NO_MMIO: u64 = u64::MAX;

/// Per-vCPU part: its APIC and the flags the hot path reads without locking.
#[derive(Debug)]
struct CpuSlot {
    lapic: Mutex<Lapic>,
    /// The APIC has a deliverable vector or an ExtINT request.
    lapic_intr: AtomicBool,
    /// The PIC's INTR reaches this CPU (LINT0 virtual wire, or APIC globally disabled).
    accepts_pic: AtomicBool,
    /// An INIT or SIPI waits.
    startup: AtomicBool,
    /// An NMI waits.
    nmi: AtomicBool,
    /// Where the APIC page answers MMIO (`NO_MMIO` outside xAPIC mode).
    mmio_base: AtomicU64,
    kicked: AtomicBool,
    /// The APIC timer's next deadline (clock ns), `NO_DEADLINE` if none.
    timer_deadline: AtomicU64,
    /// The APIC's [`ApicAddress`], packed: routing skips non-matching APICs unlocked.
    address: AtomicU32,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// The interrupt controllers and timers of one software-engine VM.
#[derive(Debug)]
pub struct SwIrqChip {
    clock: Arc<dyn Clock>,
    tsc: TscRate,
    pit: Mutex<Pit>,
    pic: Mutex<Pic>,
    ioapic: Mutex<Ioapic>,
    cpus: Vec<CpuSlot>,
    /// The PIC's INTR output.
    pic_output: AtomicBool,
    /// PIT channel 0's next interrupt (clock ns), `NO_DEADLINE` if none.
    pit_deadline: AtomicU64,
    /// What `IA32_APIC_BASE` may hold (x2APIC offered, physical-address width).
    limits: ApicBaseLimits,
}

/// Lock a mutex, recovering the data if a thread panicked while holding it (the device
/// state is still consistent enough to go on; a poisoned irqchip must not take the VM down).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SwIrqChip {
    /// Whether the local APICs implement x2APIC mode (CPUID may announce it).
    pub const X2APIC: bool = true;

    /// The physical-address width `IA32_APIC_BASE` is checked against unless the platform
    /// says otherwise ([`SwIrqChip::with_apic_base_limits`]).
    pub const DEFAULT_PHYS_ADDR_BITS: u8 = 40;

    /// A chip for `cpus` vCPUs (APIC IDs 0..cpus, vCPU 0 is the BSP), whose guest TSC runs
    /// at `tsc_hz` on `clock`.
    pub fn new(cpus: usize, tsc_hz: u64, clock: Arc<dyn Clock>) -> Result<Self, IrqChipError> {
        if cpus == 0 || cpus >= 0xff {
            return Err(IrqChipError::CpuCount(cpus));
        }
        if tsc_hz == 0 {
            return Err(IrqChipError::TscFrequency);
        }
        let cpus = (0..cpus)
            .map(|i| {
                let lapic = Lapic::new(i as u8, i == 0);
                CpuSlot {
                    address: AtomicU32::new(lapic.address().pack()),
                    nmi: AtomicBool::new(false),
                    mmio_base: AtomicU64::new(lapic.mmio_base().unwrap_or(NO_MMIO)),
                    accepts_pic: AtomicBool::new(lapic.accepts_pic()),
                    lapic: Mutex::new(lapic),
                    lapic_intr: AtomicBool::new(false),
                    startup: AtomicBool::new(false),
                    kicked: AtomicBool::new(false),
                    timer_deadline: AtomicU64::new(NO_DEADLINE),
                    sleep: Mutex::new(()),
                    wake: Condvar::new(),
                }
            })
            .collect();
        Ok(SwIrqChip {
            clock,
            tsc: TscRate { hz: tsc_hz },
            pit: Mutex::new(Pit::new()),
            pic: Mutex::new(Pic::new()),
            ioapic: Mutex::new(Ioapic::new()),
            cpus,
            pic_output: AtomicBool::new(false),
            pit_deadline: AtomicU64::new(NO_DEADLINE),
            limits: ApicBaseLimits {
                x2apic: Self::X2APIC,
                phys_addr_bits: Self::DEFAULT_PHYS_ADDR_BITS,
            },
        })
    }

    /// What the guest's CPUID offers: whether x2APIC mode may be entered (it is not when
    /// the CPU model hides it) and the physical-address width. `x2apic` is ignored (false)
    /// unless [`SwIrqChip::X2APIC`].
    pub fn with_apic_base_limits(mut self, x2apic: bool, phys_addr_bits: u8) -> Self {
        self.limits = ApicBaseLimits {
            x2apic: x2apic && Self::X2APIC,
            phys_addr_bits,
        };
        self
    }

    /// Number of vCPUs.
    pub fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// The clock the timers run on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The guest TSC's rate; the emulator's `RDTSC` must use it (`tsc_rate().ticks_at(
    /// clock().now_ns())`, or [`SwIrqChip::tsc_now`]) so that TSC deadlines line up.
    pub fn tsc_rate(&self) -> TscRate {
        self.tsc
    }

    /// The guest TSC now.
    pub fn tsc_now(&self) -> u64 {
        self.tsc.ticks_at(self.clock.now_ns())
    }

    // ---- the hot path ----

    /// Whether vCPU `cpu` has a maskable interrupt to take (it still depends on RFLAGS.IF
    /// and the interrupt shadow, which the emulator checks). A few relaxed-cost atomic loads.
    #[inline]
    pub fn interrupt_pending(&self, cpu: usize) -> bool {
        let Some(slot) = self.cpus.get(cpu) else {
            return false;
        };
        slot.lapic_intr.load(Ordering::Acquire)
            || (slot.accepts_pic.load(Ordering::Acquire) && self.pic_output.load(Ordering::Acquire))
    }

    /// The CPU takes an interrupt (IF=1, no shadow): the vector to deliver through the IDT.
    /// PIC (ExtINT) interrupts come first, as in KVM. `None` if the request went away.
    pub fn acknowledge(&self, cpu: usize) -> Option<u8> {
        let slot = self.cpus.get(cpu)?;
        if slot.accepts_pic.load(Ordering::Acquire) && self.pic_output.load(Ordering::Acquire) {
            let mut pic = lock(&self.pic);
            if pic.output() {
                let vector = pic.acknowledge();
                self.update_pic_output(&pic);
                return Some(vector);
            }
        }
        let (vector, extint) = self.with_lapic(cpu, |l| {
            if l.take_extint() {
                (None, true)
            } else {
                (l.acknowledge(), false)
            }
        })?;
        if extint {
            let mut pic = lock(&self.pic);
            let vector = pic.acknowledge();
            self.update_pic_output(&pic);
            return Some(vector);
        }
        vector
    }

    /// Whether an NMI waits for vCPU `cpu` (one atomic load).
    #[inline]
    pub fn nmi_pending(&self, cpu: usize) -> bool {
        self.cpus
            .get(cpu)
            .is_some_and(|s| s.nmi.load(Ordering::Acquire))
    }

    /// The CPU takes one waiting NMI; false if none waited.
    pub fn take_nmi(&self, cpu: usize) -> bool {
        self.nmi_pending(cpu) && self.with_lapic(cpu, |l| l.take_nmi()).unwrap_or(false)
    }

    /// Assert vCPU `cpu`'s LINT0 (`pin` 0) or LINT1 (`pin` 1) input: what happens is up to
    /// the LVT entry (e.g. an NMI, as LINT1 is wired on PCs).
    pub fn assert_lint(&self, cpu: usize, pin: u8) {
        self.with_lapic(cpu, |l| l.assert_lint(pin));
    }

    /// Whether an INIT or SIPI waits for vCPU `cpu` (one atomic load).
    #[inline]
    pub fn startup_pending(&self, cpu: usize) -> bool {
        self.cpus
            .get(cpu)
            .is_some_and(|s| s.startup.load(Ordering::Acquire))
    }

    /// The next INIT or SIPI for vCPU `cpu`. On INIT the APIC has already reset itself; the
    /// emulator resets the CPU (an AP then waits for SIPI, ignoring SIPIs at other times).
    pub fn take_startup_event(&self, cpu: usize) -> Option<StartupEvent> {
        if !self.startup_pending(cpu) {
            return None;
        }
        self.with_lapic(cpu, |l| l.take_startup()).flatten()
    }

    /// Fire every timer of vCPU `cpu` that is due, and the PIT. Cheap when nothing is due.
    /// Returns whether anything fired.
    ///
    /// Reading the host clock costs ~100 ns on our VMs; an emulator that polls very often
    /// can compare its own cheap notion of time against [`SwIrqChip::next_deadline_ns`] (two
    /// atomic loads) and call this only when that deadline may have passed, or pass a clock
    /// reading it already has to [`SwIrqChip::poll_timers_at`].
    pub fn poll_timers(&self, cpu: usize) -> bool {
        self.poll_timers_at(cpu, self.clock.now_ns())
    }

    /// [`SwIrqChip::poll_timers`] with a reading of the chip's clock taken by the caller
    /// (it must not be ahead of the clock: port reads use the clock itself).
    pub fn poll_timers_at(&self, cpu: usize, now: u64) -> bool {
        let Some(slot) = self.cpus.get(cpu) else {
            return false;
        };
        let mut fired = false;
        if now >= slot.timer_deadline.load(Ordering::Acquire) {
            fired |= self.with_lapic(cpu, |l| l.poll_timer(now)).unwrap_or(false);
        }
        if now >= self.pit_deadline.load(Ordering::Acquire) {
            let edge = {
                let mut pit = lock(&self.pit);
                let edge = pit.poll(now);
                self.store_pit_deadline(&pit);
                edge
            };
            if edge {
                self.pulse(0);
                fired = true;
            }
        }
        fired
    }

    /// Clock reading of the next timer event that concerns vCPU `cpu` (its APIC timer, and
    /// the PIT, whose interrupt may be routed anywhere).
    pub fn next_deadline_ns(&self, cpu: usize) -> Option<u64> {
        let lapic = self
            .cpus
            .get(cpu)
            .map_or(NO_DEADLINE, |s| s.timer_deadline.load(Ordering::Acquire));
        let t = lapic.min(self.pit_deadline.load(Ordering::Acquire));
        (t != NO_DEADLINE).then_some(t)
    }

    /// [`SwIrqChip::next_deadline_ns`] as a host instant.
    pub fn next_deadline(&self, cpu: usize) -> Option<Instant> {
        self.next_deadline_ns(cpu)
            .map(|ns| self.clock.instant_at(ns))
    }

    /// HLT with interrupts enabled: sleep until an interrupt or INIT/SIPI is pending for
    /// `cpu`, it is kicked, or `until` passes. Timers are polled while waiting.
    pub fn wait(&self, cpu: usize, until: Option<Instant>) -> WakeReason {
        self.wait_with(cpu, until, true)
    }

    /// Like [`SwIrqChip::wait`]; with `interrupts_enabled == false` (HLT with IF=0) pending
    /// maskable interrupts do not end the wait, only INIT/SIPI, a kick or `until`.
    pub fn wait_with(
        &self,
        cpu: usize,
        until: Option<Instant>,
        interrupts_enabled: bool,
    ) -> WakeReason {
        let Some(slot) = self.cpus.get(cpu) else {
            return WakeReason::Timeout;
        };
        let until_ns = until.map(|u| self.clock.ns_at(u));
        loop {
            self.poll_timers(cpu);
            if let Some(reason) = self.wake_reason(cpu, interrupts_enabled) {
                return reason;
            }
            let now = self.clock.now_ns();
            if until_ns.is_some_and(|u| now >= u) {
                return WakeReason::Timeout;
            }
            let deadline = match (until_ns, self.next_deadline_ns(cpu)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let guard = lock(&slot.sleep);
            // Re-check under the sleep lock: a notifier sets its flag before taking this lock,
            // so either we see the flag now or its notify reaches our wait.
            if let Some(reason) = self.wake_reason(cpu, interrupts_enabled) {
                return reason;
            }
            match deadline {
                None => drop(slot.wake.wait(guard).unwrap_or_else(|e| e.into_inner())),
                Some(d) => {
                    let timeout = Duration::from_nanos(d.saturating_sub(now).max(1));
                    drop(
                        slot.wake
                            .wait_timeout(guard, timeout)
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                }
            }
        }
    }

    fn wake_reason(&self, cpu: usize, interrupts_enabled: bool) -> Option<WakeReason> {
        let slot = self.cpus.get(cpu)?;
        if slot.kicked.swap(false, Ordering::AcqRel) {
            return Some(WakeReason::Kicked);
        }
        if slot.startup.load(Ordering::Acquire) {
            return Some(WakeReason::Startup);
        }
        if slot.nmi.load(Ordering::Acquire) {
            return Some(WakeReason::Nmi);
        }
        if interrupts_enabled && self.interrupt_pending(cpu) {
            return Some(WakeReason::Interrupt);
        }
        None
    }

    /// Wake vCPU `cpu` out of [`SwIrqChip::wait`] (the next wait returns at once if it is
    /// not waiting now). For the VMM's pause/stop requests.
    pub fn kick(&self, cpu: usize) {
        if let Some(slot) = self.cpus.get(cpu) {
            slot.kicked.store(true, Ordering::Release);
            self.notify(cpu);
        }
    }

    fn notify(&self, cpu: usize) {
        if let Some(slot) = self.cpus.get(cpu) {
            let _guard = lock(&slot.sleep);
            slot.wake.notify_all();
        }
    }

    // ---- internal plumbing ----

    /// Run `f` on vCPU `cpu`'s APIC, then publish its state to the lock-free flags and wake
    /// the vCPU if something new became pending for it.
    fn with_lapic<R>(&self, cpu: usize, f: impl FnOnce(&mut Lapic) -> R) -> Option<R> {
        let slot = self.cpus.get(cpu)?;
        let (result, wake) = {
            let mut lapic = lock(&slot.lapic);
            let result = f(&mut lapic);
            let intr = lapic.has_interrupt();
            let startup = lapic.has_startup();
            let nmi = lapic.has_nmi();
            let accepts = lapic.accepts_pic();
            let was_intr = slot.lapic_intr.swap(intr, Ordering::AcqRel);
            let was_startup = slot.startup.swap(startup, Ordering::AcqRel);
            let was_nmi = slot.nmi.swap(nmi, Ordering::AcqRel);
            slot.mmio_base
                .store(lapic.mmio_base().unwrap_or(NO_MMIO), Ordering::Release);
            let was_accepting = slot.accepts_pic.swap(accepts, Ordering::AcqRel);
            slot.timer_deadline.store(
                lapic.timer_deadline().unwrap_or(NO_DEADLINE),
                Ordering::Release,
            );
            slot.address
                .store(lapic.address().pack(), Ordering::Release);
            let wake = (intr && !was_intr)
                || (startup && !was_startup)
                || (nmi && !was_nmi)
                || (accepts && !was_accepting && self.pic_output.load(Ordering::Acquire));
            (result, wake)
        };
        if wake {
            self.notify(cpu);
        }
        Some(result)
    }

    /// Publish the PIC's INTR output (caller holds the PIC lock); wake CPUs if it rose.
    fn update_pic_output(&self, pic: &Pic) {
        let out = pic.output();
        let was = self.pic_output.swap(out, Ordering::AcqRel);
        if out && !was {
            for (cpu, slot) in self.cpus.iter().enumerate() {
                if slot.accepts_pic.load(Ordering::Acquire) {
                    self.notify(cpu);
                }
            }
        }
    }

    fn store_pit_deadline(&self, pit: &Pit) {
        self.pit_deadline
            .store(pit.next_irq_ns().unwrap_or(NO_DEADLINE), Ordering::Release);
    }

    /// Deliver a message from the IOAPIC, an MSI or an IPI (`source`: the sending vCPU).
    fn route(&self, msg: &ApicMessage, source: Option<usize>) {
        match msg.dest {
            Destination::SelfOnly => {
                if let Some(cpu) = source {
                    self.with_lapic(cpu, |l| l.accept(msg));
                }
            }
            Destination::All | Destination::AllButSelf => {
                let skip = if msg.dest == Destination::AllButSelf {
                    source
                } else {
                    None
                };
                for cpu in (0..self.cpus.len()).filter(|&c| Some(c) != skip) {
                    self.with_lapic(cpu, |l| l.accept(msg));
                }
            }
            dest if msg.mode == DeliveryMode::LowestPriority => {
                // Arbitration: the matching enabled APIC with the lowest processor priority.
                let mut best: Option<(u32, usize)> = None;
                for (cpu, slot) in self.cpus.iter().enumerate() {
                    if !self.may_match(slot, dest) {
                        continue;
                    }
                    let lapic = lock(&slot.lapic);
                    if lapic.matches(dest) && lapic.hw_enabled() && lapic.sw_enabled() {
                        let ppr = lapic.ppr();
                        if !matches!(best, Some((p, _)) if p <= ppr) {
                            best = Some((ppr, cpu));
                        }
                    }
                }
                if let Some((_, cpu)) = best {
                    self.with_lapic(cpu, |l| l.accept(msg));
                }
            }
            dest => {
                for (cpu, slot) in self.cpus.iter().enumerate() {
                    if !self.may_match(slot, dest) {
                        continue;
                    }
                    self.with_lapic(cpu, |l| {
                        if l.matches(dest) {
                            l.accept(msg);
                        }
                    });
                }
            }
        }
    }

    /// Unlocked pre-check of a destination against an APIC's published address (the match
    /// is repeated under the lock, where it is authoritative).
    fn may_match(&self, slot: &CpuSlot, dest: Destination) -> bool {
        ApicAddress::unpack(slot.address.load(Ordering::Acquire)).matches(dest)
    }

    fn route_all(&self, messages: &[ApicMessage]) {
        for msg in messages {
            self.route(msg, None);
        }
    }

    fn ioapic_eoi(&self, vector: u8) {
        let mut out = Vec::new();
        lock(&self.ioapic).end_of_interrupt(vector, &mut out);
        self.route_all(&out);
    }

    fn apply(&self, cpu: usize, effect: LapicEffect) {
        match effect {
            LapicEffect::Ipi(msg) => self.route(&msg, Some(cpu)),
            LapicEffect::LevelEoi(vector) => self.ioapic_eoi(vector),
            // Already published by `with_lapic`.
            LapicEffect::None | LapicEffect::TimerChanged | LapicEffect::Lint0Changed => {}
        }
    }

    // ---- MMIO, port I/O and MSRs ----

    /// The offset in vCPU `cpu`'s APIC page of guest-physical `gpa`, if the page answers
    /// there (xAPIC mode, at the `IA32_APIC_BASE` address). One atomic load.
    #[inline]
    pub fn lapic_mmio_offset(&self, cpu: usize, gpa: u64) -> Option<u64> {
        let base = self.cpus.get(cpu)?.mmio_base.load(Ordering::Acquire);
        gpa.checked_sub(base).filter(|&off| off < 0x1000)
    }

    /// RDMSR of x2APIC MSR `index` (0x800..0x8ff) on vCPU `cpu`; `None`: #GP.
    pub fn lapic_msr_read(&self, cpu: usize, index: u32) -> Option<u64> {
        let now = self.clock.now_ns();
        self.with_lapic(cpu, |l| l.msr_read(index, now)).flatten()
    }

    /// WRMSR of x2APIC MSR `index` on vCPU `cpu`; false: #GP.
    pub fn lapic_msr_write(&self, cpu: usize, index: u32, value: u64) -> bool {
        let now = self.clock.now_ns();
        match self
            .with_lapic(cpu, |l| l.msr_write(index, value, now))
            .flatten()
        {
            Some(effect) => {
                self.apply(cpu, effect);
                true
            }
            None => false,
        }
    }

    /// A read of vCPU `cpu`'s APIC page at `offset` (0..0xfff).
    pub fn lapic_read(&self, cpu: usize, offset: u64, data: &mut [u8]) {
        let now = self.clock.now_ns();
        if self
            .with_lapic(cpu, |l| l.mmio_read(offset & 0xfff, data, now))
            .is_none()
        {
            data.fill(0);
        }
    }

    /// A write to vCPU `cpu`'s APIC page at `offset` (0..0xfff).
    pub fn lapic_write(&self, cpu: usize, offset: u64, data: &[u8]) {
        let now = self.clock.now_ns();
        if let Some(effect) = self.with_lapic(cpu, |l| l.mmio_write(offset & 0xfff, data, now)) {
            self.apply(cpu, effect);
        }
    }

    /// A read of the IOAPIC page at `offset`.
    pub fn ioapic_read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.ioapic).mmio_read(offset, data);
    }

    /// A write to the IOAPIC page at `offset`.
    pub fn ioapic_write(&self, offset: u64, data: &[u8]) {
        let mut out = Vec::new();
        lock(&self.ioapic).mmio_write(offset, data, &mut out);
        self.route_all(&out);
    }

    /// Whether `port` is one of the chip's (PIC, ELCR, PIT, port 0x61).
    pub fn handles_port(port: u16) -> bool {
        Pic::handles(port) || Pit::handles(port)
    }

    /// A port read; false if no byte of the access is the chip's. Bytes of a wide access
    /// are read from consecutive ports; bytes outside the chip read 0xff.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        let mut handled = false;
        for (i, byte) in data.iter_mut().enumerate() {
            let p = port.wrapping_add(i as u16);
            let value = if Pic::handles(p) {
                let mut pic = lock(&self.pic);
                let v = pic.read(p);
                self.update_pic_output(&pic); // a poll-mode read acknowledges
                v
            } else if Pit::handles(p) {
                lock(&self.pit).read(p, self.clock.now_ns())
            } else {
                None
            };
            handled |= value.is_some();
            *byte = value.unwrap_or(0xff);
        }
        handled
    }

    /// A port write; false if no byte of the access is the chip's.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        let mut handled = false;
        for (i, &byte) in data.iter().enumerate() {
            let p = port.wrapping_add(i as u16);
            if Pic::handles(p) {
                let mut pic = lock(&self.pic);
                handled |= pic.write(p, byte);
                self.update_pic_output(&pic);
            } else if Pit::handles(p) {
                let mut pit = lock(&self.pit);
                handled |= pit.write(p, byte, self.clock.now_ns());
                self.store_pit_deadline(&pit);
            }
        }
        handled
    }

    /// `IA32_APIC_BASE` of vCPU `cpu`.
    pub fn apic_base(&self, cpu: usize) -> u64 {
        self.with_lapic(cpu, |l| l.apic_base).unwrap_or(0)
    }

    /// Write `IA32_APIC_BASE`; false if refused (reserved bits, invalid mode transition,
    /// x2APIC not offered): inject #GP.
    pub fn set_apic_base(&self, cpu: usize, value: u64) -> bool {
        let limits = self.limits;
        self.with_lapic(cpu, |l| l.set_apic_base(value, limits))
            .unwrap_or(false)
    }

    /// CR8 of vCPU `cpu` (the task priority class, TPR bits 7..4).
    pub fn cr8(&self, cpu: usize) -> u64 {
        self.with_lapic(cpu, |l| u64::from(l.tpr >> 4)).unwrap_or(0)
    }

    /// Write CR8 (sets TPR to `value << 4`; bits above 3 are the caller's #GP to check).
    pub fn set_cr8(&self, cpu: usize, value: u64) {
        self.with_lapic(cpu, |l| l.tpr = ((value & 0xf) as u32) << 4);
    }

    /// The APIC ID of vCPU `cpu` (its index, unless the guest rewrote the ID register).
    pub fn apic_id(&self, cpu: usize) -> Option<u8> {
        self.with_lapic(cpu, |l| l.id)
    }

    /// `IA32_TSC_DEADLINE` of vCPU `cpu`.
    pub fn tsc_deadline(&self, cpu: usize) -> u64 {
        self.with_lapic(cpu, |l| l.tsc_deadline).unwrap_or(0)
    }

    /// Write `IA32_TSC_DEADLINE` (in the time line of [`SwIrqChip::tsc_now`]). A deadline
    /// already passed fires at once, so the interrupt is pending when WRMSR completes.
    pub fn set_tsc_deadline(&self, cpu: usize, tsc: u64) {
        let rate = self.tsc;
        let now = self.clock.now_ns();
        self.with_lapic(cpu, |l| {
            l.set_tsc_deadline(tsc, rate);
            l.poll_timer(now);
        });
    }

    /// Deliver an MSI (a DWORD write to 0xfeeX_XXXX); false if `addr` is not an MSI address.
    pub fn send_msi(&self, addr: u64, data: u32) -> bool {
        match ApicMessage::from_msi(addr, data) {
            Some(msg) => {
                self.route(&msg, None);
                true
            }
            None => false,
        }
    }

    // ---- snapshots ----

    /// The whole fabric's state.
    pub fn save_state(&self) -> SwIrqChipState {
        let pit = lock(&self.pit).clone();
        let pic = lock(&self.pic).clone();
        let ioapic = lock(&self.ioapic).clone();
        let lapics = self.cpus.iter().map(|s| lock(&s.lapic).clone()).collect();
        SwIrqChipState {
            clock_ns: self.clock.now_ns(),
            pic,
            ioapic,
            pit,
            lapics,
        }
    }

    /// Load a saved state; timers keep the time they had left when it was saved.
    pub fn restore_state(&self, state: &SwIrqChipState) -> Result<(), IrqChipError> {
        if state.lapics.len() != self.cpus.len() {
            return Err(IrqChipError::SnapshotCpuCount {
                expected: self.cpus.len(),
                found: state.lapics.len(),
            });
        }
        let delta = i128::from(self.clock.now_ns()) - i128::from(state.clock_ns);
        {
            let mut pit = lock(&self.pit);
            *pit = state.pit.clone();
            pit.shift_times(delta);
            self.store_pit_deadline(&pit);
        }
        {
            let mut pic = lock(&self.pic);
            *pic = state.pic.clone();
            self.update_pic_output(&pic);
        }
        {
            let mut ioapic = lock(&self.ioapic);
            *ioapic = state.ioapic.clone();
            let pins = ioapic.redirection.len();
            ioapic.redirection.resize(NUM_PINS, 1 << 16);
            if pins > NUM_PINS {
                ioapic.redirection.truncate(NUM_PINS);
            }
        }
        for (cpu, saved) in state.lapics.iter().enumerate() {
            self.with_lapic(cpu, |l| {
                *l = saved.clone();
                l.initial_id = cpu as u8;
                l.shift_times(delta);
            });
        }
        Ok(())
    }

    /// Pulse an ISA IRQ / GSI (an edge).
    fn pulse(&self, gsi: u32) {
        self.set_level(gsi, true);
        self.set_level(gsi, false);
    }
}

impl InterruptSink for SwIrqChip {
    fn set_level(&self, gsi: u32, level: bool) {
        if gsi < 16 {
            let mut pic = lock(&self.pic);
            pic.set_irq(gsi as u8, level);
            self.update_pic_output(&pic);
        }
        let pin = match gsi {
            0 => 2,      // ISA IRQ 0 is wired to IOAPIC pin 2 (MADT interrupt source override)
            2 => return, // the PIC cascade: no device drives it
            g if (g as usize) < NUM_PINS => g as usize,
            _ => return,
        };
        let mut out = Vec::new();
        lock(&self.ioapic).set_irq(pin, level, &mut out);
        self.route_all(&out);
    }

    fn supports_msi(&self) -> bool {
        true
    }

    fn send_msi(&self, addr: u64, data: u32) -> bool {
        SwIrqChip::send_msi(self, addr, data)
    }
}

#[cfg(test)]
mod linux_boot;
#[cfg(test)]
mod tests;
