//! One local APIC: the interrupt state of one vCPU, in xAPIC mode (the MMIO page, at
//! 0xfee00000 unless `IA32_APIC_BASE` moves it) or x2APIC mode (MSRs 0x800..0x8ff).
//!
//! The mode is a state machine on `IA32_APIC_BASE` bits EN (11) and EXTD (10), as in the
//! SDM (10.12.5); [`Lapic::set_apic_base`] refuses (the caller injects #GP) everything else:
//!
//! ```text
//!            EN=1                    EN=1,EXTD=1
//! Disabled ───────▶ XApic ───────────────────────▶ X2Apic
//!    ▲  ◀─────────── │  (EN=0: reset)                │
//!    └───────────────┴───────────────────────────────┘ EN=0: reset
//! ```
//!
//! Disabled → X2Apic, X2Apic → XApic and EN=0/EXTD=1 are invalid. Leaving for Disabled
//! resets every register (the ID back to the vCPU's initial ID); entering x2APIC mode fixes
//! the ID to the initial ID and derives the logical ID from it (cluster = ID[31:4], member
//! bit = ID[3:0]). The MMIO page answers only in xAPIC mode, the MSRs only in x2APIC mode.
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
//! from the clock on demand; nothing ticks.
//!
//! NMIs (ICR, LINT0/LINT1 in NMI mode, the IOAPIC) are counted, at most two waiting as in
//! KVM (one the CPU is about to take and one latched behind it); the CPU takes them with
//! [`Lapic::take_nmi`] and does the NMI blocking itself.
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
/// `IA32_APIC_BASE` bits that are reserved below the physical-address bits (0..7, 9).
const APIC_BASE_RESERVED_LOW: u64 = 0xff | (1 << 9);
/// The first x2APIC MSR; register offset `o` of the xAPIC page is MSR `0x800 + o / 16`.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// The last x2APIC MSR.
pub const X2APIC_MSR_END: u32 = 0x8ff;
/// The x2APIC-only self-IPI register (offset 0x3f0 of the register map).
const X2APIC_SELF_IPI: u64 = 0x3f0;
/// NMIs that may wait: one for the CPU to take and one latched behind it.
const MAX_PENDING_NMIS: u8 = 2;
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

/// The operating mode, from `IA32_APIC_BASE` EN and EXTD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// EN=0: the APIC neither answers nor takes interrupts; the PIC reaches the core.
    Disabled,
    /// EN=1, EXTD=0: registers in the MMIO page.
    XApic,
    /// EN=1, EXTD=1: registers in MSRs 0x800..0x8ff.
    X2Apic,
}

impl ApicMode {
    /// The mode an `IA32_APIC_BASE` value selects; `None` for the invalid EN=0, EXTD=1.
    pub fn of(apic_base: u64) -> Option<Self> {
        match (
            apic_base & APIC_BASE_ENABLE != 0,
            apic_base & APIC_BASE_X2APIC != 0,
        ) {
            (false, false) => Some(ApicMode::Disabled),
            (true, false) => Some(ApicMode::XApic),
            (true, true) => Some(ApicMode::X2Apic),
            (false, true) => None,
        }
    }
}

/// What the platform lets `IA32_APIC_BASE` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicBaseLimits {
    /// x2APIC mode is offered (CPUID.1:ECX bit 21).
    pub x2apic: bool,
    /// Physical-address width (CPUID 0x80000008 EAX[7:0]); base bits above it are reserved.
    pub phys_addr_bits: u8,
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

/// How an APIC interprets logical destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicalModel {
    /// xAPIC, DFR 0xf...: the 8-bit MDA is a bitmap of logical IDs.
    Flat,
    /// xAPIC, DFR 0x0...: MDA[7:4] cluster, MDA[3:0] members.
    Cluster,
    /// x2APIC: MDA[31:16] cluster, MDA[15:0] members; the logical ID derives from the ID.
    X2Apic,
}

