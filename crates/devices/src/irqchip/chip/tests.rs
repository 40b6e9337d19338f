//! Unit tests of the whole fabric: routing, timers through the chip, waking halted vCPUs.

use super::*;
use crate::irqchip::clock::{ManualClock, MonotonicClock};
use crate::irqchip::lapic::reg;

pub(super) const TSC_HZ: u64 = 1_000_000_000;

pub(super) fn chip(cpus: usize) -> (Arc<SwIrqChip>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let chip = SwIrqChip::new(cpus, TSC_HZ, clock.clone()).unwrap();
    (Arc::new(chip), clock)
}

pub(super) fn lapic_w(c: &SwIrqChip, cpu: usize, off: u64, v: u32) {
    c.lapic_write(cpu, off, &v.to_le_bytes());
}

pub(super) fn lapic_r(c: &SwIrqChip, cpu: usize, off: u64) -> u32 {
    let mut d = [0u8; 4];
    c.lapic_read(cpu, off, &mut d);
    u32::from_le_bytes(d)
}

pub(super) fn ioapic_w(c: &SwIrqChip, reg: u8, v: u32) {
    c.ioapic_write(0, &[reg]);
    c.ioapic_write(0x10, &v.to_le_bytes());
}

pub(super) fn ioapic_r(c: &SwIrqChip, reg: u8) -> u32 {
    c.ioapic_write(0, &[reg]);
    let mut d = [0u8; 4];
    c.ioapic_read(0x10, &mut d);
    u32::from_le_bytes(d)
}

pub(super) fn outb(c: &SwIrqChip, port: u16, v: u8) {
    assert!(c.pio_write(port, &[v]));
}

pub(super) fn inb(c: &SwIrqChip, port: u16) -> u8 {
    let mut d = [0u8];
    assert!(c.pio_read(port, &mut d));
    d[0]
}

/// Software-enable every APIC, flat logical IDs 1 << cpu, LINT0 masked but on the BSP.
pub(super) fn enable_apics(c: &SwIrqChip) {
    for cpu in 0..c.cpu_count() {
        lapic_w(c, cpu, reg::SVR, 0x1ff);
        lapic_w(c, cpu, reg::LDR, (1u32 << cpu) << 24);
    }
}

pub(super) fn init_pic_linux(c: &SwIrqChip) {
    for (port, v) in [
        (0x21, 0xff),
        (0xa1, 0xff),
        (0x20, 0x11),
        (0x21, 0x30),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x38),
        (0xa1, 0x02),
        (0xa1, 0x01),
    ] {
        outb(c, port, v);
    }
}

#[test]
fn rejects_bad_configuration() {
    let clock = Arc::new(ManualClock::new());
    assert_eq!(
        SwIrqChip::new(0, TSC_HZ, clock.clone()).unwrap_err(),
        IrqChipError::CpuCount(0)
    );
    assert_eq!(
        SwIrqChip::new(1, 0, clock).unwrap_err(),
        IrqChipError::TscFrequency
    );
}

#[test]
fn pic_irq_reaches_bsp_through_virtual_wire() {
    let (c, _) = chip(2);
    init_pic_linux(&c);
    outb(&c, 0x21, 0xfa); // unmask IRQ0 and the cascade
    c.pulse(0);
    assert!(c.interrupt_pending(0));
    assert!(!c.interrupt_pending(1), "the AP's LINT0 is masked");
    assert_eq!(c.acknowledge(0), Some(0x30));
    assert!(!c.interrupt_pending(0));
    outb(&c, 0x20, 0x20);
    // Slave line through the cascade.
    outb(&c, 0xa1, 0xfb); // unmask IRQ10
    c.set_level(10, true);
    assert_eq!(c.acknowledge(0), Some(0x3a));
    // Masking LINT0 (as Linux does once the IOAPIC is up) cuts the wire.
    enable_apics(&c);
    lapic_w(&c, 0, reg::LVT_LINT0, 0x1_0700);
    c.pulse(0);
    assert!(!c.interrupt_pending(0));
}

#[test]
fn ioapic_extint_pin_takes_the_vector_from_the_pic() {
    let (c, _) = chip(1);
    init_pic_linux(&c);
    enable_apics(&c);
    lapic_w(&c, 0, reg::LVT_LINT0, 0x1_0700); // no virtual wire
    outb(&c, 0x21, 0xf7); // unmask IRQ3 on the PIC
    ioapic_w(&c, 0x10 + 6, 0x700); // pin 3: ExtINT, physical APIC 0
    c.pulse(3);
    assert!(c.interrupt_pending(0));
    assert_eq!(c.acknowledge(0), Some(0x33), "vector from the PIC's INTA");
    assert!(!c.interrupt_pending(0));
}

