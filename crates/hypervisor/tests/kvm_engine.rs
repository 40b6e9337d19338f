//! The KVM engine against the real `/dev/kvm`, with tiny guests assembled here.
//!
//! Each test writes a GDT, an IDT and identity page tables (4 GiB in 2 MiB pages) into guest
//! memory itself, starts the vCPU directly in 64-bit mode, and checks what the devices (an
//! [`IoHandler`] that records every access) and the VMM (the [`VmExit`]s) see. Tests skip
//! with a printed reason when `/dev/kvm` cannot be used.
//!
//! PVM deviations found on the development machines (PVM host module, see
//! `shared/KVM-HERE.md`) are noted at the tests they affect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use arch::regs::{cr0, cr4, efer, CpuState, DescriptorTable, Segment, RFLAGS_RESERVED};
use hypervisor::kvm::{KvmHypervisor, KvmVm};
use hypervisor::{ExitReason, IoHandler, Kicker, Vcpu, Vm, VmExit};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RAM_SIZE: usize = 4 << 20;
const GDT: u64 = 0x500;
const IDT: u64 = 0x1000;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
const CODE: u64 = 0x10000;
const STACK_TOP: u64 = 0x80000;
const MMIO_ADDR: u64 = 0xd000_0000;
const TIMEOUT: Duration = Duration::from_secs(20);

struct Guest {
    hv: KvmHypervisor,
    vm: KvmVm,
    mem: GuestMemoryMmap,
}

/// A VM with the boot structures written, or `None` (and a printed reason) without KVM.
fn guest(cpus: u8) -> Option<Guest> {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("skipped: /dev/kvm not available");
        return None;
    }
    let hv = match KvmHypervisor::new() {
        Ok(hv) => hv,
        Err(e) => {
            println!("skipped: /dev/kvm not usable: {e}");
            return None;
        }
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE)]).unwrap();
    // GDT: null, 64-bit code (0x08), data (0x10).
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
        .iter()
        .enumerate()
    {
        mem.write_obj(*d, GuestAddress(GDT + 8 * i as u64)).unwrap();
    }
    // Identity map of the first 4 GiB with 2 MiB pages.
    mem.write_obj(PDPT | 3, GuestAddress(PML4)).unwrap();
    for i in 0..4u64 {
        mem.write_obj((PD + i * 0x1000) | 3, GuestAddress(PDPT + i * 8))
            .unwrap();
        for j in 0..512u64 {
            let addr = ((i << 30) | (j << 21)) | 0x83;
            mem.write_obj(addr, GuestAddress(PD + i * 0x1000 + j * 8))
                .unwrap();
        }
    }
    let vm = hv.create_vm(&mem, cpus).unwrap();
    Some(Guest { hv, vm, mem })
}

/// 64-bit mode at `rip` with paging on, IDT at `IDT` (limit `idt_limit`), interrupts off.
fn long_mode(rip: u64, stack: u64, idt_limit: u16) -> CpuState {
    let code = Segment {
        selector: 0x08,
        base: 0,
        limit: 0xffff_ffff,
        type_: 0xb,
        present: true,
        s: true,
        l: true,
        g: true,
        ..Default::default()
    };
    let data = Segment {
        selector: 0x10,
        type_: 0x3,
        l: false,
        db: true,
        ..code
    };
    let mut gpr = [0; 16];
    gpr[arch::regs::RSP] = stack;
    CpuState {
        gpr,
        rip,
        rflags: RFLAGS_RESERVED,
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            selector: 0,
            limit: 0xffff,
            type_: 0xb,
            present: true,
            ..Default::default()
        },
        ldt: Segment {
            type_: 0x2,
            present: true,
            limit: 0xffff,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: GDT,
            limit: 3 * 8 - 1,
        },
        idt: DescriptorTable {
            base: IDT,
            limit: idt_limit,
        },
        cr0: cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::PG,
        cr3: PML4,
        cr4: cr4::PAE,
        efer: efer::LME | efer::LMA,
        ..Default::default()
    }
}

fn assemble(at: u64, build: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    build(&mut a);
    a.assemble(at).unwrap()
}

fn load(mem: &GuestMemoryMmap, at: u64, code: &[u8]) {
    mem.write_slice(code, GuestAddress(at)).unwrap();
}

/// Point IDT vector `vector` at `handler` (64-bit interrupt gate, CS 0x08).
fn set_gate(mem: &GuestMemoryMmap, vector: u64, handler: u64) {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    mem.write_obj(low, GuestAddress(IDT + vector * 16)).unwrap();
    mem.write_obj(high, GuestAddress(IDT + vector * 16 + 8))
        .unwrap();
}

