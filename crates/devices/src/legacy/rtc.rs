//! The MC146818-compatible CMOS RTC at the index/data ports 0x70/0x71 (`arch::layout::RTC_INDEX`).
//!
//! Guests read the wall-clock time from it at boot, and firmware reads the memory size from
//! its CMOS RAM. Time comes from the host's clock plus an offset the guest may change by
//! writing the time registers, so the device keeps no ticking state of its own and a snapshot
//! is just the offset, the control registers and the RAM.
//!
//! What is modelled:
//! - time/date registers 0x00..0x09 and the century byte 0x32 (the FADT's CENTURY field), in
//!   BCD or binary (register B bit 2) and 24- or 12-hour format (register B bit 1; in 12-hour
//!   mode bit 7 of the hour is PM);
//! - register A's update-in-progress bit, set during the last 244 µs before each second
//!   boundary exactly as on hardware, so Linux's `mc146818_avoid_UIP` and readers that wait
//!   for UIP to go high then low both work;
//! - register B's SET bit: while set, the time registers are frozen and writes to them are
//!   collected; clearing SET makes them the new time (Linux's `mc146818_set_time` sequence).
//!   Writes to time registers with SET clear take effect immediately;
//! - register C reads as zero and register D as 0x80 (valid RAM and time);
//! - the rest of the 128 bytes is plain CMOS RAM. Bit 7 of the index (NMI disable) is ignored.
//!
//! Not modelled: the periodic, alarm and update-ended interrupts (the enable bits are stored
//! but IRQ 8 is never raised) and the day-of-week register's independence (it is always
//! derived from the date; writes to it are ignored).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::legacy::bus::BusDevice;
use crate::legacy::sync::lock;

/// Size of the CMOS RAM, including the clock and control registers.
pub const CMOS_SIZE: usize = 128;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Century, where the FADT's CENTURY field points.
pub const CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz periodic rate: the power-on value.
const A_DEFAULT: u8 = 0x26;
/// Divider bits that keep the oscillator running (other values stop or reset the chain).
const A_DIVIDER_MASK: u8 = 0x70;
const A_DIVIDER_RUNNING: u8 = 0x20;

const B_SET: u8 = 0x80;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
/// 24-hour BCD: the power-on value.
const B_DEFAULT: u8 = B_24H;

const D_VRT: u8 = 0x80;

/// How long before the update UIP is set (t_BUC on the MC146818 datasheet).
const UIP_WINDOW_NS: u32 = 244_000;

/// Years beyond this are clamped when converting to seconds.
const MAX_YEAR: i64 = 1_000_000;