#[test]
fn isa_irq0_goes_to_ioapic_pin2_and_to_the_lapic() {
    let (c, _) = chip(2);
    enable_apics(&c);
    lapic_w(&c, 0, reg::LVT_LINT0, 0x1_0700);
    ioapic_w(&c, 0x10 + 4, 0x30); // pin 2 -> vector 0x30, physical APIC 1
    ioapic_w(&c, 0x11 + 4, 0x0100_0000);
    c.pulse(0);
    assert!(!c.interrupt_pending(0));
    assert!(c.interrupt_pending(1));
    assert_eq!(c.acknowledge(1), Some(0x30));
    lapic_w(&c, 1, reg::EOI, 0);
    assert_eq!(lapic_r(&c, 1, reg::ISR + 0x10), 0);
}

#[test]
fn level_triggered_ioapic_line_remote_irr_and_eoi() {
    let (c, _) = chip(2);
    enable_apics(&c);
    // GSI 20: vector 0x51, level, active low, logical destination cpu 1 (LDR bit 1).
    ioapic_w(&c, 0x10 + 40, 0x51 | (1 << 15) | (1 << 13) | (1 << 11));
    ioapic_w(&c, 0x11 + 40, 0x0200_0000);
    c.set_level(20, true);
    assert!(c.interrupt_pending(1));
    assert_eq!(c.acknowledge(1), Some(0x51));
    assert_ne!(ioapic_r(&c, 0x10 + 40) & (1 << 14), 0, "remote IRR");
    assert_eq!(lapic_r(&c, 1, reg::TMR + 0x20), 1 << 17, "TMR marks level");
    // EOI while the device still asserts: delivered again.
    lapic_w(&c, 1, reg::EOI, 0);
    assert!(c.interrupt_pending(1));
    assert_eq!(c.acknowledge(1), Some(0x51));
    // The device deasserts, EOI: remote IRR clears, nothing new.
    c.set_level(20, false);
    lapic_w(&c, 1, reg::EOI, 0);
    assert_eq!(ioapic_r(&c, 0x10 + 40) & (1 << 14), 0);
    assert!(!c.interrupt_pending(1));
}

#[test]
fn lapic_timer_oneshot_via_poll_and_deadline() {
    let (c, clock) = chip(1);
    enable_apics(&c);
    lapic_w(&c, 0, reg::TIMER_DIVIDE, 0xb);
    lapic_w(&c, 0, reg::LVT_TIMER, 0xec);
    lapic_w(&c, 0, reg::TIMER_INITIAL, 500_000); // 500 µs
    assert_eq!(c.next_deadline_ns(0), Some(500_000));
    assert_eq!(
        c.next_deadline(0),
        Some(clock.origin() + Duration::from_micros(500))
    );
    clock.set_ns(499_999);
    assert!(!c.poll_timers(0));
    assert!(!c.interrupt_pending(0));
    clock.set_ns(500_000);
    assert!(
        !c.poll_timers_at(0, 499_999),
        "an older reading is not due yet"
    );
    assert!(c.poll_timers(0));
    assert!(c.interrupt_pending(0));
    assert_eq!(c.acknowledge(0), Some(0xec));
    assert_eq!(c.next_deadline_ns(0), None);
}

#[test]
fn tsc_deadline_through_the_chip() {
    let (c, clock) = chip(1);
    enable_apics(&c);
    lapic_w(&c, 0, reg::LVT_TIMER, (2 << 17) | 0xee);
    clock.set_ns(1_000);
    let tsc = c.tsc_now() + 2_000; // 2 µs at 1 GHz
    c.set_tsc_deadline(0, tsc);
    assert_eq!(c.tsc_deadline(0), tsc);
    clock.set_ns(2_999);
    assert!(!c.poll_timers(0));
    clock.set_ns(3_000);
    assert!(c.poll_timers(0));
    assert_eq!(c.acknowledge(0), Some(0xee));
    assert_eq!(c.tsc_deadline(0), 0);
}

