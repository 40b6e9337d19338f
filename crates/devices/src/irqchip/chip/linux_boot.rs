//! The interrupt and timer programming of a Linux 6.1 boot, in order, against the chip:
//! PIC + PIT ticks through the virtual wire, TSC calibration on PIT channel 2, APIC and
//! IOAPIC setup with `check_timer`, the switch to the TSC-deadline timer, AP bring-up with
//! INIT/SIPI, IPIs and a level-triggered device line. A small "CPU" loop stands in for the
//! emulator: it moves the manual clock, polls the timers and takes interrupts.

use super::tests::*;
use super::*;
use crate::irqchip::clock::ManualClock;
use crate::irqchip::lapic::reg;

const HZ: u64 = 250;
const LATCH: u64 = (1_193_182 + HZ / 2) / HZ;
const MS: u64 = 1_000_000;

/// Runs vCPU `cpu` from the clock's current reading to `until_ns` in steps of `step_ns`,
/// taking every interrupt as soon as it is pending and passing its vector to `handler`.
fn run(
    c: &SwIrqChip,
    clock: &ManualClock,
    cpu: usize,
    until_ns: u64,
    step_ns: u64,
    mut handler: impl FnMut(&SwIrqChip, u8),
) {
    let mut t = clock.now_ns();
    while t < until_ns {
        t = (t + step_ns).min(until_ns);
        clock.set_ns(t);
        c.poll_timers(cpu);
        while c.interrupt_pending(cpu) {
            let vector = c.acknowledge(cpu).expect("pending interrupt has a vector");
            handler(c, vector);
        }
    }
}

fn ioapic_route(c: &SwIrqChip, pin: u8, low: u32, dest: u8) {
    ioapic_w(c, 0x11 + 2 * pin, u32::from(dest) << 24);
    ioapic_w(c, 0x10 + 2 * pin, low);
}