/// A broken-down calendar time as the RTC registers hold it. Values the guest wrote may be
/// out of range (month 13, hour 42); conversion to seconds tolerates that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcDateTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl RtcDateTime {
    /// The UTC calendar time of `secs` seconds since the Unix epoch.
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// Seconds since the Unix epoch. Out-of-range fields carry into the next unit (day 31 of
    /// February is in March); a month outside 1..=12 is clamped.
    pub fn to_unix(&self) -> i64 {
        let month = self.month.clamp(1, 12);
        // Far beyond anything registers can express; keeps the arithmetic below in range
        // whatever a restored snapshot holds.
        let year = self.year.clamp(-MAX_YEAR, MAX_YEAR);
        let days = days_from_civil(year, month, 1) + i64::from(self.day) - 1;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Day of the week as the RTC counts it: 1 = Sunday .. 7 = Saturday.
    pub fn weekday(&self) -> u8 {
        let days = self.to_unix().div_euclid(86_400);
        // 1970-01-01 was a Thursday.
        ((days + 4).rem_euclid(7) + 1) as u8
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` days after 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10 % 10) << 4) | (v % 10)
}

/// Tolerates non-BCD bytes (0xff decodes as 165) the way a real chip would mis-count them.
fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

/// Guest-visible RTC state for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    /// The selected register (without the NMI bit).
    pub index: u8,
    /// All 128 bytes; the time registers in it are unused (time is computed) except while
    /// `frozen` is set.
    pub ram: Vec<u8>,
    /// Guest time minus host time, in seconds.
    pub offset_secs: i64,
    /// The time being edited while register B's SET bit is set.
    pub frozen: Option<RtcDateTime>,
}

impl Default for RtcState {
    fn default() -> Self {
        let mut ram = vec![0u8; CMOS_SIZE];
        ram[usize::from(REG_A)] = A_DEFAULT;
        ram[usize::from(REG_B)] = B_DEFAULT;
        ram[usize::from(REG_D)] = D_VRT;
        Self {
            index: 0,
            ram,
            offset_secs: 0,
            frozen: None,
        }
    }
}

/// Errors of the RTC.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("RTC state has {0} bytes of CMOS RAM, expected 128")]
    InvalidRamSize(usize),
    #[error("CMOS offset {0:#x} is outside the 128-byte RAM")]
    InvalidOffset(u8),
}

/// The host clock: time since the Unix epoch.
pub type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

fn host_clock() -> Duration {
    // A host clock before 1970 is a broken host; the guest then sees 1970.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The CMOS RTC. Offset 0 is the index port, offset 1 the data port.
pub struct Rtc {
    state: Mutex<RtcState>,
    clock: Clock,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

impl Rtc {
    /// An RTC showing the host's UTC time.
    pub fn new() -> Self {
        Self::with_clock(Box::new(host_clock))
    }

    /// An RTC reading time from `clock` (tests use a fake one).
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            state: Mutex::new(RtcState::default()),
            clock,
        }
    }

    /// An RTC restored from a snapshot, on the host's clock.
    pub fn from_state(state: RtcState) -> Result<Self, RtcError> {
        let rtc = Self::new();
        rtc.restore(state)?;
        Ok(rtc)
    }

    /// Replace the device state with a snapshot's.
    pub fn restore(&self, mut state: RtcState) -> Result<(), RtcError> {
        if state.ram.len() != CMOS_SIZE {
            return Err(RtcError::InvalidRamSize(state.ram.len()));
        }
        state.index &= 0x7f;
        *lock(&self.state) = state;
        Ok(())
    }

    pub fn state(&self) -> RtcState {
        lock(&self.state).clone()
    }

    /// Set a byte of CMOS RAM directly (the VMM's firmware configuration: CPU count at 0x5f
    /// for SeaBIOS, equipment bytes, ...).
    pub fn set_ram(&self, offset: u8, value: u8) -> Result<(), RtcError> {
        let mut s = lock(&self.state);
        let byte = s
            .ram
            .get_mut(usize::from(offset))
            .ok_or(RtcError::InvalidOffset(offset))?;
        *byte = value;
        Ok(())
    }

    /// Read a byte of CMOS RAM as stored (time registers are not computed here).
    pub fn ram(&self, offset: u8) -> Option<u8> {
        lock(&self.state).ram.get(usize::from(offset)).copied()
    }

    /// Fill the memory-size bytes firmware reads, from the RAM below and above 4 GiB in bytes:
    /// 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31 memory above 1 MiB in KiB
    /// (capped at 0xffff), 0x34/0x35 memory above 16 MiB in 64 KiB units (capped), and
    /// 0x5b..0x5d memory above 4 GiB in 64 KiB units (24 bits, capped).
    pub fn set_memory_size(&self, below_4g: u64, above_4g: u64) {
        const MIB: u64 = 1 << 20;
        let ext_kib = (below_4g.saturating_sub(MIB) / 1024).min(0xffff) as u16;
        let above_16m = (below_4g.saturating_sub(16 * MIB) / 0x10000).min(0xffff) as u16;
        let high = (above_4g / 0x10000).min(0xff_ffff) as u32;
        let mut s = lock(&self.state);
        let ram = &mut s.ram;
        let mut put16 = |at: usize, v: u16| ram[at..at + 2].copy_from_slice(&v.to_le_bytes());
        put16(0x15, 640);
        put16(0x17, ext_kib);
        put16(0x30, ext_kib);
        put16(0x34, above_16m);
        ram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
    }

    /// Host time now: whole seconds and the nanoseconds into the current second.
    fn now(&self) -> (i64, u32) {
        let d = (self.clock)();
        (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        )
    }

    fn current(&self, s: &RtcState) -> RtcDateTime {
        match s.frozen {
            Some(dt) => dt,
            None => RtcDateTime::from_unix(self.now().0.saturating_add(s.offset_secs)),
        }
    }

    fn read_register(&self, s: &RtcState, index: u8) -> u8 {
        let b = s.ram[usize::from(REG_B)];
        let encode = |v: u8| if b & B_BINARY != 0 { v } else { to_bcd(v) };
        let time_reg = matches!(
            index,
            SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY
        );
        if !time_reg {
            return match index {
                REG_A => {
                    let a = s.ram[usize::from(REG_A)] & !A_UIP;
                    let running = a & A_DIVIDER_MASK == A_DIVIDER_RUNNING && s.frozen.is_none();
                    let ns = self.now().1;
                    if running && ns >= 1_000_000_000 - UIP_WINDOW_NS {
                        a | A_UIP
                    } else {
                        a
                    }
                }
                // No interrupt flags are ever raised, so there is nothing to read-and-clear.
                REG_C => 0,
                REG_D => D_VRT,
                _ => s.ram.get(usize::from(index)).copied().unwrap_or(0xff),
            };
        }
        let dt = self.current(s);
        match index {
            SECONDS => encode(dt.second),
            MINUTES => encode(dt.minute),
            HOURS if b & B_24H != 0 => encode(dt.hour),
            HOURS => {
                let h12 = match dt.hour % 12 {
                    0 => 12,
                    h => h,
                };
                encode(h12) | if dt.hour >= 12 { 0x80 } else { 0 }
            }
            WEEKDAY => encode(dt.weekday()),
            DAY => encode(dt.day),
            MONTH => encode(dt.month),
            YEAR => encode(dt.year.rem_euclid(100) as u8),
            _ => encode(dt.year.div_euclid(100).clamp(0, 99) as u8),
        }
    }

    fn write_register(&self, s: &mut RtcState, index: u8, value: u8) {
        let b = s.ram[usize::from(REG_B)];
        let decode = |v: u8| if b & B_BINARY != 0 { v } else { from_bcd(v) };
        let mut dt = self.current(s);
        match index {
            SECONDS => dt.second = decode(value),
            MINUTES => dt.minute = decode(value),
            HOURS if b & B_24H != 0 => dt.hour = decode(value),
            HOURS => {
                let h12 = decode(value & 0x7f) % 12;
                dt.hour = h12 + if value & 0x80 != 0 { 12 } else { 0 };
            }
            WEEKDAY => return,
            DAY => dt.day = decode(value),
            MONTH => dt.month = decode(value),
            YEAR => dt.year = dt.year.div_euclid(100) * 100 + i64::from(decode(value)),
            CENTURY => dt.year = i64::from(decode(value)) * 100 + dt.year.rem_euclid(100),
            REG_A => {
                s.ram[usize::from(REG_A)] = value & !A_UIP;
                return;
            }
            REG_B => {
                let (was_set, set) = (b & B_SET != 0, value & B_SET != 0);
                // Setting SET also clears UIE on the MC146818.
                s.ram[usize::from(REG_B)] = if set { value & !B_UIE } else { value };
                if set && !was_set {
                    s.frozen = Some(dt);
                } else if !set {
                    if let Some(edited) = s.frozen.take() {
                        self.commit(s, edited);
                    }
                }
                return;
            }
            REG_C | REG_D => return,
            _ => {
                if let Some(byte) = s.ram.get_mut(usize::from(index)) {
                    *byte = value;
                }
                return;
            }
        }
        if s.frozen.is_some() {
            s.frozen = Some(dt);
        } else {
            self.commit(s, dt);
        }
    }

    /// Make `dt` the guest's current time.
    fn commit(&self, s: &mut RtcState, dt: RtcDateTime) {
        s.offset_secs = dt.to_unix().saturating_sub(self.now().0);
    }
}

impl BusDevice for Rtc {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let s = lock(&self.state);
        // A wide access covers consecutive ports: index (write-only, reads 0xff), then data.
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.saturating_add(i as u64) {
                1 => self.read_register(&s, s.index),
                _ => 0xff,
            };
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut s = lock(&self.state);
        for (i, &v) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                // Bit 7 is the NMI mask on a PC; NMIs are not masked here.
                0 => s.index = v & 0x7f,
                1 => {
                    let index = s.index;
                    self.write_register(&mut s, index, v);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// 2026-11-24 16:13:40 UTC, a Tuesday.
    const T0: u64 = 1_795_536_820;

    /// An RTC on a fake clock the test moves (in nanoseconds since the epoch).
    fn rtc_at(ns: u64) -> (Rtc, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(ns));
        let n = now.clone();
        let rtc = Rtc::with_clock(Box::new(move || {
            Duration::from_nanos(n.load(Ordering::SeqCst))
        }));
        (rtc, now)
    }

    fn read(rtc: &Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut d = [0u8];
        rtc.read(1, &mut d);
        d[0]
    }

    fn write(rtc: &Rtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    fn clock_regs(rtc: &Rtc) -> [u8; 8] {
        [SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY].map(|i| read(rtc, i))
    }

    #[test]
    fn reads_host_time_in_bcd_24h() {
        let (rtc, _) = rtc_at(T0 * 1_000_000_000);
        assert_eq!(
            clock_regs(&rtc),
            [0x40, 0x13, 0x16, 0x03, 0x24, 0x11, 0x26, 0x20]
        );
        assert_eq!(read(&rtc, REG_A), 0x26);
        assert_eq!(read(&rtc, REG_B), 0x02);
        assert_eq!(read(&rtc, REG_C), 0);
        assert_eq!(read(&rtc, REG_D), 0x80);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let (rtc, _) = rtc_at(T0 * 1_000_000_000);
        write(&rtc, REG_B, B_BINARY | B_24H);
        assert_eq!(clock_regs(&rtc), [40, 13, 16, 3, 24, 11, 26, 20]);
        write(&rtc, REG_B, B_BINARY);
        assert_eq!(read(&rtc, HOURS), 0x80 | 4, "4 PM");
        write(&rtc, REG_B, 0);
        assert_eq!(read(&rtc, HOURS), 0x84, "4 PM in BCD");

        // Midnight and noon in 12-hour mode.
        let (rtc, _) = rtc_at((T0 - 16 * 3600) * 1_000_000_000);
        write(&rtc, REG_B, 0);
        assert_eq!(read(&rtc, HOURS), 0x12, "12 AM");
        let (rtc, _) = rtc_at((T0 - 4 * 3600) * 1_000_000_000);
        write(&rtc, REG_B, 0);
        assert_eq!(read(&rtc, HOURS), 0x92, "12 PM");
    }

    #[test]
    fn uip_is_set_only_just_before_the_second_ends() {
        let (rtc, now) = rtc_at(T0 * 1_000_000_000 + 500_000_000);
        assert_eq!(read(&rtc, REG_A) & A_UIP, 0);
        now.store(T0 * 1_000_000_000 + 999_900_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, REG_A), A_UIP | A_DEFAULT);
        assert_eq!(
            read(&rtc, SECONDS),
            0x40,
            "registers still show the old second"
        );
        now.store((T0 + 1) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, REG_A) & A_UIP, 0);
        assert_eq!(read(&rtc, SECONDS), 0x41);
        // UIP is read-only.
        write(&rtc, REG_A, 0xa6);
        assert_eq!(read(&rtc, REG_A), 0x26);
    }

    #[test]
    fn guest_sets_time_with_set_bit_and_it_keeps_ticking() {
        let (rtc, now) = rtc_at(T0 * 1_000_000_000);
        // Linux's mc146818_set_time: SET, write BCD fields, clear SET.
        write(&rtc, REG_B, B_SET | B_24H);
        for (reg, v) in [
            (SECONDS, 0x59),
            (MINUTES, 0x59),
            (HOURS, 0x23),
            (DAY, 0x28),
            (MONTH, 0x02),
            (YEAR, 0x00),
            (CENTURY, 0x20),
        ] {
            write(&rtc, reg, v);
        }
        now.store((T0 + 5) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, SECONDS), 0x59, "frozen while SET");
        assert_eq!(read(&rtc, REG_A) & A_UIP, 0);
        write(&rtc, REG_B, B_24H);

        now.store((T0 + 6) * 1_000_000_000, Ordering::SeqCst);
        // 2000-02-28 23:59:59 plus one second: a leap day.
        assert_eq!(
            clock_regs(&rtc),
            [0x00, 0x00, 0x00, 0x03, 0x29, 0x02, 0x00, 0x20]
        );
        now.store((T0 + 6 + 86_400) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, DAY), 0x01);
        assert_eq!(read(&rtc, MONTH), 0x03);
        assert_eq!(rtc.state().offset_secs, 951_782_399 - (T0 as i64 + 5));
    }

    #[test]
    fn direct_write_without_set_changes_one_field() {
        let (rtc, _) = rtc_at(T0 * 1_000_000_000);
        write(&rtc, YEAR, 0x30);
        assert_eq!(
            clock_regs(&rtc),
            [0x40, 0x13, 0x16, 0x01, 0x24, 0x11, 0x30, 0x20]
        );
        // Garbage does not panic.
        for reg in [SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY] {
            write(&rtc, reg, 0xff);
        }
        clock_regs(&rtc);
    }

    #[test]
    fn cmos_ram_memory_size_and_nmi_bit() {
        let (rtc, _) = rtc_at(T0 * 1_000_000_000);
        write(&rtc, 0x80 | 0x40, 0xab);
        assert_eq!(read(&rtc, 0x40), 0xab, "NMI bit in the index is ignored");
        assert_eq!(rtc.ram(0x40), Some(0xab));
        rtc.set_memory_size(3 << 30, 5 << 30);
        assert_eq!([read(&rtc, 0x15), read(&rtc, 0x16)], [0x80, 0x02]);
        assert_eq!([read(&rtc, 0x30), read(&rtc, 0x31)], [0xff, 0xff]);
        // (3 GiB - 16 MiB) / 64 KiB = 0xbf00.
        assert_eq!([read(&rtc, 0x34), read(&rtc, 0x35)], [0x00, 0xbf]);
        // 5 GiB / 64 KiB = 0x014000.
        assert_eq!(
            [read(&rtc, 0x5b), read(&rtc, 0x5c), read(&rtc, 0x5d)],
            [0x00, 0x40, 0x01]
        );
        rtc.set_ram(0x5f, 3).unwrap();
        assert_eq!(read(&rtc, 0x5f), 3);
        assert!(matches!(
            rtc.set_ram(0x80, 0),
            Err(RtcError::InvalidOffset(0x80))
        ));
        let mut d = [0u8; 2];
        rtc.read(0, &mut d);
        assert_eq!(d[0], 0xff, "index port is write-only");
        assert_eq!(d[1], 3, "second byte of a wide read is the data port");
    }

    #[test]
    fn state_round_trips_and_is_validated() {
        let (rtc, now) = rtc_at(T0 * 1_000_000_000);
        write(&rtc, YEAR, 0x27);
        write(&rtc, 0x50, 0x77);
        rtc.write(0, &[0x09]);
        let json = serde_json::to_string(&rtc.state()).unwrap();
        let state: RtcState = serde_json::from_str(&json).unwrap();

        let n = now.clone();
        let restored = Rtc::with_clock(Box::new(move || {
            Duration::from_nanos(n.load(Ordering::SeqCst))
        }));
        restored.restore(state.clone()).unwrap();
        let mut d = [0u8];
        restored.read(1, &mut d);
        assert_eq!(d[0], 0x27, "index and offset restored");
        assert_eq!(read(&restored, 0x50), 0x77);

        let bad = RtcState {
            ram: vec![0; 64],
            ..state
        };
        assert!(matches!(
            Rtc::from_state(bad),
            Err(RtcError::InvalidRamSize(64))
        ));
    }

    #[test]
    fn calendar_conversion_round_trips() {
        for secs in [
            0i64,
            951_868_799,
            951_868_800,
            T0 as i64,
            4_102_444_800,
            -86_400,
        ] {
            assert_eq!(RtcDateTime::from_unix(secs).to_unix(), secs);
        }
        let far = RtcDateTime::from_unix(i64::MAX);
        assert!(far.to_unix() < i64::MAX, "huge times do not overflow");
        let dt = RtcDateTime::from_unix(4_102_444_800);
        assert_eq!((dt.year, dt.month, dt.day), (2100, 1, 1));
        assert_eq!(
            RtcDateTime::from_unix(0).weekday(),
            5,
            "1970-01-01 was a Thursday"
        );
        let mut step = 0i64;
        while step < 200 * 365 * 86_400 {
            let dt = RtcDateTime::from_unix(step);
            assert_eq!(dt.to_unix(), step);
            step += 86_400 * 7 + 3_601;
        }
    }
}