#[test]
fn fixed_ipi_and_init_sipi_between_two_apics() {
    let (c, _) = chip(2);
    enable_apics(&c);
    // Fixed IPI, physical destination 1.
    lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
    lapic_w(&c, 0, reg::ICR_LOW, 0x4000 | 0xfb);
    assert!(c.interrupt_pending(1));
    assert!(!c.interrupt_pending(0));
    assert_eq!(c.acknowledge(1), Some(0xfb));
    lapic_w(&c, 1, reg::EOI, 0);
    // Logical destination (flat, LDR bit 1) and self shorthand.
    lapic_w(&c, 0, reg::ICR_HIGH, 0x0200_0000);
    lapic_w(&c, 0, reg::ICR_LOW, (1 << 11) | 0xfa);
    assert_eq!(c.acknowledge(1), Some(0xfa));
    lapic_w(&c, 1, reg::EOI, 0);
    lapic_w(&c, 0, reg::ICR_LOW, (1 << 18) | 0xf9);
    assert_eq!(c.acknowledge(0), Some(0xf9));
    lapic_w(&c, 0, reg::EOI, 0);
    // Broadcast but self.
    lapic_w(&c, 1, reg::ICR_LOW, (3 << 18) | 0xf8);
    assert!(c.interrupt_pending(0));
    assert!(!c.interrupt_pending(1));
    // Linux's wakeup_secondary_cpu_via_init: INIT assert, INIT de-assert, SIPI, SIPI.
    lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
    lapic_w(&c, 0, reg::ICR_LOW, 0xc500);
    lapic_w(&c, 0, reg::ICR_LOW, 0x8500);
    assert!(c.startup_pending(1));
    assert!(!c.startup_pending(0));
    assert_eq!(c.take_startup_event(1), Some(StartupEvent::Init));
    assert_eq!(lapic_r(&c, 1, reg::SVR), 0xff, "INIT reset the AP's APIC");
    assert!(
        !c.interrupt_pending(1),
        "and dropped its pending interrupts"
    );
    lapic_w(&c, 0, reg::ICR_LOW, 0x0600 | 0x9a);
    assert_eq!(c.wait(1, None), WakeReason::Startup);
    assert_eq!(c.take_startup_event(1), Some(StartupEvent::Sipi(0x9a)));
    assert_eq!(c.take_startup_event(1), None);
    assert!(!c.startup_pending(1));
}

#[test]
fn cr8_is_the_tpr_class() {
    let (c, _) = chip(1);
    enable_apics(&c);
    c.set_cr8(0, 0x9);
    assert_eq!(lapic_r(&c, 0, reg::TPR), 0x90);
    assert_eq!(c.cr8(0), 9);
    lapic_w(&c, 0, reg::ICR_LOW, (1 << 18) | 0x95);
    assert!(!c.interrupt_pending(0), "class 9 is blocked by CR8 = 9");
    c.set_cr8(0, 0);
    assert!(c.interrupt_pending(0), "lowering CR8 unblocks it");
    assert_eq!(c.apic_id(0), Some(0));
}

#[test]
fn lowest_priority_msi_picks_the_idler_cpu() {
    let (c, _) = chip(2);
    enable_apics(&c);
    lapic_w(&c, 0, reg::TPR, 0x40);
    // Logical destination 0x03 (both), lowest priority, vector 0x61.
    assert!(c.send_msi(0xfee0_3004, 0x0161));
    assert!(c.interrupt_pending(1));
    assert!(!c.interrupt_pending(0));
    assert!(!c.send_msi(0x1000, 0x61));
}

#[test]
fn msi_through_the_interrupt_sink_trait() {
    let (c, _) = chip(2);
    enable_apics(&c);
    let sink: &dyn InterruptSink = c.as_ref();
    assert!(sink.supports_msi());
    // Physical destination APIC 1, fixed, vector 0x41: what Linux writes into MSI-X.
    assert!(sink.send_msi(0xfee0_1000, 0x41));
    assert!(c.interrupt_pending(1));
    assert!(!c.interrupt_pending(0));
    assert!(!sink.send_msi(0xdead_0000, 0x41), "not an APIC address");
}

#[test]
fn pit_channel0_interrupts_through_the_chip() {
    let (c, clock) = chip(1);
    init_pic_linux(&c);
    outb(&c, 0x21, 0xfa);
    outb(&c, 0x43, 0x34);
    outb(&c, 0x40, 0xa9); // 1193 = 0x4a9
    outb(&c, 0x40, 0x04);
    let due = c.next_deadline_ns(0).unwrap();
    assert!((due as i64 - 1_000_000).abs() < 1_000, "1 ms, was {due}");
    clock.set_ns(due);
    assert!(c.poll_timers(0));
    assert_eq!(c.acknowledge(0), Some(0x30));
    assert!(c.next_deadline_ns(0).unwrap() > due);
}

