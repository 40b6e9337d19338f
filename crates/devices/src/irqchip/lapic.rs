//! One local APIC (xAPIC mode, MMIO page at 0xfee00000): the interrupt state of one vCPU.
//!
//! It accepts messages ([`Lapic::deliver`]), decides which vector the CPU takes next given
//! the task and processor priorities ([`Lapic::pending_vector`], [`Lapic::acknowledge`]),
//! handles EOI, runs the APIC timer (one-shot, periodic, TSC-deadline), and turns ICR writes
//! into IPI messages. It knows nothing about other APICs: everything that leaves this APIC
//! (IPIs, EOIs of level-triggered vectors for the IOAPIC) is returned as a [`LapicEffect`]
//! for the chip to route. INIT and SIPI are kept as a [`StartupEvent`] for the vCPU,
//! because they change CPU state that the emulator owns.
//!
//! The timer counts at 1 GHz before the divider (a 1 ns bus cycle, as KVM's), computed
//! from the clock on demand; nothing ticks. x2APIC is not modelled.
//!
//! The struct is its own snapshot state (plain serde); times are clock nanoseconds.

use serde::{Deserialize, Serialize};

use super::clock::{muldiv, TscRate, MIN_PERIODIC_NS};
use super::ioapic::{read_bytes, write_bytes, ApicMessage, DeliveryMode, Destination};
use super::pit::shift;

/// Register offsets within the APIC page.
pub mod reg {
    pub const ID: u64 = 0x20;
    pub const VERSION: u64 = 0x30;
    pub const TPR: u64 = 0x80;
    pub const APR: u64 = 0x90;
    pub const PPR: u64 = 0xa0;
    pub const EOI: u64 = 0xb0;
    pub const RRD: u64 = 0xc0;
    pub const LDR: u64 = 0xd0;
    pub const DFR: u64 = 0xe0;
    pub const SVR: u64 = 0xf0;
    pub const ISR: u64 = 0x100;
    pub const TMR: u64 = 0x180;
    pub const IRR: u64 = 0x200;
    pub const ESR: u64 = 0x280;
    pub const LVT_CMCI: u64 = 0x2f0;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_THERMAL: u64 = 0x330;
    pub const LVT_PERF: u64 = 0x340;
    pub const LVT_LINT0: u64 = 0x350;
    pub const LVT_LINT1: u64 = 0x360;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// Version register: version 0x14 (integrated APIC), 6 LVT entries (max index 5).
pub const APIC_VERSION: u32 = 0x14 | (5 << 16);
/// `IA32_APIC_BASE` bits.
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// The default (and only supported) APIC page address.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;

const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;
/// Timer ticks per second before the divider (1 ns per tick).
const TIMER_HZ: u64 = 1_000_000_000;
/// ESR bit: a message with an illegal vector (0..15) was received.
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit: an illegal vector was sent.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;

/// The timer's divider for a divide-configuration value (bits 0, 1, 3).
fn divisor_for(dcr: u32) -> u64 {
    let v = (dcr & 3) | ((dcr & 8) >> 1);
    1 << ((v + 1) & 7)
}

/// Timer mode from LVT timer bits 17..18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// A CPU state change the vCPU must carry out itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartupEvent {
    /// INIT: reset the CPU (keeping this APIC's ID) and, on an AP, wait for a SIPI.
    Init,
    /// Start-up IPI: begin executing in real mode at `vector << 12` (CS = vector << 8, IP = 0),
    /// if the CPU is waiting for one; otherwise ignore it.
    Sipi(u8),
}

/// Something leaving this APIC that the chip must route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapicEffect {
    None,
    /// An IPI from an ICR write.
    Ipi(ApicMessage),
    /// EOI of a level-triggered vector: tell the IOAPIC.
    LevelEoi(u8),
    /// The timer was (re)programmed: its deadline may have moved.
    TimerChanged,
    /// LVT LINT0 or the enable state changed: whether this CPU takes PIC interrupts may have.
    Lint0Changed,
}

/// The addressing state of one APIC (physical ID, logical ID and model), small enough
/// to publish in one atomic word so that routing can skip APICs without locking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicAddress {
    pub id: u8,
    pub logical_id: u8,
    /// Flat logical model (DFR 0xf...); otherwise cluster model.
    pub flat: bool,
}

