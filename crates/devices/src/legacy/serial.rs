//! The 16550A UART (COM1 at port 0x3f8, IRQ 4 in `arch::layout`): the guest's console.
//!
//! The register model is rust-vmm's `vm_superio::Serial`; this module connects it to the rest
//! of wirt: guest output goes to a `Box<dyn Write + Send>`, interrupts go to an
//! [`InterruptSink`], and host input is queued with [`Serial::enqueue_input`].
//!
//! Interrupts: vm-superio raises an interrupt by calling `Trigger::trigger` once when a new
//! cause (THR empty, received data) becomes pending and does not call it again until the
//! guest has acknowledged that cause (by reading IIR or the receive buffer). That is an
//! *edge*, which is also what a UART on the ISA bus delivers: the PIC and IOAPIC pins for ISA
//! IRQs are edge-triggered. So each trigger is an [`InterruptSink::pulse`]. Driving a level
//! instead would need the line lowered when the guest acknowledges, which vm-superio does not
//! report; a level left high would storm (IOAPIC level mode) or swallow every later edge
//! (edge mode). Linux's 8250 driver loops on IIR until "no interrupt pending" in its handler,
//! so one edge per new cause loses nothing.
//!
//! Input flow control: the receive FIFO holds 64 bytes. `enqueue_input` takes what fits and
//! returns how many bytes it took; when it could not take everything, the device signals
//! [`Serial::input_room_fd`] once the guest has drained the FIFO, so the caller can retry.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as SuperioError, SerialEvents, SerialState};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::InterruptSink;
use crate::legacy::bus::BusDevice;
use crate::legacy::sync::lock;

/// Number of registers (offsets 0..8 from the base port).
pub const SERIAL_REGS: u64 = 8;

/// vm-superio's interrupt hook, delivering an edge on `gsi`.
struct SinkTrigger {
    sink: Arc<dyn InterruptSink>,
    gsi: u32,
}

impl Trigger for SinkTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.sink.pulse(self.gsi);
        Ok(())
    }
}

/// Counters and the input-room notification, fed by vm-superio's event callbacks.
struct Events {
    out_bytes: AtomicU64,
    lost_bytes: AtomicU64,
    /// Set when `enqueue_input` had to refuse bytes; cleared when the room is signalled.
    input_waiting: AtomicBool,
    room_fd: EventFd,
}

impl SerialEvents for Events {
    fn buffer_read(&self) {}

    fn out_byte(&self) {
        self.out_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.lost_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {
        // Called on every read that leaves the FIFO empty; signal only when someone waits, so
        // that a guest polling an empty receive buffer costs no syscalls.
        if self.input_waiting.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.room_fd.write(1) {
                tracing::warn!("cannot signal serial input room: {e}");
            }
        }
    }
}

type Uart = vm_superio::Serial<SinkTrigger, Arc<Events>, Box<dyn Write + Send>>;

/// Guest-visible UART state for snapshots (vm-superio's `SerialState`, made serializable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialDeviceState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Received bytes the guest has not read yet (at most 64).
    pub in_buffer: Vec<u8>,
}

impl Default for SerialDeviceState {
    fn default() -> Self {
        SerialState::default().into()
    }
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialDeviceState> for SerialState {
    fn from(s: &SerialDeviceState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot create the serial input eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("serial state is invalid: its receive FIFO holds more than 64 bytes")]
    InvalidState,
}

/// Output statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SerialStats {
    /// Bytes the guest transmitted that reached the output.
    pub out_bytes: u64,
    /// Bytes the guest transmitted that the output refused (the guest is never blocked).
    pub lost_bytes: u64,
}

/// A 16550A UART on the port bus.
pub struct Serial {
    uart: Mutex<Uart>,
    events: Arc<Events>,
}

impl Serial {
    /// A UART in its power-on state writing guest output to `out` and raising `gsi` on `sink`.
    pub fn new(
        out: Box<dyn Write + Send>,
        sink: Arc<dyn InterruptSink>,
        gsi: u32,
    ) -> Result<Self, SerialError> {
        Self::from_state(&SerialDeviceState::default(), out, sink, gsi)
    }