#[test]
fn port61_and_wide_port_accesses() {
    let (c, clock) = chip(1);
    outb(&c, 0x61, 0x01);
    outb(&c, 0x43, 0xb0);
    outb(&c, 0x42, 100);
    outb(&c, 0x42, 0);
    assert_eq!(inb(&c, 0x61) & 0x21, 0x01);
    clock.set_ns(100_000);
    assert_eq!(inb(&c, 0x61) & 0x21, 0x21);
    // ELCR as one 16-bit access.
    assert!(c.pio_write(0x4d0, &[0x20, 0x0e]));
    let mut d = [0u8; 2];
    assert!(c.pio_read(0x4d0, &mut d));
    assert_eq!(d, [0x20, 0x0e]);
    let mut d = [0u8; 1];
    assert!(!c.pio_read(0x3f8, &mut d));
    assert!(SwIrqChip::handles_port(0x61) && !SwIrqChip::handles_port(0x60));
}

#[test]
fn snapshot_round_trip_keeps_remaining_timer_time() {
    let (c, clock) = chip(2);
    enable_apics(&c);
    lapic_w(&c, 1, reg::LVT_TIMER, 0xec);
    lapic_w(&c, 1, reg::TIMER_DIVIDE, 0xb);
    lapic_w(&c, 1, reg::TIMER_INITIAL, 1_000);
    clock.set_ns(400);
    let state = c.save_state();
    let json = serde_json::to_string(&state).unwrap();
    let restored: SwIrqChipState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, state);
    let (d, clock2) = chip(2);
    clock2.set_ns(10_000);
    d.restore_state(&restored).unwrap();
    assert_eq!(d.next_deadline_ns(1), Some(10_600));
    assert_eq!(lapic_r(&d, 1, reg::SVR), 0x1ff);
    let (e, _) = chip(1);
    assert!(e.restore_state(&state).is_err());
}

#[test]
fn halted_waiter_is_woken_by_an_interrupt_from_another_thread() {
    let clock = Arc::new(MonotonicClock::new());
    let c = Arc::new(SwIrqChip::new(2, TSC_HZ, clock).unwrap());
    enable_apics(&c);
    ioapic_w(&c, 0x10 + 2 * 5, 0x45);
    ioapic_w(&c, 0x11 + 2 * 5, 0x0100_0000);
    for i in 0..30u64 {
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let reason = c.wait(1, Some(start + Duration::from_secs(10)));
                (reason, start.elapsed())
            })
        };
        let raiser = {
            let c = c.clone();
            std::thread::spawn(move || {
                // Sometimes before, mostly after the waiter went to sleep.
                std::thread::sleep(Duration::from_millis(i % 3));
                c.pulse(5)
            })
        };
        raiser.join().unwrap();
        let (reason, took) = waiter.join().unwrap();
        assert_eq!(reason, WakeReason::Interrupt);
        assert!(took < Duration::from_secs(5), "woken late: {took:?}");
        assert_eq!(c.acknowledge(1), Some(0x45));
        lapic_w(&c, 1, reg::EOI, 0);
    }
}

#[test]
fn waiter_wakes_for_its_timer_and_for_kicks_and_times_out() {
    let clock = Arc::new(MonotonicClock::new());
    let c = Arc::new(SwIrqChip::new(1, TSC_HZ, clock).unwrap());
    enable_apics(&c);
    lapic_w(&c, 0, reg::TIMER_DIVIDE, 0xb);
    lapic_w(&c, 0, reg::LVT_TIMER, 0xec);
    lapic_w(&c, 0, reg::TIMER_INITIAL, 5_000_000); // 5 ms
    let start = Instant::now();
    assert_eq!(c.wait(0, None), WakeReason::Interrupt);
    assert!(start.elapsed() >= Duration::from_millis(4));
    assert_eq!(c.acknowledge(0), Some(0xec));
    // Kick from another thread.
    let kicker = {
        let c = c.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.kick(0);
        })
    };
    assert_eq!(c.wait(0, None), WakeReason::Kicked);
    kicker.join().unwrap();
    // Timeout, and IF=0 ignores a pending interrupt.
    lapic_w(&c, 0, reg::ICR_LOW, (1 << 18) | 0xf0);
    assert!(c.interrupt_pending(0));
    let until = Instant::now() + Duration::from_millis(10);
    assert_eq!(c.wait_with(0, Some(until), false), WakeReason::Timeout);
    assert!(Instant::now() >= until);
}

