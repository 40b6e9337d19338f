//! The 8254 programmable interval timer (ports 0x40..0x43) and the channel-2 bits of
//! port 0x61.
//!
//! Linux uses channel 0 as its first clock event device (mode 2 periodic, or mode 4 for
//! one-shot) and calibrates the TSC against channel 2 (mode 0, gate from port 0x61 bit 0,
//! output read back on port 0x61 bit 5, or the counter itself in `quick_pit_calibrate`).
//! Calibration only works if the counter is exact in wall-clock time, so the model is
//! *passive*: every value is computed from the clock reading at the moment it is read
//! (1.193182 MHz since the count was loaded), nothing ticks in the background.
//!
//! Channel 0's output drives ISA IRQ 0. Because nobody samples the output continuously,
//! [`Pit::poll`] reports the rising edges that happened since the previous poll, coalesced
//! into one: the caller pulses IRQ 0 once. [`Pit::next_irq_ns`] says when the next one is
//! due, so a halted vCPU knows how long it may sleep.
//!
//! The struct is its own snapshot state (plain serde); times are clock nanoseconds.

use serde::{Deserialize, Serialize};

use super::clock::{muldiv, muldiv_ceil, MIN_PERIODIC_NS, NANOS_PER_SEC};

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// First PIT port (channel 0); 0x43 is the mode/command register.
pub const PIT_PORT_BASE: u16 = 0x40;
/// NMI status and control / speaker port.
pub const PORT_61: u16 = 0x61;
/// Port 0x61 bit 4 toggles every refresh cycle (15.085 µs).
const REFRESH_PERIOD_NS: u64 = 15_085;

/// Access mode of a channel's data port (and the byte-order state machines).
const RW_LSB: u8 = 1;
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

/// One counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannel {
    /// The reload value in PIT ticks, 1..=0x10000 (a written 0 means 0x10000).
    pub count: u32,
    /// The counter value latched by a latch command.
    pub latched_count: u16,
    /// Which bytes of `latched_count` are still to be read (0 = not latched).
    pub count_latched: u8,
    pub status_latched: bool,
    pub status: u8,
    pub read_state: u8,
    pub write_state: u8,
    /// Low byte of a word write in progress.
    pub write_latch: u8,
    /// Access mode from the control word (1 LSB, 2 MSB, 3 LSB then MSB).
    pub rw_mode: u8,
    /// Counting mode 0..5.
    pub mode: u8,
    pub bcd: bool,
    pub gate: bool,
    /// Clock reading (ns) at which counting started; `None` while waiting for a count (after
    /// a control word) or for a gate trigger (modes 1 and 5).
    pub load_ns: Option<u64>,
    /// Ticks counted before a pause of the gate (modes 0 and 4 only count while it is high).
    pub paused_ticks: Option<u64>,
    /// The output level while not counting (after a control word: low in mode 0).
    pub idle_out: bool,
    /// Null count: a count was written but not yet loaded. Loading is immediate here.
    pub null_count: bool,
}

impl PitChannel {
    fn new(gate: bool) -> Self {
        PitChannel {
            count: 0x10000,
            latched_count: 0,
            count_latched: 0,
            status_latched: false,
            status: 0,
            read_state: RW_LSB,
            write_state: RW_LSB,
            write_latch: 0,
            rw_mode: RW_LSB,
            mode: 0,
            bcd: false,
            gate,
            load_ns: None,
            paused_ticks: None,
            idle_out: false,
            null_count: true,
        }
    }

    /// Ticks elapsed since counting started, or `None` when not counting.
    fn elapsed(&self, now: u64) -> Option<u64> {
        if let Some(paused) = self.paused_ticks {
            return Some(paused);
        }
        let load = self.load_ns?;
        Some(muldiv(now.saturating_sub(load), PIT_HZ, NANOS_PER_SEC))
    }

    fn count(&self) -> u64 {
        u64::from(self.count.max(1))
    }

    /// The output pin at clock reading `now`.
    pub fn out(&self, now: u64) -> bool {
        let Some(d) = self.elapsed(now) else {
            return self.idle_out;
        };
        let n = self.count();
        match self.mode {
            0 | 1 => d >= n,
            2 => n == 1 || d % n != n - 1,
            3 => d % n < n.div_ceil(2),
            _ => d != n, // 4, 5: a one-tick low strobe at terminal count
        }
    }