    /// A UART restored from a snapshot. Interrupts pending in `state` are raised again.
    pub fn from_state(
        state: &SerialDeviceState,
        out: Box<dyn Write + Send>,
        sink: Arc<dyn InterruptSink>,
        gsi: u32,
    ) -> Result<Self, SerialError> {
        let events = Arc::new(Events {
            out_bytes: AtomicU64::new(0),
            lost_bytes: AtomicU64::new(0),
            input_waiting: AtomicBool::new(false),
            room_fd: EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::EventFd)?,
        });
        let trigger = SinkTrigger { sink, gsi };
        let uart = Uart::from_state(&state.into(), trigger, Arc::clone(&events), out)
            .map_err(|_| SerialError::InvalidState)?;
        Ok(Self {
            uart: Mutex::new(uart),
            events,
        })
    }

    pub fn state(&self) -> SerialDeviceState {
        lock(&self.uart).state().into()
    }

    /// Queue host input for the guest. Returns how many bytes of `input` were taken (0 when
    /// the FIFO is full or the UART is in loopback mode); if fewer than all, wait for
    /// [`Serial::input_room_fd`] and offer the rest again.
    pub fn enqueue_input(&self, input: &[u8]) -> usize {
        if input.is_empty() {
            return 0;
        }
        let mut uart = lock(&self.uart);
        let taken = match uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            Err(SuperioError::FullFifo) => 0,
            Err(e) => {
                tracing::warn!("serial input dropped: {e}");
                0
            }
        };
        if taken < input.len() {
            // Set under the UART lock: the guest cannot drain the FIFO between our attempt and
            // this flag, so the wakeup cannot be missed.
            self.events.input_waiting.store(true, Ordering::Release);
        }
        taken
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn input_capacity(&self) -> usize {
        lock(&self.uart).fifo_capacity()
    }

    /// Becomes readable when the guest has drained the receive FIFO after an
    /// [`Serial::enqueue_input`] that could not take all its input. Non-blocking; the caller
    /// reads it to reset it.
    pub fn input_room_fd(&self) -> &EventFd {
        &self.events.room_fd
    }

    pub fn stats(&self) -> SerialStats {
        SerialStats {
            out_bytes: self.events.out_bytes.load(Ordering::Relaxed),
            lost_bytes: self.events.lost_bytes.load(Ordering::Relaxed),
        }
    }
}

