//! A small i8042 PS/2 controller (ports 0x60 data, 0x64 status/command in `arch::layout`)
//! with a keyboard that answers commands but never types, and an empty mouse port.
//!
//! Why not vm-superio's `I8042Device`: it only knows the reset command and reads its status
//! as zero, so the output buffer never fills and Linux's i8042 probe waits out a timeout for
//! every command it sends (self test, command byte, loopback). This model answers the
//! controller commands Linux and firmware use, so the probe finishes at once, and
//! keeps the one job that matters most: command 0xfe (pulse the reset line, how Linux's
//! `reboot=kbd` resets) and output-port writes with bit 0 clear post [`ControlEvent::Reset`].
//!
//! The keyboard behind port 1 acknowledges its commands (reset answers 0xfa 0xaa, identify
//! answers 0xfa 0xab 0x83), so Linux's atkbd driver finds a keyboard without timeouts. The aux
//! (mouse) port exists but nothing is attached: bytes sent to it are answered with 0xfe and
//! the timeout status bit, so psmouse gives up immediately.
//!
//! Interrupts: like the real controller, IRQ 1 (keyboard) or IRQ 12 (aux) is a level that is
//! high while the output buffer holds a byte from that port and its interrupt is enabled in
//! the command byte; the pins are edge-triggered on a PC, so each new byte is one rising edge.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::interrupt::InterruptSink;
use crate::legacy::bus::BusDevice;
use crate::legacy::control::{ControlEvent, VmControl};
use crate::legacy::sync::lock;

/// Offset of the data port (0x60) in the device's range.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the status/command port (0x64) in the device's range when it is placed at 0x60
/// with length 5; place the two ports separately with [`I8042::command_port`] otherwise.
pub const COMMAND_OFFSET: u64 = 4;

// Status register bits.
const STS_OBF: u8 = 0x01;
const STS_SYS: u8 = 0x04;
const STS_CMD: u8 = 0x08;
const STS_UNLOCKED: u8 = 0x10;
const STS_AUX_OBF: u8 = 0x20;
const STS_TIMEOUT: u8 = 0x40;

// Command byte (CTR) bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DIS: u8 = 0x10;
const CTR_AUX_DIS: u8 = 0x20;

// Output port bits.
const OUTP_RESET: u8 = 0x01;
const OUTP_A20: u8 = 0x02;

// Keyboard replies.
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_BAT_OK: u8 = 0xaa;

/// Bytes the output buffer holds at most; more answers than that are dropped (a guest
/// flooding the keyboard with commands cannot make the device grow).
const QUEUE_MAX: usize = 16;

/// One byte waiting in the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputByte {
    pub value: u8,
    /// From the aux (mouse) port rather than the keyboard or the controller.
    pub aux: bool,
    /// Delivered with the timeout status bit (no device answered).
    pub timeout: bool,
}

/// Guest-visible i8042 state for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Controller command byte (CTR).
    pub ctr: u8,
    /// Output port (bit 0: reset line, bit 1: A20).
    pub output_port: u8,
    /// Whether the last port write was to the command port (status bit 3).
    pub last_was_command: bool,
    /// A controller command waiting for its data byte.
    pub pending_command: Option<u8>,
    /// A keyboard command waiting for its parameter byte.
    pub keyboard_pending: Option<u8>,
    /// Scan code set reported by the keyboard (2 unless the guest chose another).
    pub scancode_set: u8,
    pub output: Vec<OutputByte>,
}

impl Default for I8042State {
    fn default() -> Self {
        Self {
            // As a firmware leaves it: both interrupts on, system flag set, translation on.
            ctr: CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | 0x40,
            output_port: OUTP_RESET | OUTP_A20,
            last_was_command: true,
            pending_command: None,
            keyboard_pending: None,
            scancode_set: 2,
            output: Vec::new(),
        }
    }
}