#[test]
fn hostile_snapshot_values_do_not_panic() {
    let (c, clock) = chip(1);
    let mut state = c.save_state();
    state.pic.master.priority_add = 0xff;
    state.pic.master.irr = 0xff;
    state.pic.master.isr = 0x80;
    state.pic.master.irq_base = 0xff;
    for ch in &mut state.pit.channels {
        ch.count = 0;
        ch.mode = 7;
        ch.rw_mode = 9;
        ch.read_state = 0;
        ch.paused_ticks = Some(u64::MAX);
        ch.load_ns = Some(u64::MAX);
    }
    state.pit.next_irq0_ns = Some(0);
    state.ioapic.redirection = vec![u64::MAX; 40];
    state.ioapic.ioregsel = 0xff;
    state.lapics[0].timer_divide = u32::MAX;
    state.lapics[0].timer_initial = u32::MAX;
    state.lapics[0].lvt_timer = u32::MAX;
    state.lapics[0].timer_deadline_ns = Some(0);
    c.restore_state(&state).unwrap();
    clock.set_ns(u64::MAX / 2);
    c.poll_timers(0);
    for port in [0x20, 0x21, 0x40, 0x41, 0x42, 0x61, 0x4d0] {
        let mut d = [0u8];
        c.pio_read(port, &mut d);
        c.pio_write(port, &[0xff]);
    }
    c.set_level(0, true);
    c.acknowledge(0);
    lapic_r(&c, 0, reg::TIMER_CURRENT);
    ioapic_r(&c, 0x3f);
    c.next_deadline(0);
}

/// Two senders (a device thread on GSI 5 and vCPU 0 sending IPIs) and a halted vCPU 1
/// taking everything: every interrupt arrives, nobody deadlocks, no wake-up is lost (a lost
/// one shows as a 5 s timeout).
#[test]
fn concurrent_device_interrupts_and_ipis_reach_a_halted_vcpu() {
    use std::sync::atomic::AtomicUsize;
    const ROUNDS: usize = 300;
    let clock = Arc::new(MonotonicClock::new());
    let c = Arc::new(SwIrqChip::new(2, TSC_HZ, clock).unwrap());
    enable_apics(&c);
    ioapic_w(&c, 0x10 + 2 * 5, 0x45);
    ioapic_w(&c, 0x11 + 2 * 5, 0x0100_0000);
    let device_seen = Arc::new(AtomicUsize::new(0));
    let ipi_seen = Arc::new(AtomicUsize::new(0));

    let receiver = {
        let (c, device_seen, ipi_seen) = (c.clone(), device_seen.clone(), ipi_seen.clone());
        std::thread::spawn(move || {
            while device_seen.load(Ordering::SeqCst) < ROUNDS
                || ipi_seen.load(Ordering::SeqCst) < ROUNDS
            {
                let until = Instant::now() + Duration::from_secs(5);
                assert_eq!(c.wait(1, Some(until)), WakeReason::Interrupt);
                while let Some(v) = c.acknowledge(1) {
                    match v {
                        0x45 => device_seen.fetch_add(1, Ordering::SeqCst),
                        0xf0 => ipi_seen.fetch_add(1, Ordering::SeqCst),
                        other => panic!("unexpected vector {other:#x}"),
                    };
                    lapic_w(&c, 1, reg::EOI, 0);
                }
            }
        })
    };
    let device = {
        let (c, seen) = (c.clone(), device_seen.clone());
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                while seen.load(Ordering::SeqCst) < round {
                    std::thread::yield_now();
                }
                c.pulse(5);
            }
        })
    };
    let sender = {
        let (c, seen) = (c.clone(), ipi_seen.clone());
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                while seen.load(Ordering::SeqCst) < round {
                    std::thread::yield_now();
                }
                lapic_w(&c, 0, reg::ICR_HIGH, 0x0100_0000);
                lapic_w(&c, 0, reg::ICR_LOW, 0xf0);
            }
        })
    };
    device.join().unwrap();
    sender.join().unwrap();
    receiver.join().unwrap();
    assert_eq!(device_seen.load(Ordering::SeqCst), ROUNDS);
    assert_eq!(ipi_seen.load(Ordering::SeqCst), ROUNDS);
}