impl BusDevice for Serial {
    fn read(&self, offset: u64, data: &mut [u8]) {
        // The UART's registers are bytes; a wider access reads one register and zeros.
        data.fill(0);
        let Some(first) = data.first_mut() else {
            return;
        };
        if offset < SERIAL_REGS {
            *first = lock(&self.uart).read(offset as u8);
        } else {
            *first = 0xff;
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if offset >= SERIAL_REGS {
            return;
        }
        if let Err(e) = lock(&self.uart).write(offset as u8, value) {
            // Only output errors are possible (the trigger cannot fail); the byte was counted
            // as lost and the guest was told the transmitter is empty anyway.
            tracing::trace!("serial output error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output that tests can inspect after handing a `Box` of it to the device.
    #[derive(Clone, Default)]
    struct SharedOut(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedOut {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct BrokenOut;
    impl Write for BrokenOut {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Records line changes.
    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl InterruptSink for Lines {
        fn set_level(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }
    impl Lines {
        fn pulses(&self) -> usize {
            let l = self.0.lock().unwrap();
            // Every high must be followed by a low on the same line.
            for pair in l.chunks(2) {
                assert_eq!(pair, [(4, true), (4, false)], "edges only, on GSI 4");
            }
            l.len() / 2
        }
    }

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;

    fn r(dev: &Serial, off: u64) -> u8 {
        let mut d = [0u8];
        dev.read(off, &mut d);
        d[0]
    }

    fn setup() -> (Serial, SharedOut, Arc<Lines>) {
        let out = SharedOut::default();
        let lines = Arc::new(Lines::default());
        let dev = Serial::new(Box::new(out.clone()), lines.clone(), 4).unwrap();
        (dev, out, lines)
    }

    #[test]
    fn guest_programs_divisor_and_transmits() {
        let (dev, out, lines) = setup();
        // 115200 baud, 8N1, the way Linux's 8250 driver does it.
        dev.write(LCR, &[0x80]);
        dev.write(0, &[0x01]);
        dev.write(1, &[0x00]);
        assert_eq!(
            (r(&dev, 0), r(&dev, 1)),
            (0x01, 0x00),
            "divisor latch reads back"
        );
        dev.write(LCR, &[0x03]);
        assert_eq!(r(&dev, LCR), 0x03);
        assert_eq!(r(&dev, IER), 0, "DLAB off: offset 1 is IER again");

        for b in b"hello\n" {
            assert_ne!(r(&dev, LSR) & 0x20, 0, "THR empty");
            dev.write(THR, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hello\n");
        assert_eq!(lines.pulses(), 0, "no interrupts enabled");
        assert_eq!(
            dev.stats(),
            SerialStats {
                out_bytes: 6,
                lost_bytes: 0
            }
        );
    }

    #[test]
    fn thr_empty_interrupt_is_one_edge_per_acknowledge() {
        let (dev, out, lines) = setup();
        dev.write(IER, &[0x02]); // THRI
        assert_eq!(
            lines.pulses(),
            1,
            "enabling THRI with an empty THR interrupts"
        );
        dev.write(THR, b"a");
        dev.write(THR, b"b");
        assert_eq!(lines.pulses(), 1, "still pending: no second edge");
        assert_eq!(r(&dev, IIR) & 0x0f, 0x02, "IIR: THR empty");
        assert_eq!(r(&dev, IIR) & 0x0f, 0x01, "reading IIR acknowledged it");
        dev.write(THR, b"c");
        assert_eq!(lines.pulses(), 2);
        assert_eq!(&*out.0.lock().unwrap(), b"abc");
    }

    #[test]
    fn input_respects_fifo_and_signals_room() {
        let (dev, _out, lines) = setup();
        dev.write(IER, &[0x01]); // RDI
        let input: Vec<u8> = (0..100).collect();
        assert_eq!(dev.enqueue_input(&input), 64);
        assert_eq!(lines.pulses(), 1);
        assert_eq!(dev.input_capacity(), 0);
        assert_eq!(dev.enqueue_input(&input[64..]), 0);
        assert!(dev.input_room_fd().read().is_err(), "no room yet");

        assert_eq!(r(&dev, IIR) & 0x0f, 0x04, "IIR: received data");
        let mut got = Vec::new();
        while r(&dev, LSR) & 0x01 != 0 {
            got.push(r(&dev, 0));
        }
        assert_eq!(got, input[..64]);
        assert_eq!(dev.input_room_fd().read().unwrap(), 1, "room signalled");

        assert_eq!(dev.enqueue_input(&input[64..]), 36);
        assert_eq!(lines.pulses(), 2);
        // Draining without anyone waiting does not signal again.
        while r(&dev, LSR) & 0x01 != 0 {
            r(&dev, 0);
        }
        assert!(dev.input_room_fd().read().is_err());
    }

    #[test]
    fn input_while_rx_interrupt_masked_fires_on_unmask() {
        let (dev, _out, lines) = setup();
        assert_eq!(dev.enqueue_input(b"x"), 1);
        assert_eq!(lines.pulses(), 0);
        dev.write(IER, &[0x01]);
        assert_eq!(
            lines.pulses(),
            1,
            "Linux's console masks IER while printing"
        );
        assert_eq!(r(&dev, 0), b'x');
    }

    #[test]
    fn broken_output_does_not_block_guest() {
        let lines = Arc::new(Lines::default());
        let dev = Serial::new(Box::new(BrokenOut), lines, 4).unwrap();
        dev.write(THR, b"a");
        assert_ne!(r(&dev, LSR) & 0x20, 0);
        assert_eq!(
            dev.stats(),
            SerialStats {
                out_bytes: 0,
                lost_bytes: 1
            }
        );
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (dev, out, _lines) = setup();
        dev.write(8, b"z");
        dev.write(THR, &[]);
        let mut d = [0xaa; 4];
        dev.read(THR + 100, &mut d);
        assert_eq!(d, [0xff, 0, 0, 0]);
        dev.read(LSR, &mut []);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn state_round_trips_through_serde() {
        let (dev, out, _lines) = setup();
        dev.write(LCR, &[0x83]);
        dev.write(0, &[0x0c]);
        dev.write(LCR, &[0x03]);
        dev.write(7, &[0x5a]);
        dev.enqueue_input(b"pending");
        let json = serde_json::to_string(&dev.state()).unwrap();
        let state: SerialDeviceState = serde_json::from_str(&json).unwrap();

        let lines = Arc::new(Lines::default());
        let restored = Serial::from_state(&state, Box::new(out), lines.clone(), 4).unwrap();
        assert_eq!(restored.state(), dev.state());
        assert_eq!(r(&restored, 7), 0x5a);
        assert_eq!(r(&restored, 0), b'p');

        let bad = SerialDeviceState {
            in_buffer: vec![0; 65],
            ..state
        };
        assert!(matches!(
            Serial::from_state(&bad, Box::new(std::io::sink()), lines, 4),
            Err(SerialError::InvalidState)
        ));
    }
}