struct Inner {
    ctr: u8,
    output_port: u8,
    last_was_command: bool,
    pending_command: Option<u8>,
    keyboard_pending: Option<u8>,
    scancode_set: u8,
    output: VecDeque<OutputByte>,
    /// Current levels of the keyboard and aux interrupt lines.
    kbd_line: bool,
    aux_line: bool,
}

/// The i8042 controller.
pub struct I8042 {
    inner: Mutex<Inner>,
    control: Arc<VmControl>,
    sink: Arc<dyn InterruptSink>,
    kbd_gsi: u32,
    aux_gsi: u32,
}

impl I8042 {
    /// `kbd_gsi` and `aux_gsi` are ISA IRQs 1 and 12 on a PC (`arch::layout::I8042_IRQ`).
    pub fn new(
        control: Arc<VmControl>,
        sink: Arc<dyn InterruptSink>,
        kbd_gsi: u32,
        aux_gsi: u32,
    ) -> Self {
        Self::from_state(&I8042State::default(), control, sink, kbd_gsi, aux_gsi)
    }

    pub fn from_state(
        state: &I8042State,
        control: Arc<VmControl>,
        sink: Arc<dyn InterruptSink>,
        kbd_gsi: u32,
        aux_gsi: u32,
    ) -> Self {
        let dev = Self {
            inner: Mutex::new(Inner {
                ctr: state.ctr,
                output_port: state.output_port,
                last_was_command: state.last_was_command,
                pending_command: state.pending_command,
                keyboard_pending: state.keyboard_pending,
                scancode_set: state.scancode_set,
                output: state.output.iter().copied().take(QUEUE_MAX).collect(),
                kbd_line: false,
                aux_line: false,
            }),
            control,
            sink,
            kbd_gsi,
            aux_gsi,
        };
        let mut inner = lock(&dev.inner);
        dev.update_lines(&mut inner);
        drop(inner);
        dev
    }

    pub fn state(&self) -> I8042State {
        let s = lock(&self.inner);
        I8042State {
            ctr: s.ctr,
            output_port: s.output_port,
            last_was_command: s.last_was_command,
            pending_command: s.pending_command,
            keyboard_pending: s.keyboard_pending,
            scancode_set: s.scancode_set,
            output: s.output.iter().copied().collect(),
        }
    }

    /// The status/command port as a device of its own (for placing 0x60 and 0x64 as two
    /// one-byte ranges instead of one five-byte range).
    pub fn command_port(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(CommandPort(Arc::clone(self)))
    }

    fn status(s: &Inner) -> u8 {
        let mut st = STS_UNLOCKED;
        if s.ctr & CTR_SYS != 0 {
            st |= STS_SYS;
        }
        if s.last_was_command {
            st |= STS_CMD;
        }
        if let Some(head) = s.output.front() {
            st |= STS_OBF;
            if head.aux {
                st |= STS_AUX_OBF;
            }
            if head.timeout {
                st |= STS_TIMEOUT;
            }
        }
        st
    }

    fn push(s: &mut Inner, value: u8, aux: bool, timeout: bool) {
        if s.output.len() < QUEUE_MAX {
            s.output.push_back(OutputByte {
                value,
                aux,
                timeout,
            });
        }
    }

    /// Move the interrupt lines to match the output buffer and the command byte.
    fn update_lines(&self, s: &mut Inner) {
        let head = s.output.front();
        let kbd = head.is_some_and(|b| !b.aux) && s.ctr & CTR_KBD_INT != 0;
        let aux = head.is_some_and(|b| b.aux) && s.ctr & CTR_AUX_INT != 0;
        if kbd != s.kbd_line {
            s.kbd_line = kbd;
            self.sink.set_level(self.kbd_gsi, kbd);
        }
        if aux != s.aux_line {
            s.aux_line = aux;
            self.sink.set_level(self.aux_gsi, aux);
        }
    }