/// Guest code: program both 8259s (master vectors 0x20.., slave 0x28..) with only master
/// IRQ `irq` unmasked.
fn init_pics(a: &mut CodeAssembler, irq: u8) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1)] {
        a.mov(al, v).unwrap();
        a.out(port, al).unwrap();
    }
    for (port, v) in [(0xa0, 0x11), (0xa1, 0x28), (0xa1, 2), (0xa1, 1)] {
        a.mov(al, v).unwrap();
        a.out(port, al).unwrap();
    }
    a.mov(al, u32::from(!(1u8 << irq))).unwrap();
    a.out(0x21, al).unwrap();
    a.mov(al, 0xff).unwrap();
    a.out(0xa1, al).unwrap();
}

/// An interrupt handler at `at` that writes 0x99 to port 0x514 and sends the master PIC
/// an EOI.
fn load_pic_marker_handler(mem: &GuestMemoryMmap, at: u64) {
    load(
        mem,
        at,
        &assemble(at, |a| {
            a.push(rax).unwrap();
            a.push(rdx).unwrap();
            a.mov(dx, 0x514).unwrap();
            a.mov(al, 0x99).unwrap();
            a.out(dx, al).unwrap();
            a.mov(al, 0x20).unwrap(); // EOI to the master PIC
            a.out(0x20, al).unwrap();
            a.pop(rdx).unwrap();
            a.pop(rax).unwrap();
            a.iretq().unwrap();
        }),
    );
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Out(u16, Vec<u8>),
    In(u16, usize),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
}

/// Records every access; reads return `value`'s low bytes.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<Access>>,
    value: u64,
}

impl Recorder {
    fn with_value(value: u64) -> Self {
        Recorder {
            value,
            ..Default::default()
        }
    }
    fn log(&self) -> Vec<Access> {
        self.log.lock().unwrap().clone()
    }
    fn outs(&self) -> Vec<Access> {
        self.log()
            .into_iter()
            .filter(|a| matches!(a, Access::Out(..)))
            .collect()
    }
    fn fill(&self, data: &mut [u8]) {
        let bytes = self.value.to_le_bytes();
        for (d, b) in data.iter_mut().zip(bytes.iter().cycle()) {
            *d = *b;
        }
    }
}

impl IoHandler for Recorder {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.log.lock().unwrap().push(Access::In(port, data.len()));
        self.fill(data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::Out(port, data.to_vec()));
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::MmioRead(addr, data.len()));
        self.fill(data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::MmioWrite(addr, data.to_vec()));
    }
}

/// Kicks the given vCPUs after `after`, unless dropped first: no test can hang.
struct Watchdog {
    cancel: Arc<AtomicBool>,
}

