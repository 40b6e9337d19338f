//! ACPI fixed-hardware power management registers: the PM1a event and control blocks and the
//! PM timer, as the FADT describes them (ports in `arch::layout`: `ACPI_PM1A_EVT` 0x600,
//! `ACPI_PM1A_CNT` 0x604, `ACPI_PM_TMR` 0x608).
//!
//! This is what lets an ACPI guest power itself off (`poweroff` ends in a write of SLP_TYP=S5
//! with SLP_EN to PM1a control), lets the VMM press a virtual power button, and gives Linux
//! the PM timer it calibrates its TSC against. There is no SMM and no firmware handshake: the
//! FADT's SMI_CMD is zero, so SCI_EN reads as always set.
//!
//! Each register block is its own [`BusDevice`]; the VMM places them at the ports the FADT
//! names. Only PM1a exists (no PM1b, no GPE blocks yet).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::interrupt::InterruptSink;
use crate::legacy::bus::BusDevice;
use crate::legacy::control::{ControlEvent, VmControl};
use crate::legacy::sync::lock;

/// PM1 status/enable bit: the PM timer's top bit toggled (not generated: Linux never enables it).
pub const PM1_TMR: u16 = 1 << 0;
/// PM1 status/enable bit: the fixed-feature power button was pressed.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1 status/enable bit: the global lock was released (kept, never generated).
pub const PM1_GBL: u16 = 1 << 5;
/// PM1 status/enable bit: the fixed-feature sleep button (kept, never generated).
pub const PM1_SLPBTN: u16 = 1 << 9;
/// PM1 status/enable bit: the RTC alarm (kept, never generated).
pub const PM1_RTC: u16 = 1 << 10;
/// PM1 status bit: the system woke (set on resume; never set here).
pub const PM1_WAK_STS: u16 = 1 << 15;

/// PM1 control: SCI_EN, ACPI mode active.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1 control: SLP_TYP field (bits 10..12).
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
pub const PM1_CNT_SLP_TYP_MASK: u16 = 0x7 << PM1_CNT_SLP_TYP_SHIFT;
/// PM1 control: SLP_EN, write-only, enters the sleep state in SLP_TYP.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// Status bits this model can set; writes of 1 clear them.
const PM1_STS_MASK: u16 = PM1_TMR | PM1_PWRBTN | PM1_WAK_STS;
/// Enable bits this model keeps. ACPICA reads back every enable bit it sets and reports
/// an error when it did not stick, so the bits of events we never raise are kept too.
const PM1_EN_MASK: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_SLPBTN | PM1_RTC;
/// Control bits that read back what was written (BM_RLD and SLP_TYP).
const PM1_CNT_STORED: u16 = (1 << 1) | PM1_CNT_SLP_TYP_MASK;

/// Frequency of the ACPI PM timer, in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// Read `reg` (little-endian, `reg_len` bytes) at `offset` into `data`; bytes past the end of
/// the register read as zero.
fn read_le(reg: u64, reg_len: u64, offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        let at = offset.saturating_add(i as u64);
        *b = if at < reg_len {
            (reg >> (8 * at)) as u8
        } else {
            0
        };
    }
}

/// Merge the bytes of a write at `offset` into `reg` (`reg_len` bytes); returns the new value
/// and a mask of the bits written.
fn merge_le(reg: u64, reg_len: u64, offset: u64, data: &[u8]) -> (u64, u64) {
    let (mut value, mut written) = (reg, 0u64);
    for (i, &b) in data.iter().enumerate() {
        let at = offset.saturating_add(i as u64);
        if at < reg_len {
            let shift = 8 * at;
            value = (value & !(0xff << shift)) | (u64::from(b) << shift);
            written |= 0xff << shift;
        }
    }
    (value, written)
}

// ---------------------------------------------------------------------------------------------

/// Guest-visible state of the PM1a event block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pm1EventState {
    pub status: u16,
    pub enable: u16,
}

/// PM1a event block: PM1_STS (2 bytes, write 1 to clear) then PM1_EN (2 bytes). Raises the
/// SCI, a level-triggered interrupt, while any enabled status bit is set.
pub struct Pm1Event {
    state: Mutex<(Pm1EventState, bool)>,
    sink: Arc<dyn InterruptSink>,
    sci_gsi: u32,
}

impl Pm1Event {
    /// `sci_gsi` is the SCI's interrupt (`arch::layout::ACPI_SCI_IRQ`, 9; the MADT must
    /// describe it as level-triggered, active high).
    pub fn new(sink: Arc<dyn InterruptSink>, sci_gsi: u32) -> Self {
        Self::from_state(Pm1EventState::default(), sink, sci_gsi)
    }

    pub fn from_state(state: Pm1EventState, sink: Arc<dyn InterruptSink>, sci_gsi: u32) -> Self {
        let dev = Self {
            state: Mutex::new((Pm1EventState::default(), false)),
            sink,
            sci_gsi,
        };
        dev.update(|s| {
            s.status = state.status & PM1_STS_MASK;
            s.enable = state.enable & PM1_EN_MASK;
        });
        dev
    }