    fn read_data(&self, s: &mut Inner) -> u8 {
        match s.output.pop_front() {
            Some(b) => {
                // Drop the line first so the next byte (if any) is a fresh edge.
                if s.kbd_line || s.aux_line {
                    let (kbd, aux) = (s.kbd_line, s.aux_line);
                    s.kbd_line = false;
                    s.aux_line = false;
                    if kbd {
                        self.sink.set_level(self.kbd_gsi, false);
                    }
                    if aux {
                        self.sink.set_level(self.aux_gsi, false);
                    }
                }
                b.value
            }
            None => 0,
        }
    }

    fn write_command(&self, s: &mut Inner, cmd: u8) {
        s.last_was_command = true;
        s.pending_command = None;
        match cmd {
            0x20 => Self::push(s, s.ctr, false, false),
            0x21..=0x3f => Self::push(s, 0, false, false),
            0x60..=0x7f | 0xd1..=0xd4 => s.pending_command = Some(cmd),
            0xa7 => s.ctr |= CTR_AUX_DIS,
            0xa8 => s.ctr &= !CTR_AUX_DIS,
            0xa9 | 0xab => Self::push(s, 0x00, false, false),
            0xaa => {
                s.ctr |= CTR_SYS;
                Self::push(s, 0x55, false, false);
            }
            0xad => s.ctr |= CTR_KBD_DIS,
            0xae => s.ctr &= !CTR_KBD_DIS,
            0xc0 => Self::push(s, 0x80, false, false),
            0xd0 => Self::push(s, s.output_port, false, false),
            // Pulse output-port bits low for 6 µs; bit 0 is the CPU reset line.
            0xf0..=0xff => {
                if cmd & OUTP_RESET == 0 {
                    self.control.request(ControlEvent::Reset);
                }
            }
            _ => tracing::debug!(cmd, "unhandled i8042 command"),
        }
    }

    fn write_data(&self, s: &mut Inner, value: u8) {
        s.last_was_command = false;
        match s.pending_command.take() {
            Some(0x60) => s.ctr = value,
            Some(0x61..=0x7f) => {}
            Some(0xd1) => {
                s.output_port = value;
                if value & OUTP_RESET == 0 {
                    self.control.request(ControlEvent::Reset);
                }
            }
            Some(0xd2) => Self::push(s, value, false, false),
            Some(0xd3) => Self::push(s, value, true, false),
            // Nothing is plugged into the aux port.
            Some(0xd4) => Self::push(s, KBD_RESEND, true, true),
            _ => self.keyboard_command(s, value),
        }
    }

    /// A byte for the keyboard: a command, or the parameter of the previous one.
    fn keyboard_command(&self, s: &mut Inner, byte: u8) {
        if let Some(cmd) = s.keyboard_pending.take() {
            Self::push(s, KBD_ACK, false, false);
            if cmd == 0xf0 {
                match byte {
                    0 => Self::push(s, s.scancode_set, false, false),
                    1..=3 => s.scancode_set = byte,
                    _ => {}
                }
            }
            return;
        }
        match byte {
            // Set LEDs, set typematic rate, select scan code set: a parameter follows.
            0xed | 0xf3 | 0xf0 => {
                s.keyboard_pending = Some(byte);
                Self::push(s, KBD_ACK, false, false);
            }
            0xee => Self::push(s, 0xee, false, false),
            0xf2 => {
                for b in [KBD_ACK, 0xab, 0x83] {
                    Self::push(s, b, false, false);
                }
            }
            0xf4..=0xf6 => Self::push(s, KBD_ACK, false, false),
            0xff => {
                s.scancode_set = 2;
                Self::push(s, KBD_ACK, false, false);
                Self::push(s, KBD_BAT_OK, false, false);
            }
            _ => Self::push(s, KBD_RESEND, false, false),
        }
    }

    fn read_port(&self, offset: u64) -> u8 {
        let mut s = lock(&self.inner);
        let v = match offset {
            DATA_OFFSET => self.read_data(&mut s),
            COMMAND_OFFSET => Self::status(&s),
            _ => 0xff,
        };
        self.update_lines(&mut s);
        v
    }

    fn write_port(&self, offset: u64, value: u8) {
        let mut s = lock(&self.inner);
        match offset {
            DATA_OFFSET => self.write_data(&mut s, value),
            COMMAND_OFFSET => self.write_command(&mut s, value),
            _ => {}
        }
        self.update_lines(&mut s);
    }
}