    /// The current counter value at clock reading `now` (binary).
    fn counter(&self, now: u64) -> u16 {
        let Some(d) = self.elapsed(now) else {
            return self.count as u16; // 0x10000 reads as 0
        };
        let n = self.count();
        let value = match self.mode {
            2 => n - d % n,
            3 => n - (2 * (d % n)) % n,
            _ => n.wrapping_sub(d),
        };
        (value & 0xffff) as u16
    }

    /// Tick (since load) of the first rising output edge strictly after tick `after`.
    fn next_rising_edge(&self, after: u64) -> Option<u64> {
        let n = self.count();
        match self.mode {
            0 | 1 => (after < n).then_some(n),
            4 | 5 => (after <= n).then_some(n + 1),
            _ => Some((after / n).saturating_add(1).saturating_mul(n)),
        }
    }

    /// Clock reading of the first rising output edge after `now`, while counting.
    fn next_rising_edge_ns(&self, now: u64) -> Option<u64> {
        if self.paused_ticks.is_some() {
            return None;
        }
        let load = self.load_ns?;
        let d = self.elapsed(now)?;
        let tick = self.next_rising_edge(d)?;
        Some(load.saturating_add(muldiv_ceil(tick, NANOS_PER_SEC, PIT_HZ)))
    }

    fn load_count(&mut self, value: u16, now: u64) {
        let value = if self.bcd {
            from_bcd(value)
        } else {
            u32::from(value)
        };
        self.count = if value == 0 {
            if self.bcd {
                10000
            } else {
                0x10000
            }
        } else {
            value
        };
        self.null_count = false;
        self.paused_ticks = None;
        // Modes 1 and 5 wait for a gate trigger; the others start now (while the gate is
        // high; mode 0/4 pause while it is low, modes 2/3 start on its rising edge).
        self.load_ns = match self.mode {
            1 | 5 => None,
            _ if self.gate => Some(now),
            0 | 4 => {
                self.paused_ticks = Some(0);
                Some(now)
            }
            _ => None,
        };
        self.idle_out = self.mode != 0;
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        match self.mode {
            0 | 4 => {
                if self.load_ns.is_none() {
                    return;
                }
                if gate {
                    if let Some(paused) = self.paused_ticks.take() {
                        // Resume: pretend counting started `paused` ticks ago.
                        let back = muldiv(paused, NANOS_PER_SEC, PIT_HZ);
                        self.load_ns = Some(now.saturating_sub(back));
                    }
                } else {
                    self.paused_ticks = self.elapsed(now);
                }
            }
            _ => {
                if gate {
                    // Rising gate (re)triggers modes 1, 5 and restarts modes 2, 3.
                    if !self.null_count {
                        self.load_ns = Some(now);
                    }
                } else if matches!(self.mode, 2 | 3) {
                    // Counting stops, output goes high.
                    self.load_ns = None;
                    self.idle_out = true;
                }
            }
        }
    }

    fn latch_count(&mut self, now: u64) {
        if self.count_latched == 0 {
            let counter = self.counter(now);
            self.latched_count = if self.bcd { to_bcd(counter) } else { counter };
            self.count_latched = self.rw_mode;
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if self.status_latched {
            self.status_latched = false;
            return self.status;
        }
        match self.count_latched {
            RW_LSB => {
                self.count_latched = 0;
                return self.latched_count as u8;
            }
            RW_MSB => {
                self.count_latched = 0;
                return (self.latched_count >> 8) as u8;
            }
            RW_WORD0 => {
                self.count_latched = RW_MSB;
                return self.latched_count as u8;
            }
            _ => {}
        }
        let counter = self.counter(now);
        let counter = if self.bcd { to_bcd(counter) } else { counter };
        match self.read_state {
            RW_LSB => counter as u8,
            RW_MSB => (counter >> 8) as u8,
            RW_WORD0 => {
                self.read_state = RW_WORD1;
                counter as u8
            }
            _ => {
                self.read_state = RW_WORD0;
                (counter >> 8) as u8
            }
        }
    }

    fn write(&mut self, val: u8, now: u64) {
        match self.write_state {
            RW_MSB => self.load_count(u16::from(val) << 8, now),
            RW_WORD0 => {
                self.write_latch = val;
                self.write_state = RW_WORD1;
            }
            RW_WORD1 => {
                self.load_count(u16::from(self.write_latch) | (u16::from(val) << 8), now);
                self.write_state = RW_WORD0;
            }
            _ => self.load_count(u16::from(val), now),
        }
    }

    fn control(&mut self, val: u8, now: u64) {
        let access = (val >> 4) & 3;
        if access == 0 {
            self.latch_count(now);
            return;
        }
        self.rw_mode = access;
        self.read_state = access;
        self.write_state = access;
        self.mode = match (val >> 1) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        };
        self.bcd = val & 1 != 0;
        self.load_ns = None;
        self.paused_ticks = None;
        self.null_count = true;
        self.count_latched = 0;
        self.idle_out = self.mode != 0;
    }