/// The addressing state of one APIC (physical ID, logical ID and model), small enough
/// to publish in one atomic word so that routing can skip APICs without locking them.
/// (vCPU counts stay below 255, so even x2APIC IDs fit in a byte.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicAddress {
    pub id: u8,
    /// The xAPIC logical ID (LDR[31:24]); unused by the x2APIC model.
    pub logical_id: u8,
    pub model: LogicalModel,
}

/// The x2APIC logical ID (LDR) of x2APIC ID `id`.
pub fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

impl ApicAddress {
    /// Whether a message for `dest` is for this address (shorthands always match).
    pub fn matches(&self, dest: Destination) -> bool {
        match dest {
            Destination::Physical(id) => id == Destination::BROADCAST || id == u32::from(self.id),
            Destination::Logical(Destination::BROADCAST) => true,
            Destination::Logical(mda) => match self.model {
                LogicalModel::Flat => mda <= 0xff && u32::from(self.logical_id) & mda != 0,
                LogicalModel::Cluster => {
                    let ldr = u32::from(self.logical_id);
                    mda <= 0xff && (ldr >> 4) == (mda >> 4) && (ldr & mda & 0x0f) != 0
                }
                LogicalModel::X2Apic => {
                    let ldr = x2apic_ldr(u32::from(self.id));
                    (ldr >> 16) == (mda >> 16) && (ldr & mda & 0xffff) != 0
                }
            },
            Destination::All | Destination::AllButSelf | Destination::SelfOnly => true,
        }
    }

    /// Packed into a `u32` (for an atomic).
    pub fn pack(&self) -> u32 {
        let model = match self.model {
            LogicalModel::Flat => 0,
            LogicalModel::Cluster => 1,
            LogicalModel::X2Apic => 2,
        };
        u32::from(self.id) | (u32::from(self.logical_id) << 8) | (model << 16)
    }