impl Watchdog {
    fn new(kickers: Vec<Arc<dyn Kicker>>, after: Duration) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < after {
                if c.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            // Keep kicking: one kick could land between two runs of a loop that ignores it.
            // If kicks do not work at all, end the test process instead of hanging CI.
            let kicking = Instant::now();
            while !c.load(Ordering::SeqCst) {
                for k in &kickers {
                    k.kick();
                }
                if kicking.elapsed() > after {
                    eprintln!("watchdog: kicks did not stop the vCPU; aborting");
                    std::process::abort();
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog { cancel }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Run until `done` holds after a port/MMIO exit, or until any other exit (returned).
fn run_until(vcpu: &mut dyn Vcpu, io: &Recorder, done: impl Fn(&Recorder) -> bool) -> VmExit {
    let _dog = Watchdog::new(vec![vcpu.kicker()], TIMEOUT);
    loop {
        match vcpu.run(io).unwrap() {
            VmExit::Io if !done(io) => continue,
            exit => return exit,
        }
    }
}

fn out(port: u16, bytes: &[u8]) -> Access {
    Access::Out(port, bytes.to_vec())
}

#[test]
fn out_reaches_the_io_handler() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(dx, 0x3f8).unwrap();
            a.mov(al, 0x42).unwrap();
            a.out(dx, al).unwrap();
            a.mov(dx, 0x510).unwrap();
            a.mov(eax, 0x1234_5678).unwrap();
            a.out(dx, eax).unwrap();
            a.mov(ax, 0xbeefu32 as i32).unwrap();
            a.out(0x80, ax).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    let exit = run_until(vcpu.as_mut(), &io, |io| io.log().len() >= 3);
    assert_eq!(exit, VmExit::Io);
    assert_eq!(
        io.log(),
        vec![
            out(0x3f8, &[0x42]),
            out(0x510, &[0x78, 0x56, 0x34, 0x12]),
            out(0x80, &[0xef, 0xbe]),
        ]
    );
    assert_eq!(vcpu.counters().get(ExitReason::PioWrite), 3);
    assert_eq!(vcpu.counters().get(ExitReason::PioRead), 0);
}

#[test]
fn in_returns_the_handlers_value_to_the_guest() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(dx, 0x511).unwrap();
            a.in_(eax, dx).unwrap();
            a.mov(ebx, eax).unwrap();
            a.in_(al, dx).unwrap();
            a.mov(dx, 0x512).unwrap();
            a.out(dx, al).unwrap();
            a.mov(eax, ebx).unwrap();
            a.out(dx, eax).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::with_value(0xa1b2_c3d4);
    let exit = run_until(vcpu.as_mut(), &io, |io| io.outs().len() >= 2);
    assert_eq!(exit, VmExit::Io);
    assert_eq!(
        io.log(),
        vec![
            Access::In(0x511, 4),
            Access::In(0x511, 1),
            out(0x512, &[0xd4]),
            out(0x512, &[0xd4, 0xc3, 0xb2, 0xa1]),
        ]
    );
    assert_eq!(vcpu.counters().get(ExitReason::PioRead), 2);
    // The value also reached the guest's registers.
    let state = vcpu.state().unwrap();
    assert_eq!(state.gpr[arch::regs::RBX], 0xa1b2_c3d4);
}

#[test]
fn mmio_outside_ram_reaches_the_io_handler() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(rax, MMIO_ADDR).unwrap();
            a.mov(dword_ptr(rax), 0xdead_beefu32).unwrap();
            a.mov(ebx, dword_ptr(rax + 8)).unwrap();
            a.mov(dx, 0x513).unwrap();
            a.mov(eax, ebx).unwrap();
            a.out(dx, eax).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::with_value(0x1122_3344);
    let exit = run_until(vcpu.as_mut(), &io, |io| !io.outs().is_empty());
    assert_eq!(exit, VmExit::Io);
    assert_eq!(
        io.log(),
        vec![
            Access::MmioWrite(MMIO_ADDR, vec![0xef, 0xbe, 0xad, 0xde]),
            Access::MmioRead(MMIO_ADDR + 8, 4),
            out(0x513, &[0x44, 0x33, 0x22, 0x11]),
        ]
    );
    let c = vcpu.counters();
    assert_eq!(
        (c.get(ExitReason::MmioWrite), c.get(ExitReason::MmioRead)),
        (1, 1)
    );
}

/// With the in-kernel irqchip, KVM (VMX/SVM and PVM alike) handles HLT itself: the vCPU
/// sleeps inside `KVM_RUN` until an interrupt, and `cli; hlt` sleeps until a kick. So the VMM
/// never sees `VmExit::Hlt` here; it sees `Interrupted` when it kicks, with RIP past the HLT.
#[test]
fn hlt_with_interrupts_off_sleeps_until_kicked() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.cli().unwrap();
            a.hlt().unwrap();
            a.mov(dx, 0x3f8).unwrap();
            a.out(dx, al).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    let start = Instant::now();
    let _dog = Watchdog::new(vec![vcpu.kicker()], Duration::from_millis(300));
    let exit = vcpu.run(&io).unwrap();
    assert_eq!(exit, VmExit::Interrupted);
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "returned before the kick"
    );
    assert!(
        io.log().is_empty(),
        "the guest went past HLT: {:?}",
        io.log()
    );
    assert_eq!(vcpu.state().unwrap().rip, CODE + 2, "RIP is past cli; hlt");
    assert_eq!(vcpu.counters().get(ExitReason::Interrupted), 1);
}

#[test]
fn pit_timer_interrupt_wakes_hlt() {
    let Some(g) = guest(1) else { return };
    const HANDLER: u64 = CODE + 0x800;
    load_pic_marker_handler(&g.mem, HANDLER);
    set_gate(&g.mem, 0x20, HANDLER);
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            init_pics(a, 0);
            // 8254 channel 0, rate generator, 11932 ticks (10 ms).
            a.mov(al, 0x34).unwrap();
            a.out(0x43, al).unwrap();
            a.mov(al, 11932 & 0xff).unwrap();
            a.out(0x40, al).unwrap();
            a.mov(al, 11932 >> 8).unwrap();
            a.out(0x40, al).unwrap();
            a.sti().unwrap();
            let mut again = a.create_label();
            a.set_label(&mut again).unwrap();
            a.hlt().unwrap();
            a.mov(dx, 0x515).unwrap();
            a.mov(al, 0x77).unwrap();
            a.out(dx, al).unwrap();
            a.jmp(again).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0xfff)).unwrap();
    let io = Recorder::default();
    let woke = |io: &Recorder| {
        io.outs()
            .iter()
            .filter(|a| **a == out(0x515, &[0x77]))
            .count()
    };
    let exit = run_until(vcpu.as_mut(), &io, |io| woke(io) >= 2);
    assert_eq!(exit, VmExit::Io, "log so far: {:?}", io.log());
    // The PIC and PIT ports are handled in the kernel: only the markers reach us. Each
    // wake-up follows a run of the handler (another tick may come between its IRET and the
    // wake-up marker, so handler runs can repeat).
    let outs = io.outs();
    assert_eq!(outs[0], out(0x514, &[0x99]), "{outs:?}");
    for (i, a) in outs.iter().enumerate() {
        assert!(
            *a == out(0x514, &[0x99])
                || (*a == out(0x515, &[0x77]) && outs[i - 1] == out(0x514, &[0x99])),
            "{outs:?}"
        );
    }
}