    fn latch_status(&mut self, now: u64) {
        if self.status_latched {
            return;
        }
        self.status = (u8::from(self.out(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.rw_mode << 4)
            | (self.mode << 1)
            | u8::from(self.bcd);
        self.status_latched = true;
    }

    fn shift_times(&mut self, delta: i128) {
        if let Some(load) = self.load_ns {
            self.load_ns = Some(shift(load, delta));
        }
    }
}

pub(crate) fn shift(t: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(t) + delta).max(0)).unwrap_or(u64::MAX)
}

fn from_bcd(v: u16) -> u32 {
    let mut out = 0u32;
    for shift in [12, 8, 4, 0] {
        out = out * 10 + u32::from(((v >> shift) & 0xf).min(9));
    }
    out
}

fn to_bcd(v: u16) -> u16 {
    let mut v = v % 10000;
    let mut out = 0u16;
    for shift in [0, 4, 8, 12] {
        out |= (v % 10) << shift;
        v /= 10;
    }
    out
}

/// The three channels and port 0x61's control bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pit {
    pub channels: [PitChannel; 3],
    /// Port 0x61 bits 0..3 as written (bit 0 = channel 2 gate, bit 1 = speaker enable).
    pub port61: u8,
    /// Clock reading at which channel 0's next rising edge is due (`None`: none coming).
    pub next_irq0_ns: Option<u64>,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// A PIT as after power-on: nothing counting, channel 2's gate low.
    pub fn new() -> Self {
        Pit {
            channels: [
                PitChannel::new(true),
                PitChannel::new(true),
                PitChannel::new(false),
            ],
            port61: 0,
            next_irq0_ns: None,
        }
    }

    /// Whether `port` belongs to the PIT (0x40..0x43, 0x61).
    pub fn handles(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | PORT_61)
    }

    fn rearm(&mut self, now: u64) {
        self.next_irq0_ns = self.channels[0].next_rising_edge_ns(now);
    }

    /// A byte read; `None` if the port is not the PIT's.
    pub fn read(&mut self, port: u16, now: u64) -> Option<u8> {
        match port {
            0x40..=0x42 => Some(self.channels[usize::from(port - 0x40)].read(now)),
            0x43 => Some(0xff), // the mode register is write-only
            PORT_61 => {
                let refresh = (now / REFRESH_PERIOD_NS) & 1 == 1;
                let out2 = self.channels[2].out(now);
                Some((self.port61 & 0x0f) | (u8::from(refresh) << 4) | (u8::from(out2) << 5))
            }
            _ => None,
        }
    }

    /// A byte written; false if the port is not the PIT's.
    pub fn write(&mut self, port: u16, val: u8, now: u64) -> bool {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].write(val, now),
            0x43 => {
                let channel = usize::from(val >> 6);
                if channel == 3 {
                    // Read-back command: bit 5 clear = latch count, bit 4 clear = status.
                    for (i, ch) in self.channels.iter_mut().enumerate() {
                        if val & (2 << i) == 0 {
                            continue;
                        }
                        if val & 0x20 == 0 {
                            ch.latch_count(now);
                        }
                        if val & 0x10 == 0 {
                            ch.latch_status(now);
                        }
                    }
                } else if let Some(ch) = self.channels.get_mut(channel) {
                    ch.control(val, now);
                }
            }
            PORT_61 => {
                self.port61 = val & 0x0f;
                self.channels[2].set_gate(val & 1 != 0, now);
            }
            _ => return false,
        }
        self.rearm(now);
        true
    }

    /// Whether channel 0's output rose since the last poll; if so the caller pulses IRQ 0
    /// (several missed edges coalesce into one, as a late tick would on real hardware).
    pub fn poll(&mut self, now: u64) -> bool {
        match self.next_irq0_ns {
            Some(due) if due <= now => {
                self.rearm(now);
                if matches!(self.channels[0].mode, 2 | 3) {
                    self.next_irq0_ns = self
                        .next_irq0_ns
                        .map(|next| next.max(now.saturating_add(MIN_PERIODIC_NS)));
                }
                true
            }
            _ => false,
        }
    }

    /// When channel 0's next interrupt is due (clock ns).
    pub fn next_irq_ns(&self) -> Option<u64> {
        self.next_irq0_ns
    }

    /// Move every stored time by `delta` ns (after restoring into another clock).
    pub fn shift_times(&mut self, delta: i128) {
        for ch in &mut self.channels {
            ch.shift_times(delta);
        }
        self.next_irq0_ns = self.next_irq0_ns.map(|t| shift(t, delta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// ns of `ticks` PIT clocks, rounded up.
    fn ns(ticks: u64) -> u64 {
        muldiv_ceil(ticks, NANOS_PER_SEC, PIT_HZ)
    }

    #[test]
    fn channel0_mode2_fires_at_the_programmed_rate() {
        let mut pit = Pit::new();
        let latch: u64 = 1193; // Linux's LATCH for HZ=1000
        pit.write(0x43, 0x34, 0); // ch0, lo/hi, mode 2
        pit.write(0x40, (latch & 0xff) as u8, 0);
        pit.write(0x40, (latch >> 8) as u8, 0);
        // Poll every 10 µs for one simulated second; count interrupts.
        let mut fired = 0;
        let mut t = 0;
        while t <= NANOS_PER_SEC {
            if pit.poll(t) {
                fired += 1;
            }
            t += 10_000;
        }
        assert_eq!(fired, (PIT_HZ / latch) as usize); // 1000 per second
        let first = ns(latch);
        let mut pit2 = pit.clone();
        pit2.write(0x43, 0x34, 0);
        pit2.write(0x40, (latch & 0xff) as u8, 0);
        pit2.write(0x40, (latch >> 8) as u8, 0);
        assert_eq!(pit2.next_irq_ns(), Some(first));
        assert!(!pit2.poll(first - 1));
        assert!(pit2.poll(first));
        assert_eq!(pit2.next_irq_ns(), Some(ns(2 * latch)));
    }

    #[test]
    fn channel0_mode2_counter_counts_down_and_reloads() {
        let mut pit = Pit::new();
        pit.write(0x43, 0x34, 0);
        pit.write(0x40, 100, 0);
        pit.write(0x40, 0, 0);
        // After 30 ticks the counter reads 70; after 130 ticks it has reloaded: 70 again.
        for t in [ns(30), ns(130)] {
            pit.write(0x43, 0x00, t); // latch channel 0
            let lo = pit.read(0x40, t).unwrap();
            let hi = pit.read(0x40, t).unwrap();
            assert_eq!(u16::from(lo) | (u16::from(hi) << 8), 70);
        }
    }

    #[test]
    fn tiny_periodic_count_is_rate_limited() {
        let mut pit = Pit::new();
        pit.write(0x43, 0x34, 0);
        pit.write(0x40, 2, 0);
        pit.write(0x40, 0, 0);
        let mut fired = 0;
        for t in (0..10 * MS).step_by(1_000) {
            if pit.poll(t) {
                fired += 1;
            }
        }
        // At most one per MIN_PERIODIC_NS (200 µs) rather than one per poll.
        assert!((45..=51).contains(&fired), "{fired}");
        // The counter itself still runs at full speed.
        assert_eq!(pit.channels[0].counter(ns(1)), 1);
    }

    #[test]
    fn mode4_oneshot_fires_once() {
        let mut pit = Pit::new();
        pit.write(0x43, 0x38, 0); // Linux's one-shot clockevent: mode 4
        pit.write(0x40, 0x10, 0);
        pit.write(0x40, 0x00, 0);
        assert!(!pit.poll(ns(16)));
        assert!(pit.poll(ns(17)));
        assert!(!pit.poll(100 * MS));
        assert_eq!(pit.next_irq_ns(), None);
    }

    /// Linux's `pit_calibrate_tsc`: gate high, ch2 mode 0, poll port 0x61 bit 5.
    #[test]
    fn channel2_oneshot_through_port61_as_pit_calibrate_tsc() {
        let mut pit = Pit::new();
        let start = 5 * MS;
        let latch: u64 = PIT_HZ / (1000 / 10); // 10 ms
        let v = pit.read(PORT_61, start).unwrap();
        pit.write(PORT_61, (v & !0x02) | 0x01, start);
        pit.write(0x43, 0xb0, start);
        pit.write(0x42, (latch & 0xff) as u8, start);
        pit.write(0x42, (latch >> 8) as u8, start);
        let end = start + ns(latch);
        assert_eq!(pit.read(PORT_61, start).unwrap() & 0x20, 0);
        assert_eq!(pit.read(PORT_61, end - 1).unwrap() & 0x20, 0);
        assert_eq!(pit.read(PORT_61, end).unwrap() & 0x21, 0x21);
        // 10 ms within a microsecond.
        assert!((end - start).abs_diff(10 * MS) < 1_000);
        // Channel 2 never interrupts.
        assert!(!pit.poll(end));
    }

    /// Linux's `quick_pit_calibrate`: ch2 mode 0 with 0xffff, reading the MSB of the count.
    #[test]
    fn channel2_counter_reads_msb_as_quick_pit_calibrate() {
        let mut pit = Pit::new();
        pit.write(PORT_61, 0x01, 0);
        pit.write(0x43, 0xb0, 0);
        pit.write(0x42, 0xff, 0);
        pit.write(0x42, 0xff, 0);
        // Each read of 0x42 returns LSB then MSB of the live counter.
        let t = ns(256 * 3 + 10);
        let _lsb = pit.read(0x42, t).unwrap();
        let msb = pit.read(0x42, t).unwrap();
        assert_eq!(msb, 0xfc);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut pit = Pit::new();
        pit.write(PORT_61, 0x01, 0);
        pit.write(0x43, 0xb0, 0);
        pit.write(0x42, 100, 0);
        pit.write(0x42, 0, 0);
        pit.write(PORT_61, 0x00, ns(40));
        assert_eq!(pit.channels[2].counter(ns(1000)), 60);
        pit.write(PORT_61, 0x01, ns(1000));
        assert_eq!(pit.read(PORT_61, ns(1059)).unwrap() & 0x20, 0);
        assert_ne!(pit.read(PORT_61, ns(1061)).unwrap() & 0x20, 0);
    }

    #[test]
    fn mode3_square_wave_and_status_readback() {
        let mut pit = Pit::new();
        pit.write(0x43, 0x36, 0); // ch0, lo/hi, mode 3
        pit.write(0x40, 10, 0);
        pit.write(0x40, 0, 0);
        assert!(pit.channels[0].out(ns(2)));
        assert!(!pit.channels[0].out(ns(6)));
        assert!(pit.poll(ns(10)));
        // Read-back: status of channel 0 (count not latched).
        pit.write(0x43, 0xe2, ns(11));
        let status = pit.read(0x40, ns(11)).unwrap();
        assert_eq!(status, 0x80 | (3 << 4) | (3 << 1));
    }

    #[test]
    fn port61_refresh_toggles_and_latch_command() {
        let mut pit = Pit::new();
        let a = pit.read(PORT_61, 0).unwrap() & 0x10;
        let b = pit.read(PORT_61, REFRESH_PERIOD_NS).unwrap() & 0x10;
        assert_ne!(a, b);
        pit.write(0x43, 0x30, 0); // ch0 lo/hi mode 0
        pit.write(0x40, 0x00, 0);
        pit.write(0x40, 0x10, 0); // 0x1000
        pit.write(0x43, 0x00, ns(0x100)); // latch
                                          // Latched value stays, even read later.
        assert_eq!(pit.read(0x40, ns(0x800)), Some(0x00));
        assert_eq!(pit.read(0x40, ns(0x800)), Some(0x0f));
        assert!(!Pit::handles(0x44));
        assert_eq!(pit.read(0x20, 0), None);
    }

    #[test]
    fn bcd_round_trip() {
        assert_eq!(from_bcd(0x1234), 1234);
        assert_eq!(to_bcd(1234), 0x1234);
    }
}
