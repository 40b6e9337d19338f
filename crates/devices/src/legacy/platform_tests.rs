//! The legacy devices wired on one port bus the way the VMM places them on a PC (port numbers
//! from `arch::layout`), driven as a booting guest would drive them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::*;
use crate::interrupt::InterruptSink;

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

#[derive(Default)]
struct Lines(Mutex<Vec<(u32, bool)>>);
impl InterruptSink for Lines {
    fn set_level(&self, gsi: u32, level: bool) {
        self.0.lock().unwrap().push((gsi, level));
    }
}

struct Pc {
    pio: Bus,
    control: Arc<VmControl>,
    out: SharedOut,
    lines: Arc<Lines>,
    post: Arc<PortSink>,
}

fn pc() -> Pc {
    let control = Arc::new(VmControl::new().unwrap());
    let out = SharedOut::default();
    let lines = Arc::new(Lines::default());
    let sink: Arc<dyn InterruptSink> = lines.clone();
    let pio = Bus::new();
    let post = Arc::new(PortSink::default());

    let serial = Serial::new(Box::new(out.clone()), sink.clone(), 4).unwrap();
    pio.insert(Arc::new(serial), 0x3f8, 8).unwrap();
    let i8042 = Arc::new(I8042::new(control.clone(), sink.clone(), 1, 12));
    pio.insert(i8042.clone(), 0x60, 1).unwrap();
    pio.insert(i8042.command_port(), 0x64, 1).unwrap();
    pio.insert(Arc::new(Rtc::new()), 0x70, 2).unwrap();
    pio.insert(post.clone(), 0x80, 1).unwrap();
    pio.insert(Arc::new(DebugExit::new(control.clone())), 0xf4, 4)
        .unwrap();
    pio.insert(
        Arc::new(BootTimer::new(Instant::now(), control.clone())),
        0x440,
        4,
    )
    .unwrap();
    pio.insert(Arc::new(Pm1Event::new(sink.clone(), 9)), 0x600, 4)
        .unwrap();
    pio.insert(Arc::new(Pm1Control::new(5, control.clone())), 0x604, 2)
        .unwrap();
    pio.insert(Arc::new(PmTimer::new()), 0x608, 4).unwrap();
    pio.insert(Arc::new(ResetControl::new(control.clone())), 0xcf9, 1)
        .unwrap();
    Pc {
        pio,
        control,
        out,
        lines,
        post,
    }
}

fn inb(bus: &Bus, port: u64) -> u8 {
    let mut d = [0u8];
    bus.read(port, &mut d);
    d[0]
}

#[test]
fn a_guest_boots_prints_and_powers_off() {
    let pc = pc();
    // Early console: poll LSR, write THR.
    for b in b"Linux version" {
        while inb(&pc.pio, 0x3fd) & 0x20 == 0 {}
        pc.pio.write(0x3f8, &[*b]);
    }
    // I/O delay writes.
    pc.pio.write(0x80, &[0]);
    // Read the RTC: a plausible BCD year of this century.
    pc.pio.write(0x70, &[0x32]);
    assert_eq!(inb(&pc.pio, 0x71), 0x20);
    // PM timer runs.
    let mut t = [0u8; 4];
    pc.pio.read(0x608, &mut t);
    // Init reports ready, then powers off.
    pc.pio.write(0x440, &[0]);
    assert!(pc.control.guest_ready().is_some());
    pc.pio
        .write(0x604, &((5u16 << 10) | (1 << 13)).to_le_bytes());

    assert_eq!(&*pc.out.0.lock().unwrap(), b"Linux version");
    assert_eq!(pc.post.writes(), 1);
    assert_eq!(pc.control.take(), Some(ControlEvent::PowerOff));
    assert_eq!(
        pc.pio.stats(),
        BusStats::default(),
        "every access was claimed"
    );
    assert!(pc.lines.0.lock().unwrap().is_empty());
}

#[test]
fn every_reset_path_reaches_the_vmm() {
    let pc = pc();
    pc.pio.write(0x64, &[0xfe]);
    assert_eq!(pc.control.take(), Some(ControlEvent::Reset));
    pc.pio.write(0xcf9, &[0x06]);
    assert_eq!(pc.control.take(), Some(ControlEvent::Reset));
    pc.pio.write(0xf4, &0x0000_0021u32.to_le_bytes());
    let ev = pc.control.take().unwrap();
    assert_eq!(ev.exit_status(), Some(0x43));
}