#[test]
fn kick_interrupts_a_running_vcpu_and_is_never_lost() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    let kicker = vcpu.kicker();

    // A kick from another thread while the guest spins.
    for _ in 0..3 {
        let k = kicker.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            k.kick();
        });
        let _dog = Watchdog::new(vec![vcpu.kicker()], TIMEOUT);
        let start = Instant::now();
        assert_eq!(vcpu.run(&io).unwrap(), VmExit::Interrupted);
        assert!(start.elapsed() < TIMEOUT / 2, "the kick itself was lost");
        t.join().unwrap();
    }

    // A kick before `run`: the next run returns at once.
    kicker.kick();
    let _dog = Watchdog::new(vec![vcpu.kicker()], TIMEOUT);
    let start = Instant::now();
    assert_eq!(vcpu.run(&io).unwrap(), VmExit::Interrupted);
    assert!(start.elapsed() < Duration::from_secs(2), "early kick lost");
    assert_eq!(vcpu.state().unwrap().rip, CODE, "guest still in its loop");
    assert_eq!(vcpu.counters().get(ExitReason::Interrupted), 4);
    assert!(io.log().is_empty());
}

/// Kicks landing at arbitrary points (in guest mode, while a port write is handled, between
/// two runs): every single one must make `run` return `Interrupted`.
#[test]
fn every_kick_interrupts_a_guest_busy_with_io() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            let mut again = a.create_label();
            a.mov(dx, 0x518).unwrap();
            a.set_label(&mut again).unwrap();
            a.out(dx, al).unwrap();
            a.mov(ecx, 200).unwrap();
            let mut spin = a.create_label();
            a.set_label(&mut spin).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(spin).unwrap();
            a.jmp(again).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    const KICKS: u32 = 200;
    let kicker = vcpu.kicker();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    let runner = thread::spawn(move || {
        let io = Recorder::default();
        let mut acks = 0;
        while acks < KICKS {
            match vcpu.run(&io).unwrap() {
                VmExit::Io => io.log.lock().unwrap().clear(),
                VmExit::Interrupted => {
                    acks += 1;
                    ack_tx.send(()).unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        vcpu
    });
    for i in 0..KICKS {
        // Vary the moment of the kick relative to the guest's I/O.
        thread::sleep(Duration::from_micros(u64::from(i % 7) * 150));
        kicker.kick();
        if ack_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            eprintln!("kick {i} was lost; aborting");
            std::process::abort();
        }
    }
    let vcpu = runner.join().unwrap();
    assert_eq!(
        vcpu.counters().get(ExitReason::Interrupted),
        u64::from(KICKS)
    );
    assert!(vcpu.counters().get(ExitReason::PioWrite) > 0);
}

/// Wraps a [`Recorder`] and kicks the vCPU from inside its first port read, on the vCPU's
/// own thread, as a device asking the VMM for attention would.
struct KickOnRead {
    inner: Recorder,
    kicker: Mutex<Option<Arc<dyn Kicker>>>,
}

impl IoHandler for KickOnRead {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.inner.pio_read(port, data);
        if let Some(k) = self.kicker.lock().unwrap().take() {
            k.kick();
        }
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.inner.pio_write(port, data);
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.inner.mmio_read(addr, data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.inner.mmio_write(addr, data);
    }
}

/// A kick during a port read: the read still completes into the guest's RAX (KVM finishes
/// it on the next `KVM_RUN`, which then returns at once), and the run after that continues.
#[test]
fn kick_during_port_read_completes_the_read() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(dx, 0x517).unwrap();
            a.in_(eax, dx).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = KickOnRead {
        inner: Recorder::with_value(0x5566_7788),
        kicker: Mutex::new(Some(vcpu.kicker())),
    };
    let _dog = Watchdog::new(vec![vcpu.kicker()], TIMEOUT);
    assert_eq!(vcpu.run(&io).unwrap(), VmExit::Io);
    assert_eq!(vcpu.run(&io).unwrap(), VmExit::Interrupted);
    let state = vcpu.state().unwrap();
    assert_eq!(state.gpr[arch::regs::RAX], 0x5566_7788, "read completed");
    assert_eq!(state.rip, CODE + 5, "past mov dx, in eax");
    assert_eq!(io.inner.log(), vec![Access::In(0x517, 4)]);
}