#[test]
fn linux_6_1_boot_sequence() {
    let (c, clock) = chip(2);

    // init_8259A(0) and the PIT as periodic clock event (mode 2, HZ = 250).
    init_pic_linux(&c);
    outb(&c, 0x21, 0xfb);
    outb(&c, 0x43, 0x34);
    outb(&c, 0x40, (LATCH & 0xff) as u8);
    outb(&c, 0x40, (LATCH >> 8) as u8);
    outb(&c, 0x21, 0xfa); // request_irq(0): unmask IRQ0

    // 100 ms of early boot: ticks arrive through the PIC and the BSP's virtual wire.
    let mut jiffies = 0u64;
    run(&c, &clock, 0, 100 * MS, 20_000, |c, v| {
        assert_eq!(v, 0x30, "only the timer is unmasked");
        jiffies += 1;
        outb(c, 0x20, 0x20);
    });
    // LATCH = 4773 ticks is 4.0002 ms: the 25th tick lands just after 100 ms.
    assert_eq!(jiffies, 24);

    // pit_calibrate_tsc(latch for 10 ms): gate up, ch2 mode 0, spin on port 0x61 bit 5.
    let latch = 1_193_182 / 100;
    let v = inb(&c, 0x61);
    outb(&c, 0x61, (v & !0x02) | 0x01);
    outb(&c, 0x43, 0xb0);
    outb(&c, 0x42, (latch & 0xff) as u8);
    outb(&c, 0x42, (latch >> 8) as u8);
    let tsc_start = c.tsc_now();
    let mut loops = 0;
    while inb(&c, 0x61) & 0x20 == 0 {
        clock.advance(Duration::from_nanos(700));
        loops += 1;
    }
    let tsc_delta = c.tsc_now() - tsc_start;
    assert!(loops > 1000, "pit_calibrate_tsc needs loopmin iterations");
    let expected = TSC_HZ / 100;
    assert!(
        tsc_delta.abs_diff(expected) < expected / 1000,
        "TSC calibrated to {tsc_delta}, expected {expected}"
    );

    // setup_local_APIC on the BSP: flat logical ID, enable, LVT0 stays ExtINT (unmasked at
    // reset, so Linux keeps the virtual wire), ESR cleared.
    lapic_w(&c, 0, reg::DFR, 0xffff_ffff);
    lapic_w(&c, 0, reg::LDR, 0x0100_0000);
    lapic_w(&c, 0, reg::TPR, 0);
    lapic_w(&c, 0, reg::SVR, 0x1ff);
    let lvt0 = lapic_r(&c, 0, reg::LVT_LINT0);
    assert_eq!(lvt0 & (1 << 16), 0);
    lapic_w(&c, 0, reg::LVT_LINT0, 0x700);
    lapic_w(&c, 0, reg::LVT_LINT1, 0x400); // NMI
    lapic_w(&c, 0, reg::ESR, 0);
    lapic_w(&c, 0, reg::ESR, 0);
    assert_eq!(lapic_r(&c, 0, reg::ESR), 0);

    // setup_IO_APIC: ISA IRQ0 on pin 2 (MADT override), logical destination CPU 0.
    ioapic_route(&c, 2, 0x30 | (1 << 11), 0x01);
    // check_timer: mask IRQ0 on the PIC, mask the virtual wire, init_8259A(1) (auto-EOI).
    outb(&c, 0x21, 0xfb);
    lapic_w(&c, 0, reg::LVT_LINT0, 0x1_0700);
    init_pic_linux(&c);
    outb(&c, 0x20, 0x11);
    outb(&c, 0x21, 0x30);
    outb(&c, 0x21, 0x04);
    outb(&c, 0x21, 0x03);
    outb(&c, 0x21, 0xfb);
    // timer_irq_works: jiffies must move more than 4 ticks in the delay loop.
    let start = clock.now_ns();
    let mut ticks = 0u64;
    run(&c, &clock, 0, start + 40 * MS, 10_000, |c, v| {
        assert_eq!(v, 0x30);
        ticks += 1;
        lapic_w(c, 0, reg::EOI, 0);
    });
    assert!(ticks > 4, "timer through IOAPIC pin 2: {ticks} ticks");
    assert!(
        ticks >= 9,
        "40 ms at HZ=250 is 10 ticks, give or take the phase: {ticks}"
    );

    // The TSC-deadline timer takes over; the PIT is shut down (mode 0, count 0).
    outb(&c, 0x43, 0x30);
    outb(&c, 0x40, 0);
    outb(&c, 0x40, 0);
    lapic_w(&c, 0, reg::LVT_TIMER, (2 << 17) | 0xec);
    let tick_tsc = TSC_HZ / HZ;
    c.set_tsc_deadline(0, c.tsc_now() + tick_tsc);
    let start = clock.now_ns();
    let mut lapic_ticks = 0;
    let mut pit_ticks = 0;
    run(&c, &clock, 0, start + 100 * MS, 50_000, |c, v| {
        match v {
            0xec => {
                lapic_ticks += 1;
                c.set_tsc_deadline(0, c.tsc_now() + tick_tsc);
            }
            0x30 => pit_ticks += 1,
            other => panic!("unexpected vector {other:#x}"),
        }
        lapic_w(c, 0, reg::EOI, 0);
    });
    assert!((24..=25).contains(&lapic_ticks), "{lapic_ticks}");
    assert_eq!(
        pit_ticks, 1,
        "the shut-down PIT fires once at terminal count"
    );
    assert_eq!(c.next_deadline_ns(1), None, "nothing left for the idle AP");

    // AP bring-up (wakeup_secondary_cpu_via_init): INIT assert/de-assert, SIPI, SIPI.
    lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
    lapic_w(&c, 0, reg::ICR_LOW, 0xc500);
    lapic_w(&c, 0, reg::ICR_LOW, 0x8500);
    assert_eq!(c.wait(1, None), WakeReason::Startup);
    assert_eq!(c.take_startup_event(1), Some(StartupEvent::Init));
    for _ in 0..2 {
        lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
        lapic_w(&c, 0, reg::ICR_LOW, 0x0600 | 0x9a);
        assert_eq!(lapic_r(&c, 0, reg::ICR_LOW) & (1 << 12), 0, "ICR idle");
    }
    // The AP was waiting for SIPI: it takes the first; the second is ignored by the CPU.
    assert_eq!(c.take_startup_event(1), Some(StartupEvent::Sipi(0x9a)));
    // start_secondary: the AP sets up its APIC, LINT0 masked ExtINT.
    lapic_w(&c, 1, reg::LDR, 0x0200_0000);
    lapic_w(&c, 1, reg::SVR, 0x1ff);
    lapic_w(&c, 1, reg::LVT_LINT0, 0x1_0700);
    assert_eq!(c.apic_base(1) & (1 << 8), 0, "the AP is not the BSP");

    // Reschedule IPI BSP -> AP, and a call-function IPI to all but self from the AP.
    lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
    lapic_w(&c, 0, reg::ICR_LOW, 0xfd);
    assert!(c.interrupt_pending(1) && !c.interrupt_pending(0));
    assert_eq!(c.acknowledge(1), Some(0xfd));
    lapic_w(&c, 1, reg::EOI, 0);
    lapic_w(&c, 1, reg::ICR_LOW, (3 << 18) | 0xfb);
    assert_eq!(c.acknowledge(0), Some(0xfb));
    lapic_w(&c, 0, reg::EOI, 0);

    // A PCI INTx line (GSI 16, level, active low) for a device bound to the AP.
    ioapic_route(&c, 16, 0x41 | (1 << 11) | (1 << 13) | (1 << 15), 0x02);
    c.set_level(16, true);
    assert_eq!(c.acknowledge(1), Some(0x41));
    // The handler has not silenced the device yet: the EOI brings the interrupt back.
    lapic_w(&c, 1, reg::EOI, 0);
    assert_eq!(c.acknowledge(1), Some(0x41));
    c.set_level(16, false);
    lapic_w(&c, 1, reg::EOI, 0);
    assert!(!c.interrupt_pending(1));
    assert!(!c.interrupt_pending(0));
}