#[test]
fn nmi_ipis_reach_their_targets_and_wake_a_halted_cpu() {
    let (c, _clock) = chip(3);
    enable_apics(&c);
    // NMI to CPU 1 by physical ID.
    lapic_w(&c, 0, reg::ICR_HIGH, 1 << 24);
    lapic_w(&c, 0, reg::ICR_LOW, 0x4400);
    assert!(c.nmi_pending(1) && !c.nmi_pending(0) && !c.nmi_pending(2));
    assert!(!c.interrupt_pending(1), "NMIs are not maskable interrupts");
    assert_eq!(
        c.wait_with(1, None, false),
        WakeReason::Nmi,
        "an NMI ends HLT even with IF=0"
    );
    assert!(c.take_nmi(1));
    assert!(!c.take_nmi(1) && !c.nmi_pending(1));
    // Self and all-excluding-self shorthands.
    lapic_w(&c, 2, reg::ICR_LOW, (1 << 18) | 0x400);
    assert!(c.nmi_pending(2) && !c.nmi_pending(0));
    lapic_w(&c, 2, reg::ICR_LOW, (3 << 18) | 0x400);
    assert!(c.take_nmi(0) && c.take_nmi(1) && c.take_nmi(2));
    assert!(!c.take_nmi(2), "all-excluding-self skipped the sender");
    // LINT1 wired as NMI.
    lapic_w(&c, 1, reg::LVT_LINT1, 4 << 8);
    c.assert_lint(1, 1);
    assert!(c.take_nmi(1));
}

#[test]
fn x2apic_msrs_mmio_window_and_ipis_through_the_chip() {
    let (c, _clock) = chip(2);
    let base = 0xfee0_0000;
    assert_eq!(c.lapic_mmio_offset(1, base + 0x30), Some(0x30));
    assert_eq!(c.lapic_msr_read(1, 0x802), None, "#GP in xAPIC mode");
    for cpu in 0..2 {
        let v = c.apic_base(cpu) | (1 << 10);
        assert!(c.set_apic_base(cpu, v));
        assert!(c.lapic_msr_write(cpu, 0x80f, 0x1ff));
    }
    assert_eq!(
        c.lapic_mmio_offset(1, base + 0x30),
        None,
        "no MMIO in x2APIC"
    );
    assert_eq!(c.lapic_msr_read(1, 0x802), Some(1));
    assert!(
        !c.lapic_msr_write(1, 0x802, 5),
        "the x2APIC ID is read-only"
    );
    // Logical cluster 0, member bit 1 = CPU 1.
    assert!(c.lapic_msr_write(0, 0x830, (0x2 << 32) | 0x800 | 0x61));
    assert_eq!(c.acknowledge(1), Some(0x61));
    assert_eq!(c.acknowledge(0), None);
    assert!(c.lapic_msr_write(1, 0x80b, 0), "EOI");
    // Physical broadcast 0xffffffff.
    assert!(c.lapic_msr_write(1, 0x830, (0xffff_ffff << 32) | 0x62));
    assert_eq!(
        (c.acknowledge(0), c.acknowledge(1)),
        (Some(0x62), Some(0x62))
    );
    // Disabled: the page and the MSRs are gone; the chip without x2APIC refuses EXTD.
    assert!(c.set_apic_base(1, 0xfee0_0000));
    assert_eq!(c.lapic_mmio_offset(1, base), None);
    assert_eq!(c.lapic_msr_read(1, 0x803), None);
    let (plain, _clock) = chip(1);
    let plain = Arc::try_unwrap(plain)
        .unwrap()
        .with_apic_base_limits(false, 40);
    assert!(!plain.set_apic_base(0, plain.apic_base(0) | (1 << 10)));
}

#[test]
fn past_tsc_deadline_is_pending_when_the_write_returns() {
    let (c, clock) = chip(1);
    enable_apics(&c);
    lapic_w(&c, 0, reg::LVT_TIMER, (2 << 17) | 0xe9);
    clock.advance(Duration::from_micros(5));
    c.set_tsc_deadline(0, c.tsc_now());
    assert!(c.interrupt_pending(0));
    assert_eq!(c.tsc_deadline(0), 0, "reads 0 once fired");
    assert_eq!(c.acknowledge(0), Some(0xe9));
}