impl ApicAddress {
    /// Whether a message for `dest` is for this address (shorthands always match).
    pub fn matches(&self, dest: Destination) -> bool {
        match dest {
            Destination::Physical(id) => id == 0xff || id == self.id,
            Destination::Logical(0xff) => true,
            Destination::Logical(mda) if self.flat => self.logical_id & mda != 0,
            Destination::Logical(mda) => {
                // Cluster model: high nibble cluster, low nibble members.
                (self.logical_id >> 4) == (mda >> 4) && (self.logical_id & mda & 0x0f) != 0
            }
            Destination::All | Destination::AllButSelf | Destination::SelfOnly => true,
        }
    }

    /// Packed into a `u32` (for an atomic).
    pub fn pack(&self) -> u32 {
        u32::from(self.id) | (u32::from(self.logical_id) << 8) | (u32::from(self.flat) << 16)
    }

    /// The inverse of [`ApicAddress::pack`].
    pub fn unpack(v: u32) -> Self {
        ApicAddress {
            id: v as u8,
            logical_id: (v >> 8) as u8,
            flat: v & (1 << 16) != 0,
        }
    }
}

/// A 256-bit vector register (IRR, ISR, TMR) as eight 32-bit words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bits256(pub [u32; 8]);

impl Bits256 {
    fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] |= 1 << (v & 31);
    }
    fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] &= !(1 << (v & 31));
    }
    fn get(&self, v: u8) -> bool {
        self.0[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }
    /// The highest set vector.
    fn highest(&self) -> Option<u8> {
        for (i, word) in self.0.iter().enumerate().rev() {
            if *word != 0 {
                return Some((i as u8) * 32 + (31 - word.leading_zeros() as u8));
            }
        }
        None
    }
}

/// One local APIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lapic {
    /// `IA32_APIC_BASE`.
    pub apic_base: u64,
    pub id: u8,
    pub tpr: u32,
    pub ldr: u32,
    pub dfr: u32,
    pub svr: u32,
    pub irr: Bits256,
    pub isr: Bits256,
    pub tmr: Bits256,
    /// Errors collected since the last ESR write, and the value the ESR shows.
    pub esr_pending: u32,
    pub esr: u32,
    pub icr_low: u32,
    pub icr_high: u32,
    pub lvt_timer: u32,
    pub lvt_thermal: u32,
    pub lvt_perf: u32,
    pub lvt_lint0: u32,
    pub lvt_lint1: u32,
    pub lvt_error: u32,
    pub lvt_cmci: u32,
    pub timer_initial: u32,
    pub timer_divide: u32,
    /// When the current one-shot/periodic count started (clock ns).
    pub timer_start_ns: u64,
    /// When the timer fires next (clock ns); `None` if not armed.
    pub timer_deadline_ns: Option<u64>,
    /// `IA32_TSC_DEADLINE` (0 = disarmed).
    pub tsc_deadline: u64,
    /// An ExtINT message (from the IOAPIC) waits for INTA: the vector comes from the PIC.
    pub extint_pending: bool,
    pub pending_init: bool,
    pub pending_sipi: Option<u8>,
}

impl Lapic {
    /// The APIC of vCPU `id` after power-on. The BSP's LINT0 is in ExtINT mode and unmasked,
    /// as firmware leaves it (virtual wire mode), so the PIC reaches it before Linux sets
    /// up the APIC.
    pub fn new(id: u8, bsp: bool) -> Self {
        let mut lapic = Lapic {
            apic_base: APIC_DEFAULT_BASE | APIC_BASE_ENABLE | if bsp { APIC_BASE_BSP } else { 0 },
            id,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            irr: Bits256::default(),
            isr: Bits256::default(),
            tmr: Bits256::default(),
            esr_pending: 0,
            esr: 0,
            icr_low: 0,
            icr_high: 0,
            lvt_timer: LVT_MASKED,
            lvt_thermal: LVT_MASKED,
            lvt_perf: LVT_MASKED,
            lvt_lint0: LVT_MASKED,
            lvt_lint1: LVT_MASKED,
            lvt_error: LVT_MASKED,
            lvt_cmci: LVT_MASKED,
            timer_initial: 0,
            timer_divide: 0,
            timer_start_ns: 0,
            timer_deadline_ns: None,
            tsc_deadline: 0,
            extint_pending: false,
            pending_init: false,
            pending_sipi: None,
        };
        if bsp {
            lapic.lvt_lint0 = 7 << 8; // ExtINT, unmasked
        }
        lapic
    }