    pub fn state(&self) -> Pm1EventState {
        lock(&self.state).0
    }

    /// The VMM pressing the power button: the guest sees a fixed-feature power button event
    /// (and, if it enabled it, an SCI). A guest that ignores it keeps running.
    pub fn press_power_button(&self) {
        self.update(|s| s.status |= PM1_PWRBTN);
    }

    /// Apply `f` and move the SCI line if its level changed.
    fn update(&self, f: impl FnOnce(&mut Pm1EventState)) {
        let mut guard = lock(&self.state);
        let (state, sci) = &mut *guard;
        f(state);
        let level = state.status & state.enable != 0;
        if level != *sci {
            *sci = level;
            // Called under the lock so that two updates cannot deliver levels out of order.
            self.sink.set_level(self.sci_gsi, level);
        }
    }
}

impl BusDevice for Pm1Event {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let s = self.state();
        let reg = u64::from(s.status) | (u64::from(s.enable) << 16);
        read_le(reg, 4, offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (value, written) = merge_le(0, 4, offset, data);
        let clear = (value & written & 0xffff) as u16;
        let new_enable = (value >> 16) as u16;
        let enable_written = (written >> 16) as u16;
        self.update(|s| {
            s.status &= !clear;
            s.enable = (s.enable & !enable_written) | (new_enable & enable_written & PM1_EN_MASK);
        });
    }
}

// ---------------------------------------------------------------------------------------------

/// Guest-visible state of the PM1a control block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pm1ControlState {
    pub value: u16,
}

/// PM1a control block (2 bytes). Writing SLP_EN with SLP_TYP equal to the S5 value of the
/// DSDT's `\_S5` package posts [`ControlEvent::PowerOff`]. Other sleep states are not
/// supported (the DSDT must not offer them); such a write is ignored and the guest runs on.
pub struct Pm1Control {
    value: AtomicU16,
    s5_slp_typ: u8,
    control: Arc<VmControl>,
}

impl Pm1Control {
    /// `s5_slp_typ` is the SLP_TYP value of `\_S5` (`arch::layout::ACPI_S5_SLP_TYP`).
    pub fn new(s5_slp_typ: u8, control: Arc<VmControl>) -> Self {
        Self::from_state(Pm1ControlState::default(), s5_slp_typ, control)
    }

    pub fn from_state(state: Pm1ControlState, s5_slp_typ: u8, control: Arc<VmControl>) -> Self {
        Self {
            value: AtomicU16::new(state.value & PM1_CNT_STORED),
            s5_slp_typ,
            control,
        }
    }

    pub fn state(&self) -> Pm1ControlState {
        Pm1ControlState {
            value: self.value.load(Ordering::Relaxed),
        }
    }
}