#[test]
fn two_vcpus_run_at_the_same_time() {
    let Some(g) = guest(2) else { return };
    const FLAG: u64 = 0x7000;
    // Each vCPU writes its id (RDI) to port 0x516. The BSP then waits for the AP's flag in
    // memory, which only a concurrently running AP can set, and writes 0x10.
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            let mut ap = a.create_label();
            let mut spin = a.create_label();
            let mut park = a.create_label();
            a.mov(dx, 0x516).unwrap();
            a.mov(eax, edi).unwrap();
            a.out(dx, al).unwrap();
            a.cmp(edi, 0).unwrap();
            a.jne(ap).unwrap();
            a.set_label(&mut spin).unwrap();
            a.cmp(byte_ptr(FLAG), 1).unwrap();
            a.jne(spin).unwrap();
            a.mov(al, 0x10).unwrap();
            a.out(dx, al).unwrap();
            a.jmp(park).unwrap();
            a.set_label(&mut ap).unwrap();
            a.mov(byte_ptr(FLAG), 1).unwrap();
            a.set_label(&mut park).unwrap();
            a.jmp(park).unwrap();
        }),
    );
    let io = Arc::new(Recorder::default());
    let mut threads = Vec::new();
    let mut kickers = Vec::new();
    for id in 0..2u32 {
        let mut vcpu = g.vm.create_vcpu(id).unwrap();
        let mut state = long_mode(CODE, STACK_TOP - u64::from(id) * 0x1000, 0);
        state.gpr[arch::regs::RDI] = u64::from(id);
        vcpu.set_state(&state).unwrap();
        kickers.push(vcpu.kicker());
        let io = io.clone();
        threads.push(thread::spawn(move || -> Result<(), String> {
            // Run until the test is over and kicks us.
            loop {
                match vcpu.run(io.as_ref()).map_err(|e| e.to_string())? {
                    VmExit::Io => {}
                    VmExit::Interrupted => return Ok(()),
                    other => return Err(format!("vCPU {id}: {other:?}, log {:?}", io.log())),
                }
            }
        }));
    }
    let start = Instant::now();
    while io.outs().len() < 3 && start.elapsed() < TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
    for k in &kickers {
        k.kick();
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let mut outs = io.outs();
    outs.sort_by_key(|a| match a {
        Access::Out(_, data) => data.clone(),
        _ => Vec::new(),
    });
    assert_eq!(
        outs,
        vec![out(0x516, &[0]), out(0x516, &[1]), out(0x516, &[0x10])]
    );
}

/// A #GP with an empty IDT escalates to #DF and then to a triple fault.
#[test]
fn triple_fault_is_shutdown() {
    let Some(g) = guest(1) else { return };
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap(); // not canonical
            a.mov(rbx, qword_ptr(rax)).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    let exit = run_until(vcpu.as_mut(), &io, |_| false);
    assert_eq!(exit, VmExit::Shutdown);
    assert_eq!(vcpu.counters().get(ExitReason::Shutdown), 1);
}