    /// Globally enabled through `IA32_APIC_BASE`.
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_ENABLE != 0
    }

    /// Software-enabled through the spurious-interrupt vector register.
    pub fn sw_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    fn enabled(&self) -> bool {
        self.hw_enabled() && self.sw_enabled()
    }

    /// Whether the PIC's INTR output reaches this CPU: the APIC is globally disabled (the
    /// pin goes straight to the core) or LINT0 is an unmasked ExtINT entry (virtual wire).
    pub fn accepts_pic(&self) -> bool {
        !self.hw_enabled() || (self.lvt_lint0 & LVT_MASKED == 0 && (self.lvt_lint0 >> 8) & 7 == 7)
    }

    /// The processor priority register.
    pub fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if (self.tpr & 0xf0) >= (isrv & 0xf0) {
            self.tpr & 0xff
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the CPU would take now, if any (IRR above the processor priority).
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (u32::from(v) & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// Whether the vCPU has a maskable interrupt to take from this APIC (not counting the
    /// PIC's virtual wire, which the chip tracks).
    pub fn has_interrupt(&self) -> bool {
        self.extint_pending || self.pending_vector().is_some()
    }

    /// Accept a fixed interrupt. Dropped while the APIC is disabled.
    pub fn deliver(&mut self, vector: u8, level_triggered: bool) {
        if !self.enabled() {
            return;
        }
        if vector < 16 {
            self.report_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.irr.set(vector);
        if level_triggered {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
    }

    /// Accept a message routed to this APIC (fixed, lowest-priority, ExtINT, INIT, SIPI).
    pub fn accept(&mut self, msg: &ApicMessage) {
        match msg.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.deliver(msg.vector, msg.level_triggered)
            }
            DeliveryMode::ExtInt => {
                if self.hw_enabled() {
                    self.extint_pending = true;
                }
            }
            DeliveryMode::Init => {
                self.init_reset();
                self.pending_init = true;
                self.pending_sipi = None;
            }
            DeliveryMode::Startup => self.pending_sipi = Some(msg.vector),
            // NMI and SMI are not modelled; reserved modes are dropped.
            DeliveryMode::Nmi | DeliveryMode::Smi | DeliveryMode::Reserved => {}
        }
    }

    fn report_error(&mut self, bit: u32) {
        self.esr_pending |= bit;
        // The error LVT would interrupt here; Linux only counts errors, so it is recorded
        // in the ESR but raises nothing.
    }

    /// INTA for a vector from the APIC: IRR to ISR. `None` if nothing is deliverable.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        self.irr.clear(v);
        self.isr.set(v);
        Some(v)
    }

    /// Take a pending ExtINT request (the caller then asks the PIC for the vector).
    pub fn take_extint(&mut self) -> bool {
        std::mem::take(&mut self.extint_pending)
    }

    /// The next INIT or SIPI for the vCPU; INIT comes first and discards older SIPIs.
    pub fn take_startup(&mut self) -> Option<StartupEvent> {
        if std::mem::take(&mut self.pending_init) {
            return Some(StartupEvent::Init);
        }
        self.pending_sipi.take().map(StartupEvent::Sipi)
    }

    /// Whether an INIT or SIPI is waiting.
    pub fn has_startup(&self) -> bool {
        self.pending_init || self.pending_sipi.is_some()
    }

    /// The end-of-interrupt: retire the highest in-service vector. Returns it if it was
    /// level-triggered (the IOAPIC must hear of it).
    pub fn eoi(&mut self) -> Option<u8> {
        let v = self.isr.highest()?;
        self.isr.clear(v);
        self.tmr.get(v).then_some(v)
    }

    /// INIT: every register back to its power-on value except the ID and `IA32_APIC_BASE`.
    pub fn init_reset(&mut self) {
        let base = self.apic_base;
        let bsp = base & APIC_BASE_BSP != 0;
        *self = Lapic::new(self.id, bsp);
        self.apic_base = base;
    }

    /// Write `IA32_APIC_BASE`. x2APIC and relocation are refused (`false`: the caller
    /// injects #GP). Clearing the enable bit resets the APIC.
    pub fn set_apic_base(&mut self, value: u64) -> bool {
        if value & APIC_BASE_X2APIC != 0 || value & 0xffff_f000 != APIC_DEFAULT_BASE {
            return false;
        }
        let bsp = self.apic_base & APIC_BASE_BSP;
        let new = (value & (APIC_BASE_ENABLE | 0xffff_f000)) | bsp;
        if new & APIC_BASE_ENABLE == 0 && self.hw_enabled() {
            let id = self.id;
            *self = Lapic::new(id, bsp != 0);
        }
        self.apic_base = new;
        true
    }

    // ---- timer ----

    fn timer_mode(&self) -> TimerMode {
        match (self.lvt_timer >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    fn divisor(&self) -> u64 {
        divisor_for(self.timer_divide)
    }

    fn period_ns(&self) -> u64 {
        let ns = muldiv(
            u64::from(self.timer_initial) * self.divisor(),
            1_000_000_000,
            TIMER_HZ,
        );
        if self.timer_mode() == TimerMode::Periodic {
            ns.max(MIN_PERIODIC_NS)
        } else {
            ns
        }
    }

    fn start_count(&mut self, now: u64) {
        self.timer_start_ns = now;
        self.timer_deadline_ns = if self.timer_initial == 0 {
            None
        } else {
            Some(now.saturating_add(self.period_ns()))
        };
    }

    /// The current-count register.
    fn current_count(&self, now: u64) -> u32 {
        let Some(deadline) = self.timer_deadline_ns else {
            return 0;
        };
        if self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let remaining_ns = match deadline.checked_sub(now) {
            Some(left) => left,
            // Due but not polled yet: a periodic timer has already reloaded.
            None if self.timer_mode() == TimerMode::Periodic => {
                let period = self.period_ns().max(1);
                period - (now - deadline) % period
            }
            None => 0,
        };
        let ticks = muldiv(remaining_ns, TIMER_HZ, 1_000_000_000) / self.divisor();
        // (A clamped periodic timer could otherwise count more than it was given.)
        u32::try_from(ticks)
            .unwrap_or(u32::MAX)
            .min(self.timer_initial)
    }

    /// Program `IA32_TSC_DEADLINE` (ignored unless the timer is in TSC-deadline mode).
    pub fn set_tsc_deadline(&mut self, tsc: u64, rate: TscRate) {
        if self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.tsc_deadline = tsc;
        self.timer_deadline_ns = (tsc != 0).then(|| rate.ns_at(tsc));
    }

    /// Fire the timer if its deadline has passed. Returns whether it fired.
    pub fn poll_timer(&mut self, now: u64) -> bool {
        let Some(deadline) = self.timer_deadline_ns else {
            return false;
        };
        if now < deadline {
            return false;
        }
        match self.timer_mode() {
            TimerMode::OneShot => self.timer_deadline_ns = None,
            TimerMode::TscDeadline => {
                self.timer_deadline_ns = None;
                self.tsc_deadline = 0;
            }
            TimerMode::Periodic => {
                let period = self.period_ns().max(1);
                // Skip periods that were missed entirely (one interrupt per poll).
                let missed = (now - deadline) / period;
                let next = deadline.saturating_add((missed + 1).saturating_mul(period));
                self.timer_start_ns = next - period;
                self.timer_deadline_ns = Some(next);
            }
        }
        if self.lvt_timer & LVT_MASKED == 0 {
            self.deliver((self.lvt_timer & 0xff) as u8, false);
        }
        true
    }

    /// Move every stored time by `delta` ns (after restoring into another clock).
    pub fn shift_times(&mut self, delta: i128) {
        self.timer_start_ns = shift(self.timer_start_ns, delta);
        self.timer_deadline_ns = self.timer_deadline_ns.map(|t| shift(t, delta));
    }

    // ---- registers ----

    fn read_register(&self, offset: u64, now: u64) -> u32 {
        match offset {
            reg::ID => u32::from(self.id) << 24,
            reg::VERSION => APIC_VERSION,
            reg::TPR => self.tpr,
            reg::APR => 0,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr.0[((offset - reg::ISR) >> 4) as usize],
            0x180..=0x1f0 => self.tmr.0[((offset - reg::TMR) >> 4) as usize],
            0x200..=0x270 => self.irr.0[((offset - reg::IRR) >> 4) as usize],
            reg::ESR => self.esr,
            reg::LVT_CMCI => self.lvt_cmci,
            reg::ICR_LOW => self.icr_low & !(1 << 12),
            reg::ICR_HIGH => self.icr_high,
            reg::LVT_TIMER => self.lvt_timer,
            reg::LVT_THERMAL => self.lvt_thermal,
            reg::LVT_PERF => self.lvt_perf,
            reg::LVT_LINT0 => self.lvt_lint0,
            reg::LVT_LINT1 => self.lvt_lint1,
            reg::LVT_ERROR => self.lvt_error,
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => 0,
        }
    }

    /// An MMIO read at `offset` in the APIC page (up to 4 bytes within one register).
    pub fn mmio_read(&self, offset: u64, data: &mut [u8], now: u64) {
        let value = self.read_register(offset & 0xff0, now);
        write_bytes(value, offset & 0xf, data);
    }

    fn write_lvt(&mut self, value: u32, writable: u32) -> u32 {
        let mut v = value & writable;
        if !self.sw_enabled() {
            v |= LVT_MASKED;
        }
        v
    }

    /// An MMIO write at `offset` (32-bit aligned writes only; others are dropped, as KVM
    /// does). Returns what the chip must do about it.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], now: u64) -> LapicEffect {
        if data.len() != 4 || offset & 0xf != 0 {
            return LapicEffect::None;
        }
        let Some(value) = read_bytes(0, data) else {
            return LapicEffect::None;
        };
        self.write_register(offset & 0xff0, value, now)
    }

    /// Write register `offset` (as by a 32-bit MMIO write).
    pub fn write_register(&mut self, offset: u64, value: u32, now: u64) -> LapicEffect {
        const LVT_COMMON: u32 = LVT_MASKED | 0xff;
        match offset {
            reg::ID => self.id = (value >> 24) as u8,
            reg::TPR => self.tpr = value & 0xff,
            reg::EOI => {
                if let Some(v) = self.eoi() {
                    return LapicEffect::LevelEoi(v);
                }
            }
            reg::LDR => self.ldr = value & 0xff00_0000,
            reg::DFR => self.dfr = value | 0x0fff_ffff,
            reg::SVR => {
                // Bit 12 (suppress EOI broadcast) is not offered.
                self.svr = value & 0x3ff;
                if !self.sw_enabled() {
                    for lvt in [
                        &mut self.lvt_timer,
                        &mut self.lvt_thermal,
                        &mut self.lvt_perf,
                        &mut self.lvt_lint0,
                        &mut self.lvt_lint1,
                        &mut self.lvt_error,
                        &mut self.lvt_cmci,
                    ] {
                        *lvt |= LVT_MASKED;
                    }
                }
                return LapicEffect::Lint0Changed;
            }
            reg::ESR => {
                self.esr = std::mem::take(&mut self.esr_pending);
            }
            reg::ICR_LOW => {
                self.icr_low = value & !(1 << 12);
                return self.send_ipi();
            }
            reg::ICR_HIGH => self.icr_high = value & 0xff00_0000,
            reg::LVT_TIMER => {
                let old_mode = self.timer_mode();
                self.lvt_timer = self.write_lvt(value, LVT_COMMON | (3 << 17));
                if self.timer_mode() != old_mode {
                    // Switching modes disarms the timer.
                    self.timer_initial = 0;
                    self.timer_deadline_ns = None;
                    self.tsc_deadline = 0;
                }
                return LapicEffect::TimerChanged;
            }
            reg::LVT_THERMAL => self.lvt_thermal = self.write_lvt(value, LVT_COMMON | (7 << 8)),
            reg::LVT_PERF => self.lvt_perf = self.write_lvt(value, LVT_COMMON | (7 << 8)),
            reg::LVT_LINT0 | reg::LVT_LINT1 => {
                // Vector, delivery mode, polarity, trigger, mask.
                let v = self.write_lvt(value, LVT_COMMON | (7 << 8) | (1 << 13) | (1 << 15));
                if offset == reg::LVT_LINT0 {
                    self.lvt_lint0 = v;
                    return LapicEffect::Lint0Changed;
                }
                self.lvt_lint1 = v;
            }
            reg::LVT_ERROR => self.lvt_error = self.write_lvt(value, LVT_COMMON),
            reg::LVT_CMCI => self.lvt_cmci = self.write_lvt(value, LVT_COMMON | (7 << 8)),
            reg::TIMER_INITIAL => {
                if self.timer_mode() != TimerMode::TscDeadline {
                    self.timer_initial = value;
                    self.start_count(now);
                }
                return LapicEffect::TimerChanged;
            }
            reg::TIMER_DIVIDE => {
                let remaining = self.current_count(now);
                self.timer_divide = value & 0xb;
                // Keep counting from the current value at the new rate.
                if self.timer_mode() != TimerMode::TscDeadline && self.timer_deadline_ns.is_some() {
                    let ticks = u64::from(remaining) * self.divisor();
                    self.timer_deadline_ns =
                        Some(now.saturating_add(muldiv(ticks, 1_000_000_000, TIMER_HZ)));
                }
                return LapicEffect::TimerChanged;
            }
            _ => {} // read-only or reserved
        }
        LapicEffect::None
    }

    /// The message an ICR write sends, if it sends one.
    fn send_ipi(&mut self) -> LapicEffect {
        let low = self.icr_low;
        let vector = (low & 0xff) as u8;
        let mode = DeliveryMode::from_bits(low >> 8);
        let level_trigger = low & (1 << 15) != 0;
        let assert = low & (1 << 14) != 0;
        if mode == DeliveryMode::Init && level_trigger && !assert {
            // INIT level de-assert: no effect on modern APICs.
            return LapicEffect::None;
        }
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.report_error(ESR_SEND_ILLEGAL_VECTOR);
            return LapicEffect::None;
        }
        let dest_field = (self.icr_high >> 24) as u8;
        let dest = match (low >> 18) & 3 {
            1 => Destination::SelfOnly,
            2 => Destination::All,
            3 => Destination::AllButSelf,
            _ if low & (1 << 11) != 0 => Destination::Logical(dest_field),
            _ => Destination::Physical(dest_field),
        };
        LapicEffect::Ipi(ApicMessage {
            vector,
            mode,
            dest,
            level_triggered: false,
        })
    }

    /// What destinations this APIC answers to.
    pub fn address(&self) -> ApicAddress {
        ApicAddress {
            id: self.id,
            logical_id: (self.ldr >> 24) as u8,
            flat: self.dfr >> 28 == 0xf,
        }
    }

    /// Whether a message for `dest` (not a shorthand) is for this APIC.
    pub fn matches(&self, dest: Destination) -> bool {
        self.address().matches(dest)
    }

    /// When the timer fires next (clock ns).
    pub fn timer_deadline(&self) -> Option<u64> {
        self.timer_deadline_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(l: &mut Lapic, off: u64, v: u32, now: u64) -> LapicEffect {
        l.mmio_write(off, &v.to_le_bytes(), now)
    }

    fn read(l: &Lapic, off: u64, now: u64) -> u32 {
        let mut d = [0u8; 4];
        l.mmio_read(off, &mut d, now);
        u32::from_le_bytes(d)
    }

    fn enabled() -> Lapic {
        let mut l = Lapic::new(0, true);
        write(&mut l, reg::SVR, 0x1ff, 0);
        l
    }

    #[test]
    fn reset_values() {
        let l = Lapic::new(3, false);
        assert_eq!(read(&l, reg::ID, 0), 3 << 24);
        assert_eq!(read(&l, reg::VERSION, 0), 0x0005_0014);
        assert_eq!(read(&l, reg::DFR, 0), 0xffff_ffff);
        assert_eq!(read(&l, reg::SVR, 0), 0xff);
        assert_eq!(l.apic_base, 0xfee0_0800);
        assert!(!l.accepts_pic(), "AP: LINT0 masked");
        let bsp = Lapic::new(0, true);
        assert_eq!(bsp.apic_base, 0xfee0_0900);
        assert!(bsp.accepts_pic(), "BSP: virtual wire through LINT0");
    }

    #[test]
    fn disabled_apic_drops_fixed_interrupts() {
        let mut l = Lapic::new(0, true);
        l.deliver(0x40, false);
        assert!(!l.has_interrupt());
        let mut l = enabled();
        l.deliver(0x40, false);
        assert_eq!(l.pending_vector(), Some(0x40));
        l.deliver(3, false);
        write(&mut l, reg::ESR, 0, 0);
        assert_eq!(read(&l, reg::ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
    }

    #[test]
    fn priority_tpr_ppr_and_eoi() {
        let mut l = enabled();
        l.deliver(0x41, false);
        l.deliver(0x62, true);
        write(&mut l, reg::TPR, 0x70, 0);
        assert_eq!(l.pending_vector(), None, "TPR 0x70 blocks class 6");
        write(&mut l, reg::TPR, 0x50, 0);
        assert_eq!(l.acknowledge(), Some(0x62));
        assert_eq!(read(&l, reg::PPR, 0), 0x60);
        assert_eq!(read(&l, reg::ISR + 0x30, 0), 1 << 2, "0x62 in ISR word 3");
        assert_eq!(read(&l, reg::TMR + 0x30, 0), 1 << 2, "0x62 is level");
        assert_eq!(
            l.pending_vector(),
            None,
            "0x41 is below the in-service class"
        );
        assert_eq!(
            write(&mut l, reg::EOI, 0, 0),
            LapicEffect::LevelEoi(0x62),
            "level EOI goes to the IOAPIC"
        );
        assert_eq!(l.acknowledge(), None, "TPR 0x50 still blocks 0x41");
        write(&mut l, reg::TPR, 0, 0);
        assert_eq!(l.acknowledge(), Some(0x41));
        assert_eq!(write(&mut l, reg::EOI, 0, 0), LapicEffect::None);
        assert_eq!(l.acknowledge(), None);
    }

    #[test]
    fn oneshot_timer_fires_after_programmed_time() {
        let mut l = enabled();
        write(&mut l, reg::TIMER_DIVIDE, 0x3, 0); // divide by 16
        write(&mut l, reg::LVT_TIMER, 0xec, 0);
        write(&mut l, reg::TIMER_INITIAL, 1000, 100);
        // 1000 * 16 ns = 16 µs.
        assert_eq!(l.timer_deadline(), Some(16_100));
        assert_eq!(read(&l, reg::TIMER_CURRENT, 8_100), 500);
        assert!(!l.poll_timer(16_099));
        assert!(l.poll_timer(16_100));
        assert_eq!(l.acknowledge(), Some(0xec));
        assert_eq!(read(&l, reg::TIMER_CURRENT, 20_000), 0);
        assert!(!l.poll_timer(1_000_000), "one-shot fires once");
    }

    #[test]
    fn periodic_timer_rearms() {
        let mut l = enabled();
        write(&mut l, reg::TIMER_DIVIDE, 0xb, 0); // divide by 1
        write(&mut l, reg::LVT_TIMER, (1 << 17) | 0xef, 0);
        write(&mut l, reg::TIMER_INITIAL, 1_000_000, 0); // 1 ms
        let mut fired = 0;
        for t in (0..=10_000_000).step_by(50_000) {
            if l.poll_timer(t) {
                fired += 1;
            }
        }
        assert_eq!(fired, 10);
        assert_eq!(l.timer_deadline(), Some(11_000_000));
        // Read between polls, after the deadline: the count has wrapped around.
        assert_eq!(read(&l, reg::TIMER_CURRENT, 11_250_000), 750_000);
        // Late poll: missed periods coalesce, the phase is kept.
        assert!(l.poll_timer(15_500_000));
        assert_eq!(l.timer_deadline(), Some(16_000_000));
    }

    #[test]
    fn tiny_periodic_period_is_clamped() {
        let mut l = enabled();
        write(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
        write(&mut l, reg::LVT_TIMER, (1 << 17) | 0xef, 0);
        write(&mut l, reg::TIMER_INITIAL, 1, 0);
        assert_eq!(l.timer_deadline(), Some(MIN_PERIODIC_NS));
        assert!(read(&l, reg::TIMER_CURRENT, 10) <= 1);
        // One-shot keeps its exact (tiny) time.
        write(&mut l, reg::LVT_TIMER, 0xef, 0);
        write(&mut l, reg::TIMER_INITIAL, 1, 0);
        assert_eq!(l.timer_deadline(), Some(1));
    }

    #[test]
    fn masked_timer_counts_but_does_not_interrupt() {
        let mut l = enabled();
        write(&mut l, reg::LVT_TIMER, LVT_MASKED | 0xec, 0);
        write(&mut l, reg::TIMER_INITIAL, 10, 0);
        assert!(l.poll_timer(1_000));
        assert!(!l.has_interrupt());
    }

    #[test]
    fn tsc_deadline_timer() {
        let rate = TscRate { hz: 2_000_000_000 };
        let mut l = enabled();
        l.set_tsc_deadline(1000, rate);
        assert_eq!(
            l.timer_deadline(),
            None,
            "ignored outside TSC-deadline mode"
        );
        write(&mut l, reg::LVT_TIMER, (2 << 17) | 0xee, 0);
        write(&mut l, reg::TIMER_INITIAL, 5, 0);
        assert_eq!(
            l.timer_deadline(),
            None,
            "initial count ignored in TSC-deadline mode"
        );
        l.set_tsc_deadline(4_000_000, rate); // 2 ms
        assert_eq!(l.timer_deadline(), Some(2_000_000));
        assert!(!l.poll_timer(1_999_999));
        assert!(l.poll_timer(2_000_000));
        assert_eq!(l.tsc_deadline, 0, "the MSR reads 0 after firing");
        assert_eq!(l.acknowledge(), Some(0xee));
        l.set_tsc_deadline(6_000_000, rate);
        l.set_tsc_deadline(0, rate);
        assert!(!l.poll_timer(u64::MAX), "writing 0 disarms");
    }

    #[test]
    fn icr_produces_ipis() {
        let mut l = enabled();
        write(&mut l, reg::ICR_HIGH, 0x0200_0000, 0);
        let e = write(&mut l, reg::ICR_LOW, 0x4000 | 0xf0, 0);
        assert_eq!(
            e,
            LapicEffect::Ipi(ApicMessage {
                vector: 0xf0,
                mode: DeliveryMode::Fixed,
                dest: Destination::Physical(2),
                level_triggered: false
            })
        );
        // INIT assert, then de-assert (ignored), SIPI.
        let e = write(&mut l, reg::ICR_LOW, 0xc500, 0);
        assert!(matches!(e, LapicEffect::Ipi(m) if m.mode == DeliveryMode::Init));
        assert_eq!(write(&mut l, reg::ICR_LOW, 0x8500, 0), LapicEffect::None);
        let e = write(&mut l, reg::ICR_LOW, 0x0698, 0);
        assert!(
            matches!(e, LapicEffect::Ipi(m) if m.mode == DeliveryMode::Startup && m.vector == 0x98)
        );
        // Shorthand all-but-self.
        let e = write(&mut l, reg::ICR_LOW, (3 << 18) | 0xfd, 0);
        assert!(matches!(e, LapicEffect::Ipi(m) if m.dest == Destination::AllButSelf));
        // Delivery status always reads idle.
        assert_eq!(read(&l, reg::ICR_LOW, 0) & (1 << 12), 0);
    }

    #[test]
    fn logical_destination_flat_and_cluster() {
        let mut l = enabled();
        write(&mut l, reg::LDR, 0x0400_0000, 0);
        assert!(l.matches(Destination::Logical(0x06)));
        assert!(!l.matches(Destination::Logical(0x03)));
        write(&mut l, reg::DFR, 0x0fff_ffff, 0); // cluster
        write(&mut l, reg::LDR, 0x2100_0000, 0); // cluster 2, member bit 0
        assert!(l.matches(Destination::Logical(0x21)));
        assert!(!l.matches(Destination::Logical(0x11)));
        assert!(l.matches(Destination::Physical(0xff)));
        assert!(l.matches(Destination::Physical(0)));
        assert!(!l.matches(Destination::Physical(1)));
    }

    #[test]
    fn startup_events_and_init_reset() {
        let mut l = Lapic::new(1, false);
        write(&mut l, reg::SVR, 0x1ff, 0);
        write(&mut l, reg::TPR, 0x20, 0);
        let sipi = ApicMessage {
            vector: 0x9a,
            mode: DeliveryMode::Startup,
            dest: Destination::Physical(1),
            level_triggered: false,
        };
        l.accept(&sipi);
        l.accept(&ApicMessage {
            mode: DeliveryMode::Init,
            ..sipi
        });
        l.accept(&sipi);
        assert_eq!(l.take_startup(), Some(StartupEvent::Init));
        assert_eq!((l.tpr, l.svr), (0, 0xff), "INIT reset the registers");
        assert_eq!(l.take_startup(), Some(StartupEvent::Sipi(0x9a)));
        assert_eq!(l.take_startup(), None);
        assert_eq!(l.id, 1);
    }

    #[test]
    fn software_disable_masks_lvts_and_apic_base_rules() {
        let mut l = enabled();
        write(&mut l, reg::LVT_LINT0, 0x700, 0);
        assert!(l.accepts_pic());
        write(&mut l, reg::SVR, 0xff, 0);
        assert_ne!(read(&l, reg::LVT_LINT0, 0) & LVT_MASKED, 0);
        write(&mut l, reg::LVT_ERROR, 0xfe, 0);
        assert_ne!(
            read(&l, reg::LVT_ERROR, 0) & LVT_MASKED,
            0,
            "can't unmask while disabled"
        );
        assert!(!l.set_apic_base(0xfee0_0c00), "x2APIC refused");
        assert!(!l.set_apic_base(0xfed0_0800), "relocation refused");
        assert!(l.set_apic_base(0xfee0_0000));
        assert!(!l.hw_enabled());
        assert!(
            l.accepts_pic(),
            "globally disabled: INTR goes straight to the core"
        );
        assert_eq!(
            l.apic_base & APIC_BASE_BSP,
            APIC_BASE_BSP,
            "BSP bit is read-only"
        );
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut l = enabled();
        assert_eq!(l.mmio_write(0x81, &[1, 2, 3, 4], 0), LapicEffect::None);
        assert_eq!(l.mmio_write(0x80, &[1, 2], 0), LapicEffect::None);
        assert_eq!(l.tpr, 0);
        let mut d = [0u8; 2];
        l.mmio_read(0x32, &mut d, 0);
        assert_eq!(d, [0x05, 0x00], "upper half of the version register");
        assert_eq!(read(&l, 0xff0, 0), 0);
    }
}