impl BusDevice for Pm1Control {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let v = self.value.load(Ordering::Relaxed) | PM1_CNT_SCI_EN;
        read_le(u64::from(v), 2, offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let old = self.value.load(Ordering::Relaxed);
        let (value, written) = merge_le(u64::from(old), 2, offset, data);
        let value = value as u16;
        self.value.store(value & PM1_CNT_STORED, Ordering::Relaxed);
        if written as u16 & value & PM1_CNT_SLP_EN != 0 {
            let slp_typ = ((value & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT) as u8;
            if slp_typ == self.s5_slp_typ {
                self.control.request(ControlEvent::PowerOff);
            } else {
                tracing::debug!(slp_typ, "guest asked for an unsupported ACPI sleep state");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Guest-visible state of the PM timer: its count when the snapshot was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmTimerState {
    pub count: u32,
}

/// The ACPI PM timer: a free-running 3.579545 MHz counter, read-only, derived from the host's
/// monotonic clock. It is **32 bits wide**: the FADT must set TMR_VAL_EXT (flags bit 8).
pub struct PmTimer {
    start: Instant,
    /// The count at `start`.
    base: u32,
}

impl Default for PmTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl PmTimer {
    pub fn new() -> Self {
        Self::from_state(PmTimerState::default())
    }

    /// A timer that continues counting from a snapshot's value.
    pub fn from_state(state: PmTimerState) -> Self {
        Self {
            start: Instant::now(),
            base: state.count,
        }
    }

    pub fn state(&self) -> PmTimerState {
        PmTimerState {
            count: self.count(),
        }
    }

    /// The current count.
    pub fn count(&self) -> u32 {
        let ns = self.start.elapsed().as_nanos();
        let ticks = ns * u128::from(PM_TIMER_HZ) / 1_000_000_000;
        // The counter wraps at 32 bits, so only the low bits of the tick count matter.
        self.base.wrapping_add(ticks as u32)
    }
}

impl BusDevice for PmTimer {
    fn read(&self, offset: u64, data: &mut [u8]) {
        read_le(u64::from(self.count()), 4, offset, data);
    }

    fn write(&self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl InterruptSink for Lines {
        fn set_level(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    fn read16(dev: &dyn BusDevice, offset: u64) -> u16 {
        let mut d = [0u8; 2];
        dev.read(offset, &mut d);
        u16::from_le_bytes(d)
    }

    #[test]
    fn enable_bits_acpica_sets_read_back() {
        let sink: Arc<dyn InterruptSink> = Arc::new(crate::interrupt::NullInterruptSink);
        let evt = Pm1Event::new(sink, 9);
        for bit in [PM1_GBL, PM1_RTC, PM1_PWRBTN, PM1_SLPBTN] {
            evt.write(2, &bit.to_le_bytes());
            assert_eq!(read16(&evt, 2), bit, "enable bit {bit:#x} must stick");
        }
        evt.write(2, &0x8000u16.to_le_bytes());
        assert_eq!(read16(&evt, 2), 0, "reserved bits read as zero");
    }

    #[test]
    fn poweroff_through_s5() {
        let control = Arc::new(VmControl::new().unwrap());
        let cnt = Pm1Control::new(5, control.clone());
        assert_eq!(
            read16(&cnt, 0) & PM1_CNT_SCI_EN,
            PM1_CNT_SCI_EN,
            "ACPI mode"
        );

        // SLP_TYP alone does nothing; S3 with SLP_EN does nothing.
        cnt.write(0, &(5u16 << 10).to_le_bytes());
        assert_eq!(control.requested(), None);
        assert_eq!(read16(&cnt, 0), (5 << 10) | 1);
        cnt.write(0, &((1u16 << 10) | PM1_CNT_SLP_EN).to_le_bytes());
        assert_eq!(control.requested(), None);

        // Linux's acpi_enter_sleep_state: SLP_TYP=S5 | SLP_EN in one 16-bit write.
        cnt.write(0, &((5u16 << 10) | PM1_CNT_SLP_EN).to_le_bytes());
        assert_eq!(control.take(), Some(ControlEvent::PowerOff));
        assert_eq!(read16(&cnt, 0) & PM1_CNT_SLP_EN, 0, "SLP_EN reads as zero");
    }

    #[test]
    fn poweroff_through_byte_writes() {
        let control = Arc::new(VmControl::new().unwrap());
        let cnt = Pm1Control::new(5, control.clone());
        let v = ((5u16 << 10) | PM1_CNT_SLP_EN).to_le_bytes();
        cnt.write(0, &v[..1]);
        assert_eq!(control.requested(), None);
        cnt.write(1, &v[1..]);
        assert_eq!(control.take(), Some(ControlEvent::PowerOff));
    }

    #[test]
    fn power_button_raises_sci_when_enabled_and_clears_on_ack() {
        let lines = Arc::new(Lines::default());
        let evt = Pm1Event::new(lines.clone(), 9);
        evt.press_power_button();
        assert_eq!(read16(&evt, 0), PM1_PWRBTN);
        assert!(lines.0.lock().unwrap().is_empty(), "not enabled: no SCI");

        evt.write(2, &PM1_PWRBTN.to_le_bytes());
        assert_eq!(read16(&evt, 2), PM1_PWRBTN);
        assert_eq!(*lines.0.lock().unwrap(), vec![(9, true)]);

        // Writing 0 to the status changes nothing; writing the bit clears it.
        evt.write(0, &[0, 0]);
        assert_eq!(read16(&evt, 0), PM1_PWRBTN);
        evt.write(0, &PM1_PWRBTN.to_le_bytes());
        assert_eq!(read16(&evt, 0), 0);
        assert_eq!(*lines.0.lock().unwrap(), vec![(9, true), (9, false)]);

        // A 4-byte read sees both registers.
        let mut d = [0u8; 4];
        evt.read(0, &mut d);
        assert_eq!(d, [0, 0, 0, 1]);
        assert_eq!(
            evt.state(),
            Pm1EventState {
                status: 0,
                enable: PM1_PWRBTN
            }
        );
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz() {
        let t = PmTimer::new();
        let mut d = [0u8; 4];
        t.read(0, &mut d);
        let a = u32::from_le_bytes(d);
        std::thread::sleep(Duration::from_millis(20));
        t.read(0, &mut d);
        let b = u32::from_le_bytes(d);
        let ticks = b.wrapping_sub(a);
        // 20 ms is 71591 ticks; allow for a slow, shared machine.
        assert!((71_000..3_579_545).contains(&ticks), "{ticks}");
    }

    #[test]
    fn pm_timer_continues_from_snapshot_and_wraps() {
        let t = PmTimer::from_state(PmTimerState {
            count: u32::MAX - 10,
        });
        std::thread::sleep(Duration::from_millis(1));
        let c = t.count();
        assert!(c < 1_000_000, "wrapped past 2^32: {c}");
        let json = serde_json::to_string(&t.state()).unwrap();
        let back: PmTimerState = serde_json::from_str(&json).unwrap();
        assert!(PmTimer::from_state(back).count() >= c);
    }
}