/// PVM's CPL0 emulator stops at `int3` with `KVM_EXIT_INTERNAL_ERROR`; the exit carries RIP
/// and the instruction bytes. On VMX/SVM `int3` raises #BP, which with an empty IDT ends in a
/// triple fault.
#[test]
fn unsupported_instruction_reports_rip_and_bytes() {
    let Some(g) = guest(1) else { return };
    let code = assemble(CODE, |a| {
        a.nop().unwrap();
        a.int3().unwrap();
        a.nop().unwrap();
    });
    load(&g.mem, CODE, &code);
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    let exit = run_until(vcpu.as_mut(), &io, |_| false);
    if !g.hv.is_pvm() {
        assert_eq!(exit, VmExit::Shutdown);
        return;
    }
    match exit {
        VmExit::InternalError { rip, bytes, detail } => {
            println!("PVM: rip {rip:#x} bytes {bytes:02x?}: {detail}");
            assert_eq!(rip, CODE + 1, "{detail}");
            assert_eq!(bytes.len(), 15, "{detail}");
            assert_eq!(&bytes[..2], &[0xcc, 0x90], "{detail}");
            assert!(detail.contains("PVM"), "{detail}");
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert_eq!(vcpu.counters().get(ExitReason::InternalError), 1);
}

#[test]
fn state_round_trips_through_kvm() {
    let Some(g) = guest(1) else { return };
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    let mut want = long_mode(CODE, STACK_TOP, 0xfff);
    for (i, r) in want.gpr.iter_mut().enumerate() {
        *r = 0x0101_0101_0101_0101 * i as u64;
    }
    want.cr8 = 2;
    want.msrs = vec![(arch::msr::MSR_LSTAR, 0xffff_ffff_8100_0000)];
    vcpu.set_state(&want).unwrap();
    let got = vcpu.state().unwrap();
    assert_eq!(got.gpr, want.gpr);
    assert_eq!((got.rip, got.rflags), (want.rip, want.rflags));
    assert_eq!((got.cs, got.ss, got.ds), (want.cs, want.ss, want.ds));
    assert_eq!((got.gdt, got.idt), (want.gdt, want.idt));
    assert_eq!(
        (got.cr0, got.cr3, got.cr4, got.cr8, got.efer),
        (want.cr0, want.cr3, want.cr4, want.cr8, want.efer)
    );
    assert!(
        got.msrs
            .contains(&(arch::msr::MSR_LSTAR, 0xffff_ffff_8100_0000)),
        "{:x?}",
        got.msrs
    );
}

#[test]
fn vcpu_ids_beyond_the_vm_are_refused() {
    let Some(g) = guest(1) else { return };
    assert!(g.vm.create_vcpu(1).is_err());
    println!("{}", g.hv.description());
}

/// A guest in real mode (where the reset state and application processors start).
#[test]
fn real_mode_guest_runs() {
    let Some(g) = guest(1) else { return };
    let code = {
        let mut a = CodeAssembler::new(16).unwrap();
        a.mov(al, 0x55).unwrap();
        a.out(0x80, al).unwrap();
        a.mov(dx, 0x3f8).unwrap();
        a.mov(ax, 0x1234).unwrap();
        a.out(dx, ax).unwrap();
        let mut here = a.create_label();
        a.set_label(&mut here).unwrap();
        a.jmp(here).unwrap();
        a.assemble(0x1000).unwrap()
    };
    load(&g.mem, 0x1000, &code);
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    let mut state = CpuState::reset();
    state.cs.selector = 0;
    state.cs.base = 0;
    state.rip = 0x1000;
    vcpu.set_state(&state).unwrap();
    let io = Recorder::default();
    let exit = run_until(vcpu.as_mut(), &io, |io| io.log().len() >= 2);
    assert_eq!(exit, VmExit::Io);
    assert_eq!(
        io.log(),
        vec![out(0x80, &[0x55]), out(0x3f8, &[0x34, 0x12])]
    );
}

/// A busy wait of some 10^4 instructions: the pause a firmware makes between INIT and
/// STARTUP IPIs.
fn delay(a: &mut CodeAssembler) {
    let mut spin = a.create_label();
    a.mov(ecx, 10_000).unwrap();
    a.set_label(&mut spin).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(spin).unwrap();
}

/// The firmware way to start an AP: the BSP sends INIT and STARTUP IPIs through its
/// in-kernel LAPIC; the AP, never given a state by the VMM, waits inside `KVM_RUN` and
/// starts in real mode at the SIPI vector's page.
#[test]
fn ap_starts_with_init_and_startup_ipis() {
    let Some(g) = guest(2) else { return };
    const TRAMPOLINE: u64 = 0x8000;
    let ap_code = {
        let mut a = CodeAssembler::new(16).unwrap();
        a.mov(dx, 0x519).unwrap();
        a.mov(al, 0xaa).unwrap();
        a.out(dx, al).unwrap();
        let mut here = a.create_label();
        a.set_label(&mut here).unwrap();
        a.jmp(here).unwrap();
        a.assemble(TRAMPOLINE).unwrap()
    };
    load(&g.mem, TRAMPOLINE, &ap_code);
    const APIC: u64 = 0xfee0_0000;
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(rbx, APIC).unwrap();
            a.mov(dword_ptr(rbx + 0xf0), 0x1ff).unwrap(); // SVR: APIC on
            a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap(); // destination: APIC ID 1
            a.mov(dword_ptr(rbx + 0x300), 0x4500).unwrap(); // INIT
            delay(a);
            for _ in 0..2 {
                a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap();
                a.mov(dword_ptr(rbx + 0x300), 0x4600 | (TRAMPOLINE >> 12) as u32)
                    .unwrap(); // STARTUP
                delay(a);
            }
            a.mov(dx, 0x519).unwrap();
            a.mov(al, 0xbb).unwrap();
            a.out(dx, al).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let io = Arc::new(Recorder::default());
    let mut threads = Vec::new();
    let mut kickers = Vec::new();
    // Create both before either runs: an IPI to a vCPU that does not exist yet is lost.
    let mut vcpus: Vec<_> = (0..2u32).map(|id| g.vm.create_vcpu(id).unwrap()).collect();
    vcpus[0].set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    for (id, mut vcpu) in vcpus.into_iter().enumerate() {
        kickers.push(vcpu.kicker());
        let io = io.clone();
        threads.push(thread::spawn(move || -> Result<(), String> {
            loop {
                match vcpu.run(io.as_ref()).map_err(|e| e.to_string())? {
                    VmExit::Io => {}
                    VmExit::Interrupted => return Ok(()),
                    other => return Err(format!("vCPU {id}: {other:?}, log {:?}", io.log())),
                }
            }
        }));
    }
    let start = Instant::now();
    while io.outs().len() < 2 && start.elapsed() < TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
    for k in &kickers {
        k.kick();
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let mut outs = io.outs();
    outs.sort_by_key(|a| match a {
        Access::Out(_, data) => data.clone(),
        _ => Vec::new(),
    });
    assert_eq!(outs, vec![out(0x519, &[0xaa]), out(0x519, &[0xbb])]);
}

/// Devices raise interrupts through the VM's `InterruptSink`: ISA IRQ 4 reaches the guest
/// through the in-kernel PIC, GSI 20 through the in-kernel IOAPIC and the LAPIC.
#[test]
fn interrupt_sink_reaches_pic_and_ioapic() {
    let Some(g) = guest(1) else { return };
    const PIC_HANDLER: u64 = CODE + 0x800;
    const IOAPIC_HANDLER: u64 = CODE + 0xc00;
    const IOAPIC: u64 = 0xfec0_0000;
    const APIC: u64 = 0xfee0_0000;
    const GSI: u32 = 20;
    for (at, vector, eoi_pic) in [(PIC_HANDLER, 0x24, true), (IOAPIC_HANDLER, 0x31, false)] {
        load(
            &g.mem,
            at,
            &assemble(at, |a| {
                a.push(rax).unwrap();
                a.push(rdx).unwrap();
                a.mov(dx, 0x51b).unwrap();
                a.mov(al, vector).unwrap();
                a.out(dx, al).unwrap();
                if eoi_pic {
                    a.mov(al, 0x20).unwrap();
                    a.out(0x20, al).unwrap();
                } else {
                    a.mov(rax, APIC + 0xb0).unwrap();
                    a.mov(dword_ptr(rax), 0).unwrap();
                }
                a.pop(rdx).unwrap();
                a.pop(rax).unwrap();
                a.iretq().unwrap();
            }),
        );
        set_gate(&g.mem, vector as u64, at);
    }
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1)] {
                a.mov(al, v).unwrap();
                a.out(port, al).unwrap();
            }
            a.mov(al, 0xef).unwrap(); // only IRQ 4
            a.out(0x21, al).unwrap();
            a.mov(al, 0xff).unwrap();
            a.out(0xa1, al).unwrap();
            a.mov(rbx, APIC).unwrap();
            a.mov(dword_ptr(rbx + 0xf0), 0x1ff).unwrap(); // SVR: APIC on
            a.mov(rbx, IOAPIC).unwrap();
            // Redirection entry: vector 0x31, fixed, edge, unmasked, to APIC ID 0.
            a.mov(dword_ptr(rbx), 0x10 + 2 * GSI).unwrap();
            a.mov(dword_ptr(rbx + 0x10), 0x31).unwrap();
            a.mov(dword_ptr(rbx), 0x11 + 2 * GSI).unwrap();
            a.mov(dword_ptr(rbx + 0x10), 0).unwrap();
            a.mov(dx, 0x51a).unwrap();
            a.out(dx, al).unwrap(); // ready
            a.sti().unwrap();
            let mut again = a.create_label();
            a.set_label(&mut again).unwrap();
            a.hlt().unwrap();
            a.jmp(again).unwrap();
        }),
    );
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0xfff)).unwrap();
    let kicker = vcpu.kicker();
    let io = Arc::new(Recorder::default());
    let runner = {
        let io = io.clone();
        thread::spawn(move || -> Result<(), String> {
            loop {
                match vcpu.run(io.as_ref()).map_err(|e| e.to_string())? {
                    VmExit::Io => {}
                    VmExit::Interrupted => return Ok(()),
                    other => return Err(format!("{other:?}, log {:?}", io.log())),
                }
            }
        })
    };
    let wait_for = |n: usize| {
        let start = Instant::now();
        while io.outs().len() < n && start.elapsed() < TIMEOUT {
            thread::sleep(Duration::from_millis(5));
        }
    };
    let sink = g.vm.interrupt_sink();
    wait_for(1);
    sink.pulse(4);
    wait_for(2);
    sink.pulse(GSI);
    wait_for(3);
    kicker.kick();
    runner.join().unwrap().unwrap();
    assert_eq!(
        io.outs()[1..],
        [out(0x51b, &[0x24]), out(0x51b, &[0x31])],
        "{:?}",
        io.log()
    );
}