impl BusDevice for I8042 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        // The ports are bytes; a wider access reads one port and zeros.
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.read_port(offset);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.write_port(offset, v);
        }
    }
}

/// The status/command port on its own: offset 0 is port 0x64.
struct CommandPort(Arc<I8042>);

impl BusDevice for CommandPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset == 0 {
            self.0.read(COMMAND_OFFSET, data);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.0.write(COMMAND_OFFSET, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::bus::Bus;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl InterruptSink for Lines {
        fn set_level(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    /// The controller placed as on a PC: data at 0x60, status/command at 0x64.
    fn pc() -> (Bus, Arc<I8042>, Arc<VmControl>, Arc<Lines>) {
        let control = Arc::new(VmControl::new().unwrap());
        let lines = Arc::new(Lines::default());
        let dev = Arc::new(I8042::new(control.clone(), lines.clone(), 1, 12));
        let bus = Bus::new();
        bus.insert(dev.clone(), 0x60, 1).unwrap();
        bus.insert(dev.command_port(), 0x64, 1).unwrap();
        (bus, dev, control, lines)
    }

    fn inb(bus: &Bus, port: u64) -> u8 {
        let mut d = [0u8];
        assert!(bus.read(port, &mut d));
        d[0]
    }

    fn outb(bus: &Bus, port: u64, v: u8) {
        assert!(bus.write(port, &[v]));
    }

    /// Linux's i8042_command: wait for IBF clear, write, then poll OBF for each reply byte.
    fn command(bus: &Bus, cmd: u8, param: Option<u8>, replies: usize) -> Vec<u8> {
        assert_eq!(inb(bus, 0x64) & 0x02, 0, "input buffer never full");
        outb(bus, 0x64, cmd);
        if let Some(p) = param {
            outb(bus, 0x60, p);
        }
        (0..replies)
            .map(|_| {
                assert_ne!(inb(bus, 0x64) & STS_OBF, 0, "reply ready at once");
                inb(bus, 0x60)
            })
            .collect()
    }

    #[test]
    fn command_fe_resets() {
        let (bus, _dev, control, _) = pc();
        outb(&bus, 0x64, 0xfe);
        assert_eq!(control.take(), Some(ControlEvent::Reset));
        outb(&bus, 0x64, 0xff);
        assert_eq!(control.take(), None, "0xff pulses nothing");
    }

    #[test]
    fn output_port_write_with_reset_bit_clear_resets() {
        let (bus, _dev, control, _) = pc();
        assert_eq!(command(&bus, 0xd0, None, 1), vec![0x03]);
        command(&bus, 0xd1, Some(0x03), 0);
        assert_eq!(control.take(), None, "A20 on, reset line high");
        command(&bus, 0xd1, Some(0x02), 0);
        assert_eq!(control.take(), Some(ControlEvent::Reset));
    }

    #[test]
    fn linux_probe_sequence_answers_without_timeouts() {
        let (bus, _dev, _control, lines) = pc();
        // i8042_flush: nothing pending.
        assert_eq!(inb(&bus, 0x64) & STS_OBF, 0);
        // Controller self test.
        assert_eq!(command(&bus, 0xaa, None, 1), vec![0x55]);
        assert_ne!(inb(&bus, 0x64) & STS_SYS, 0);
        // Read the command byte, write it back with interrupts off.
        let ctr = command(&bus, 0x20, None, 1)[0];
        assert_eq!(ctr & 0x03, 0x03);
        command(&bus, 0x60, Some(ctr & !0x03), 0);
        lines.0.lock().unwrap().clear();
        assert_eq!(command(&bus, 0x20, None, 1), vec![ctr & !0x03]);
        // AUX loopback comes back from the aux port.
        outb(&bus, 0x64, 0xd3);
        outb(&bus, 0x60, 0x5a);
        assert_eq!(
            inb(&bus, 0x64) & (STS_OBF | STS_AUX_OBF),
            STS_OBF | STS_AUX_OBF
        );
        assert_eq!(inb(&bus, 0x60), 0x5a);
        // Bit assignment test for the aux port.
        command(&bus, 0xa7, None, 0);
        assert_ne!(command(&bus, 0x20, None, 1)[0] & CTR_AUX_DIS, 0);
        command(&bus, 0xa8, None, 0);
        assert_eq!(command(&bus, 0x20, None, 1)[0] & CTR_AUX_DIS, 0);
        assert!(
            lines.0.lock().unwrap().iter().all(|&(_, l)| !l),
            "interrupts are off: no line goes high"
        );
    }

    #[test]
    fn keyboard_acks_and_interrupts_per_byte() {
        let (bus, _dev, _control, lines) = pc();
        // Interrupts are on by default: identify answers three bytes, one edge each.
        outb(&bus, 0x60, 0xf2);
        let mut got = Vec::new();
        while inb(&bus, 0x64) & STS_OBF != 0 {
            got.push(inb(&bus, 0x60));
        }
        assert_eq!(got, vec![0xfa, 0xab, 0x83]);
        assert_eq!(
            *lines.0.lock().unwrap(),
            vec![
                (1, true),
                (1, false),
                (1, true),
                (1, false),
                (1, true),
                (1, false)
            ]
        );
        lines.0.lock().unwrap().clear();

        // Set LEDs takes a parameter; both bytes are acknowledged.
        outb(&bus, 0x60, 0xed);
        assert_eq!(inb(&bus, 0x60), 0xfa);
        outb(&bus, 0x60, 0x07);
        assert_eq!(inb(&bus, 0x60), 0xfa);
        // Reset: ACK then self-test passed. Scan code set query.
        outb(&bus, 0x60, 0xff);
        assert_eq!((inb(&bus, 0x60), inb(&bus, 0x60)), (0xfa, 0xaa));
        outb(&bus, 0x60, 0xf0);
        outb(&bus, 0x60, 0x00);
        assert_eq!(
            (inb(&bus, 0x60), inb(&bus, 0x60), inb(&bus, 0x60)),
            (0xfa, 0xfa, 0x02)
        );
        outb(&bus, 0x60, 0x99);
        assert_eq!(inb(&bus, 0x60), 0xfe, "unknown keyboard command: resend");
    }

    #[test]
    fn empty_aux_port_times_out_at_once() {
        let (bus, _dev, _control, lines) = pc();
        command(&bus, 0xd4, Some(0xff), 0);
        let st = inb(&bus, 0x64);
        assert_eq!(
            st & (STS_OBF | STS_AUX_OBF | STS_TIMEOUT),
            STS_OBF | STS_AUX_OBF | STS_TIMEOUT
        );
        assert_eq!(*lines.0.lock().unwrap(), vec![(12, true)]);
        assert_eq!(inb(&bus, 0x60), 0xfe);
        assert_eq!(inb(&bus, 0x64) & STS_TIMEOUT, 0);
        assert_eq!(*lines.0.lock().unwrap(), vec![(12, true), (12, false)]);
    }

    #[test]
    fn output_is_bounded_and_state_round_trips() {
        let (bus, dev, control, _) = pc();
        for _ in 0..100 {
            outb(&bus, 0x60, 0xf2);
        }
        assert_eq!(dev.state().output.len(), QUEUE_MAX);

        let json = serde_json::to_string(&dev.state()).unwrap();
        let state: I8042State = serde_json::from_str(&json).unwrap();
        let lines = Arc::new(Lines::default());
        let restored = I8042::from_state(&state, control, lines.clone(), 1, 12);
        assert_eq!(restored.state(), dev.state());
        assert_eq!(
            *lines.0.lock().unwrap(),
            vec![(1, true)],
            "a pending byte raises the line again after restore"
        );
        let mut d = [0u8; 2];
        restored.read(DATA_OFFSET, &mut d);
        assert_eq!(d, [0xfa, 0]);
    }
}