    /// The inverse of [`ApicAddress::pack`].
    pub fn unpack(v: u32) -> Self {
        ApicAddress {
            id: v as u8,
            logical_id: (v >> 8) as u8,
            model: match (v >> 16) & 3 {
                0 => LogicalModel::Flat,
                1 => LogicalModel::Cluster,
                _ => LogicalModel::X2Apic,
            },
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
    /// The ID register (xAPIC: writable; x2APIC: always `initial_id`).
    pub id: u8,
    /// The vCPU's APIC ID at power-on (CPUID's initial APIC ID, the x2APIC ID).
    #[serde(default)]
    pub initial_id: u8,
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
    /// NMIs waiting for the CPU (at most [`MAX_PENDING_NMIS`]).
    #[serde(default)]
    pub nmi_pending: u8,
}

impl Lapic {
    /// The APIC of vCPU `id` after power-on. The BSP's LINT0 is in ExtINT mode and unmasked,
    /// as firmware leaves it (virtual wire mode), so the PIC reaches it before Linux sets
    /// up the APIC.
    pub fn new(id: u8, bsp: bool) -> Self {
        let mut lapic = Lapic {
            apic_base: APIC_DEFAULT_BASE | APIC_BASE_ENABLE | if bsp { APIC_BASE_BSP } else { 0 },
            id,
            initial_id: id,
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
            nmi_pending: 0,
        };
        if bsp {
            lapic.lvt_lint0 = 7 << 8; // ExtINT, unmasked
        }
        lapic
    }

    /// The operating mode (EN=0/EXTD=1 never gets stored, see [`Lapic::set_apic_base`]).
    pub fn mode(&self) -> ApicMode {
        ApicMode::of(self.apic_base).unwrap_or(ApicMode::Disabled)
    }

    /// Where the register page answers MMIO: only in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == ApicMode::XApic).then_some(self.apic_base & !0xfff & ((1 << 52) - 1))
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

    /// Whether an NMI waits for the CPU.
    pub fn has_nmi(&self) -> bool {
        self.nmi_pending != 0
    }

    /// The CPU takes one waiting NMI; false if there was none.
    pub fn take_nmi(&mut self) -> bool {
        if self.nmi_pending == 0 {
            return false;
        }
        self.nmi_pending -= 1;
        true
    }

    fn raise_nmi(&mut self) {
        if self.hw_enabled() {
            self.nmi_pending = (self.nmi_pending + 1).min(MAX_PENDING_NMIS);
        }
    }

    /// The LINT0 (`pin` 0) or LINT1 (`pin` 1) input is asserted: act as its LVT entry says
    /// (fixed vector, NMI or ExtINT; masked entries and other modes do nothing).
    pub fn assert_lint(&mut self, pin: u8) {
        let lvt = if pin == 0 {
            self.lvt_lint0
        } else {
            self.lvt_lint1
        };
        if lvt & LVT_MASKED != 0 || !self.hw_enabled() {
            return;
        }
        match DeliveryMode::from_bits(lvt >> 8) {
            DeliveryMode::Fixed => self.deliver((lvt & 0xff) as u8, lvt & (1 << 15) != 0),
            DeliveryMode::Nmi => self.raise_nmi(),
            DeliveryMode::ExtInt => self.extint_pending = true,
            _ => {}
        }
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
            DeliveryMode::Nmi => self.raise_nmi(),
            // SMI is not modelled; reserved modes are dropped.
            DeliveryMode::Smi | DeliveryMode::Reserved => {}
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

    /// INIT: every register back to its power-on value except the ID and `IA32_APIC_BASE`
    /// (in x2APIC mode the logical ID stays derived from the ID).
    pub fn init_reset(&mut self) {
        let base = self.apic_base;
        let bsp = base & APIC_BASE_BSP != 0;
        let (id, initial_id) = (self.id, self.initial_id);
        *self = Lapic::new(initial_id, bsp);
        self.id = id;
        self.apic_base = base;
        if self.mode() == ApicMode::X2Apic {
            self.ldr = x2apic_ldr(u32::from(self.initial_id));
        }
    }

    /// Write `IA32_APIC_BASE` (the state machine in the module documentation). `false`:
    /// refused, the caller injects #GP — reserved bits (0..7, 9, at and above
    /// `limits.phys_addr_bits`), EXTD without x2APIC support, and invalid transitions.
    /// The BSP bit is read-only.
    pub fn set_apic_base(&mut self, value: u64, limits: ApicBaseLimits) -> bool {
        let reserved_high = u64::MAX
            .checked_shl(u32::from(limits.phys_addr_bits))
            .unwrap_or(0);
        if value & (APIC_BASE_RESERVED_LOW | reserved_high) != 0
            || (value & APIC_BASE_X2APIC != 0 && !limits.x2apic)
        {
            return false;
        }
        let old = self.mode();
        let Some(new) = ApicMode::of(value) else {
            return false;
        };
        match (old, new) {
            (ApicMode::Disabled, ApicMode::X2Apic) | (ApicMode::X2Apic, ApicMode::XApic) => {
                return false
            }
            (ApicMode::XApic | ApicMode::X2Apic, ApicMode::Disabled) => {
                let bsp = self.apic_base & APIC_BASE_BSP != 0;
                *self = Lapic::new(self.initial_id, bsp);
            }
            (ApicMode::XApic, ApicMode::X2Apic) => {
                self.id = self.initial_id;
                self.ldr = x2apic_ldr(u32::from(self.initial_id));
            }
            _ => {}
        }
        self.apic_base = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
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
                // A count that already ran out did so in the old mode.
                self.poll_timer(now);
                let old_mode = self.timer_mode();
                self.lvt_timer = self.write_lvt(value, LVT_COMMON | (3 << 17));
                let new_mode = self.timer_mode();
                if (old_mode == TimerMode::TscDeadline) != (new_mode == TimerMode::TscDeadline) {
                    // Entering or leaving TSC-deadline mode disarms the timer; between
                    // one-shot and periodic the count goes on (a periodic timer reloads
                    // when it reaches zero, a one-shot one stops there).
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

    /// RDMSR of x2APIC register MSR `index` (0x800..0x8ff). `None`: #GP — not in x2APIC
    /// mode, or a reserved or write-only register (EOI, SELF IPI; also the xAPIC-only
    /// APR, RRD, DFR and ICR high half).
    pub fn msr_read(&self, index: u32, now: u64) -> Option<u64> {
        let offset = Self::x2apic_offset(index)?;
        if self.mode() != ApicMode::X2Apic {
            return None;
        }
        let value = match offset {
            reg::ID => u32::from(self.initial_id),
            reg::ICR_LOW => {
                return Some(
                    u64::from(self.icr_low & !(1 << 12)) | (u64::from(self.icr_high) << 32),
                )
            }
            reg::VERSION
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::SVR
            | 0x100..=0x270
            | reg::ESR
            // No LVT CMCI: the version register reports five LVT entries (as AMD).
            | reg::LVT_TIMER..=reg::TIMER_CURRENT
            | reg::TIMER_DIVIDE => self.read_register(offset, now),
            _ => return None,
        };
        Some(u64::from(value))
    }

    /// WRMSR of x2APIC register MSR `index`. `None`: #GP — not in x2APIC mode, a reserved
    /// or read-only register, bits 63:32 set outside the ICR, or a non-zero write to EOI
    /// or ESR. Otherwise what the chip must do about it.
    pub fn msr_write(&mut self, index: u32, value: u64, now: u64) -> Option<LapicEffect> {
        let offset = Self::x2apic_offset(index)?;
        if self.mode() != ApicMode::X2Apic {
            return None;
        }
        if offset == reg::ICR_LOW {
            self.icr_high = (value >> 32) as u32;
            self.icr_low = (value as u32) & !(1 << 12);
            return Some(self.send_ipi());
        }
        let value = u32::try_from(value).ok()?;
        match offset {
            reg::EOI | reg::ESR if value != 0 => None,
            reg::TPR
            | reg::EOI
            | reg::SVR
            | reg::ESR
            | reg::LVT_TIMER..=reg::TIMER_INITIAL
            | reg::TIMER_DIVIDE => Some(self.write_register(offset, value, now)),
            // Bits 31:8 of the self-IPI register are reserved.
            X2APIC_SELF_IPI if value > 0xff => None,
            X2APIC_SELF_IPI => {
                let vector = (value & 0xff) as u8;
                if vector < 16 {
                    self.report_error(ESR_SEND_ILLEGAL_VECTOR);
                } else {
                    self.deliver(vector, false);
                }
                Some(LapicEffect::None)
            }
            _ => None,
        }
    }

    /// The register-map offset of x2APIC MSR `index`, if it is one.
    fn x2apic_offset(index: u32) -> Option<u64> {
        (X2APIC_MSR_BASE..=X2APIC_MSR_END)
            .contains(&index)
            .then(|| u64::from(index - X2APIC_MSR_BASE) << 4)
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
        let logical = low & (1 << 11) != 0;
        let dest = match (low >> 18) & 3 {
            1 => Destination::SelfOnly,
            2 => Destination::All,
            3 => Destination::AllButSelf,
            // x2APIC: the whole high word is the destination, 0xffffffff the broadcast.
            _ if self.mode() == ApicMode::X2Apic && logical => Destination::Logical(self.icr_high),
            _ if self.mode() == ApicMode::X2Apic => Destination::Physical(self.icr_high),
            _ => Destination::xapic((self.icr_high >> 24) as u8, logical),
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
            model: if self.mode() == ApicMode::X2Apic {
                LogicalModel::X2Apic
            } else if self.dfr >> 28 == 0xf {
                LogicalModel::Flat
            } else {
                LogicalModel::Cluster
            },
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

    const LIMITS: ApicBaseLimits = ApicBaseLimits {
        x2apic: true,
        phys_addr_bits: 40,
    };

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
        assert!(l.matches(Destination::xapic(0xff, false)));
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
        let no_x2apic = ApicBaseLimits {
            x2apic: false,
            ..LIMITS
        };
        assert!(
            !l.set_apic_base(0xfee0_0c00, no_x2apic),
            "x2APIC refused when not offered"
        );
        assert!(l.set_apic_base(0xfee0_0000, LIMITS));
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

    fn x2apic(id: u8) -> Lapic {
        let mut l = Lapic::new(id, id == 0);
        assert!(l.set_apic_base(l.apic_base | APIC_BASE_X2APIC, LIMITS));
        assert_eq!(
            l.msr_write(0x80f, 0x1ff, 0),
            Some(LapicEffect::Lint0Changed)
        );
        l
    }

    #[test]
    fn apic_base_mode_transitions_and_gp_cases() {
        const EN: u64 = APIC_BASE_ENABLE;
        const EXTD: u64 = APIC_BASE_X2APIC;
        let base = APIC_DEFAULT_BASE;
        let mut l = Lapic::new(1, false);
        assert_eq!(l.mode(), ApicMode::XApic);
        assert!(!l.set_apic_base(base | EXTD, LIMITS), "xAPIC to invalid");
        assert!(l.set_apic_base(base | EN | EXTD, LIMITS), "xAPIC to x2APIC");
        assert_eq!(l.mode(), ApicMode::X2Apic);
        assert!(!l.set_apic_base(base | EN, LIMITS), "x2APIC to xAPIC");
        assert!(!l.set_apic_base(base | EXTD, LIMITS), "x2APIC to invalid");
        assert!(l.set_apic_base(base | EN | EXTD, LIMITS), "x2APIC stays");
        assert!(l.set_apic_base(base, LIMITS), "x2APIC to disabled");
        assert_eq!(l.mode(), ApicMode::Disabled);
        assert!(!l.set_apic_base(base | EXTD, LIMITS), "disabled to invalid");
        assert!(
            !l.set_apic_base(base | EN | EXTD, LIMITS),
            "disabled to x2APIC"
        );
        assert!(l.set_apic_base(base | EN, LIMITS), "disabled to xAPIC");
        assert_eq!(l.mode(), ApicMode::XApic);
        assert!(!l.set_apic_base(base | EN | 1, LIMITS), "reserved bit 0");
        assert!(
            !l.set_apic_base(base | EN | (1 << 9), LIMITS),
            "reserved bit 9"
        );
        assert!(
            !l.set_apic_base(base | EN | (1 << 40), LIMITS),
            "above the physical-address width"
        );
        assert_eq!(l.apic_base, base | EN, "refused writes change nothing");
        assert!(l.set_apic_base(0xfed4_0000 | EN | APIC_BASE_BSP, LIMITS));
        assert_eq!(l.mmio_base(), Some(0xfed4_0000), "relocated page");
        assert_eq!(l.apic_base & APIC_BASE_BSP, 0, "BSP bit is read-only");
    }

    #[test]
    fn disable_resets_the_apic_and_silences_the_page() {
        let mut l = enabled();
        write(&mut l, reg::ID, 7 << 24, 0);
        write(&mut l, reg::TPR, 0x30, 0);
        l.deliver(0x40, false);
        assert_eq!(l.mmio_base(), Some(APIC_DEFAULT_BASE));
        assert!(l.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_BSP, LIMITS));
        assert_eq!(l.mmio_base(), None, "the page does not answer");
        assert!(!l.has_interrupt());
        l.accept(&ApicMessage {
            vector: 2,
            mode: DeliveryMode::Nmi,
            dest: Destination::Physical(0),
            level_triggered: false,
        });
        assert!(!l.has_nmi(), "a disabled APIC takes no NMI");
        assert!(l.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_ENABLE, LIMITS));
        assert_eq!(
            (l.id, l.tpr, l.svr, l.irr),
            (0, 0, 0xff, Bits256::default()),
            "re-enabled in the reset state, with the initial ID"
        );
        assert_eq!(l.mmio_base(), Some(APIC_DEFAULT_BASE));
    }

    #[test]
    fn x2apic_id_ldr_and_register_access_rules() {
        let mut l = Lapic::new(0x23, false);
        assert_eq!(l.msr_read(0x802, 0), None, "MSRs #GP in xAPIC mode");
        assert_eq!(l.msr_write(0x808, 0, 0), None);
        write(&mut l, reg::ID, 0x05 << 24, 0);
        assert!(l.set_apic_base(l.apic_base | APIC_BASE_X2APIC, LIMITS));
        assert_eq!(l.mmio_base(), None, "no MMIO in x2APIC mode");
        assert_eq!(
            l.msr_read(0x802, 0),
            Some(0x23),
            "x2APIC ID is the initial ID"
        );
        assert_eq!(l.msr_read(0x80d, 0), Some(0x0002_0008), "cluster 2, bit 3");
        assert_eq!(l.msr_read(0x803, 0), Some(u64::from(APIC_VERSION)));
        for ro in [0x802, 0x803, 0x80a, 0x80d, 0x810, 0x818, 0x820, 0x839] {
            assert_eq!(l.msr_write(ro, 0, 0), None, "read-only {ro:#x}");
        }
        for wo in [0x80b, 0x83f] {
            assert_eq!(l.msr_read(wo, 0), None, "write-only {wo:#x}");
        }
        // 0x82f: LVT CMCI, absent with five LVT entries.
        for absent in [0x809, 0x80c, 0x80e, 0x82f, 0x831, 0x8ff] {
            assert_eq!(l.msr_read(absent, 0), None, "reserved {absent:#x}");
            assert_eq!(l.msr_write(absent, 0, 0), None, "reserved {absent:#x}");
        }
        assert_eq!(l.msr_write(0x808, 1 << 32, 0), None, "bits 63:32 reserved");
        assert_eq!(l.msr_write(0x80b, 1, 0), None, "EOI takes only 0");
        assert_eq!(l.msr_write(0x828, 1, 0), None, "ESR takes only 0");
        for reserved in [0x100, 0xff00, 0xff00_0000] {
            assert_eq!(l.msr_write(0x83f, reserved, 0), None, "self-IPI bits 31:8");
        }
        assert_eq!(l.msr_write(0x808, 0x50, 0), Some(LapicEffect::None));
        assert_eq!((l.tpr, l.msr_read(0x808, 0)), (0x50, Some(0x50)));
        // INIT keeps the mode and the derived logical ID.
        l.init_reset();
        assert_eq!(l.mode(), ApicMode::X2Apic);
        assert_eq!(l.msr_read(0x80d, 0), Some(0x0002_0008));
    }

    #[test]
    fn x2apic_icr_is_64_bit_and_self_ipi_delivers() {
        let mut l = x2apic(1);
        let e = l.msr_write(0x830, (0x1_0005_u64 << 32) | 0x0800 | 0x40, 0);
        assert_eq!(
            e,
            Some(LapicEffect::Ipi(ApicMessage {
                vector: 0x40,
                mode: DeliveryMode::Fixed,
                dest: Destination::Logical(0x1_0005),
                level_triggered: false,
            }))
        );
        assert_eq!(l.msr_read(0x830, 0), Some((0x1_0005_u64 << 32) | 0x0840));
        let e = l.msr_write(0x830, (0xffff_ffff_u64 << 32) | 0x41, 0);
        assert!(
            matches!(e, Some(LapicEffect::Ipi(m)) if m.dest == Destination::Physical(Destination::BROADCAST))
        );
        assert_eq!(l.msr_write(0x83f, 0x55, 0), Some(LapicEffect::None));
        assert_eq!(l.acknowledge(), Some(0x55));
        assert_eq!(l.msr_write(0x83f, 0, 0), Some(LapicEffect::None));
        assert_eq!(l.msr_write(0x828, 0, 0), Some(LapicEffect::None));
        assert_eq!(
            l.msr_read(0x828, 0),
            Some(u64::from(ESR_SEND_ILLEGAL_VECTOR)),
            "self IPI with vector 0"
        );
    }

    #[test]
    fn x2apic_addresses_match_by_32_bit_id_and_cluster() {
        let l = x2apic(0x13);
        let a = l.address();
        assert!(a.matches(Destination::Physical(0x13)));
        assert!(!a.matches(Destination::Physical(0x113)));
        assert!(a.matches(Destination::Physical(Destination::BROADCAST)));
        assert!(a.matches(Destination::Logical(0x0001_000c)));
        assert!(
            !a.matches(Destination::Logical(0x0000_0008)),
            "other cluster"
        );
        assert!(a.matches(Destination::Logical(Destination::BROADCAST)));
        assert_eq!(ApicAddress::unpack(a.pack()), a);
        // The IOAPIC's 8-bit logical destination reaches cluster 0 members.
        let a0 = x2apic(2).address();
        assert!(a0.matches(Destination::xapic(0x0d, true)));
        assert!(
            a0.matches(Destination::xapic(0xff, false)),
            "xAPIC broadcast"
        );
    }

    #[test]
    fn nmi_from_icr_and_lint_counts_at_most_two() {
        let mut l = enabled();
        let e = write(&mut l, reg::ICR_LOW, (1 << 18) | 0x400, 0);
        let Some(msg) = (match e {
            LapicEffect::Ipi(m) => Some(m),
            _ => None,
        }) else {
            panic!("NMI IPI expected, got {e:?}");
        };
        assert_eq!(
            (msg.mode, msg.dest),
            (DeliveryMode::Nmi, Destination::SelfOnly)
        );
        for _ in 0..3 {
            l.accept(&msg);
        }
        assert!(l.has_nmi());
        assert!(!l.has_interrupt(), "an NMI is not a maskable interrupt");
        assert!(l.take_nmi() && l.take_nmi());
        assert!(!l.take_nmi(), "three NMIs merge into two");
        // LINT1 in NMI mode; LINT0 masked does nothing.
        write(&mut l, reg::LVT_LINT1, 4 << 8, 0);
        write(&mut l, reg::LVT_LINT0, LVT_MASKED | (7 << 8), 0);
        l.assert_lint(0);
        assert!(!l.has_nmi() && !l.has_interrupt());
        l.assert_lint(1);
        assert!(l.take_nmi());
        write(&mut l, reg::LVT_LINT0, 0x31, 0);
        l.assert_lint(0);
        assert_eq!(l.acknowledge(), Some(0x31), "LINT0 in fixed mode");
    }

    #[test]
    fn timer_mode_switch_keeps_the_count_except_for_tsc_deadline() {
        let mut l = enabled();
        write(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
        write(&mut l, reg::LVT_TIMER, 0xec, 0);
        const MS: u64 = 1_000_000;
        write(&mut l, reg::TIMER_INITIAL, 1_000_000, 0);
        write(&mut l, reg::LVT_TIMER, (1 << 17) | 0xec, 600_000);
        assert_eq!(
            read(&l, reg::TIMER_INITIAL, 600_000),
            1_000_000,
            "initial count kept"
        );
        assert_eq!(
            read(&l, reg::TIMER_CURRENT, 600_000),
            400_000,
            "still counting down"
        );
        assert!(l.poll_timer(MS));
        assert_eq!(l.timer_deadline(), Some(2 * MS), "periodic now: reloads");
        write(&mut l, reg::LVT_TIMER, 0xec, 3 * MS / 2);
        assert!(l.poll_timer(2 * MS));
        assert_eq!(
            read(&l, reg::TIMER_CURRENT, 5 * MS / 2),
            0,
            "one-shot: stops at 0"
        );
        write(&mut l, reg::LVT_TIMER, (1 << 17) | 0xec, 5 * MS / 2);
        assert_eq!(
            read(&l, reg::TIMER_CURRENT, 3 * MS),
            0,
            "expired stays at 0"
        );
        write(&mut l, reg::TIMER_INITIAL, 1000, 3 * MS);
        write(&mut l, reg::LVT_TIMER, (2 << 17) | 0xec, 3 * MS);
        assert_eq!(
            (read(&l, reg::TIMER_INITIAL, 3 * MS), l.timer_deadline()),
            (0, None),
            "TSC-deadline mode disarms"
        );
    }
}