/// KVM keeps the per-vCPU CPUID wirt set: APIC ID, hypervisor bit, KVM signature. (On PVM
/// the guest itself sees the host's CPUID regardless; this checks what KVM was given.)
#[test]
fn each_vcpu_gets_its_own_cpuid() {
    let Some(g) = guest(2) else { return };
    for id in 0..2u32 {
        let vcpu = g.vm.create_kvm_vcpu(id).unwrap();
        let cpuid = vcpu
            .fd()
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let leaf = |f: u32| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == f && e.index == 0)
                .unwrap()
        };
        assert_eq!(leaf(1).ebx >> 24, id, "APIC ID");
        assert_ne!(leaf(1).ecx & (1 << 31), 0, "hypervisor bit");
        let hv = leaf(0x4000_0000);
        let sig: Vec<u8> = [hv.ebx, hv.ecx, hv.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }
}

/// A 32-bit write of the registered value to a registered address signals the eventfd
/// inside KVM (an ioeventfd): no MMIO exit, nothing reaches the [`IoHandler`]; other values
/// still do.
#[test]
fn mmio_kick_signals_the_eventfd_without_an_exit() {
    let Some(g) = guest(1) else { return };
    const NOTIFY: u64 = MMIO_ADDR + 0x50;
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(rax, NOTIFY).unwrap();
            a.mov(dword_ptr(rax), 0u32).unwrap();
            a.mov(dword_ptr(rax), 1u32).unwrap();
            a.mov(dword_ptr(rax), 1u32).unwrap();
            a.mov(dx, 0x513).unwrap();
            a.mov(al, 0x77).unwrap();
            a.out(dx, al).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    assert!(g.vm.register_mmio_kick(NOTIFY, Some(1), &kick).unwrap());
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    run_until(vcpu.as_mut(), &io, |io| !io.outs().is_empty());
    assert_eq!(
        io.log(),
        vec![
            Access::MmioWrite(NOTIFY, vec![0, 0, 0, 0]),
            out(0x513, &[0x77])
        ]
    );
    assert_eq!(kick.read().unwrap(), 2, "both matching writes signalled");
    assert_eq!(vcpu.counters().get(ExitReason::MmioWrite), 1);
}

/// A write to a level irqfd raises the line: the guest's handler runs; its EOI lowers the
/// line and signals the resample fd, and the next write raises it again.
#[test]
fn level_irqfd_interrupts_the_guest_and_resamples_at_eoi() {
    let Some(g) = guest(1) else { return };
    const HANDLER: u64 = CODE + 0x800;
    const GSI: u32 = 5;
    load_pic_marker_handler(&g.mem, HANDLER);
    set_gate(&g.mem, 0x20 + u64::from(GSI), HANDLER);
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            init_pics(a, GSI as u8);
            a.sti().unwrap();
            let mut again = a.create_label();
            a.set_label(&mut again).unwrap();
            a.hlt().unwrap();
            a.jmp(again).unwrap();
        }),
    );
    let trigger = EventFd::new(EFD_NONBLOCK).unwrap();
    let resample = EventFd::new(EFD_NONBLOCK).unwrap();
    assert!(g.vm.register_level_irqfd(GSI, &trigger, &resample).unwrap());
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0xfff)).unwrap();
    let io = Arc::new(Recorder::default());
    let handled = |io: &Recorder| {
        io.outs()
            .iter()
            .filter(|a| **a == out(0x514, &[0x99]))
            .count()
    };
    let vcpu_io = io.clone();
    let runner = thread::spawn(move || {
        let done = run_until(vcpu.as_mut(), &vcpu_io, |io| handled(io) >= 2);
        (done, vcpu)
    });
    let wait_for = |n: usize| {
        let start = Instant::now();
        while handled(&io) < n {
            assert!(
                start.elapsed() < TIMEOUT,
                "handler ran {} times",
                handled(&io)
            );
            thread::sleep(Duration::from_millis(5));
        }
    };
    thread::sleep(Duration::from_millis(50));
    assert_eq!(handled(&io), 0, "an interrupt before the trigger");
    trigger.write(1).unwrap();
    wait_for(1);
    let start = Instant::now();
    let resampled = loop {
        match resample.read() {
            Ok(n) => break n,
            Err(_) if start.elapsed() < TIMEOUT => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no resample after the EOI: {e}"),
        }
    };
    assert_eq!(resampled, 1);
    trigger.write(1).unwrap();
    wait_for(2);
    let (exit, _vcpu) = runner.join().unwrap();
    assert_eq!(exit, VmExit::Io);
}

/// A kick registered without a value takes writes of any size and value (virtio-pci's
/// 16-bit notify writes); once unregistered, the writes reach the [`IoHandler`] again.
#[test]
fn mmio_kick_without_a_value_takes_any_write_until_unregistered() {
    let Some(g) = guest(1) else { return };
    const NOTIFY: u64 = MMIO_ADDR + 0x3000;
    load(
        &g.mem,
        CODE,
        &assemble(CODE, |a| {
            a.mov(rax, NOTIFY).unwrap();
            a.mov(word_ptr(rax), 7u32).unwrap();
            a.mov(dword_ptr(rax), 0x1234u32).unwrap();
            a.mov(dx, 0x513).unwrap();
            a.mov(al, 0x77).unwrap();
            a.out(dx, al).unwrap();
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }),
    );
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    assert!(g.vm.register_mmio_kick(NOTIFY, None, &kick).unwrap());
    let mut vcpu = g.vm.create_vcpu(0).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    run_until(vcpu.as_mut(), &io, |io| !io.outs().is_empty());
    assert_eq!(io.log(), vec![out(0x513, &[0x77])]);
    assert_eq!(kick.read().unwrap(), 2, "both writes signalled");

    g.vm.unregister_mmio_kick(NOTIFY, None, &kick).unwrap();
    vcpu.set_state(&long_mode(CODE, STACK_TOP, 0)).unwrap();
    let io = Recorder::default();
    run_until(vcpu.as_mut(), &io, |io| !io.outs().is_empty());
    assert_eq!(
        io.log(),
        vec![
            Access::MmioWrite(NOTIFY, vec![7, 0]),
            Access::MmioWrite(NOTIFY, vec![0x34, 0x12, 0, 0]),
            out(0x513, &[0x77]),
        ]
    );
    assert!(kick.read().is_err(), "no signal after unregistering");
}
