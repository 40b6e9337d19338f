//! [`SwVcpu`]: one emulated vCPU. `run` executes the guest in slices of [`SLICE`]
//! instructions; between slices it polls timers and kicks, and a halted guest sleeps in the
//! irqchip until something can wake it.
//!
//! Application processors start in the wait-for-SIPI state as on hardware: the BSP's INIT
//! and STARTUP IPIs (through its local APIC) start them in real mode at the SIPI vector.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arch::regs::CpuState;
use devices::irqchip::{StartupEvent, SwIrqChip};

use super::platform::SwPlatform;
use super::state;
use crate::{Error, ExitCounters, ExitReason, IoHandler, Kicker, Vcpu, VmExit};

/// Instructions per slice: bounds the latency of kicks and timer polling.
const SLICE: u64 = 20_000;

/// Wakes one software vCPU: sets its flag and wakes it if it sleeps in the irqchip.
struct SwKicker {
    kicked: AtomicBool,
    chip: Arc<SwIrqChip>,
    cpu: usize,
}

impl Kicker for SwKicker {
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.chip.kick(self.cpu);
    }
}

pub struct SwVcpu {
    id: u32,
    cpu: emu::Cpu,
    chip: Arc<SwIrqChip>,
    counters: Arc<ExitCounters>,
    kicker: Arc<SwKicker>,
    /// An AP that has not received its STARTUP IPI yet.
    waiting_for_sipi: bool,
}

impl SwVcpu {
    pub fn new(
        id: u32,
        ram: emu::GuestRam,
        chip: Arc<SwIrqChip>,
        cpuid: Vec<emu::CpuidLeaf>,
    ) -> SwVcpu {
        let mut cpu = emu::Cpu::with_ram(ram);
        cpu.set_cpuid(cpuid);
        cpu.set_apic_id(id as u8);
        let kicker = Arc::new(SwKicker {
            kicked: AtomicBool::new(false),
            chip: chip.clone(),
            cpu: id as usize,
        });
        SwVcpu {
            id,
            cpu,
            chip,
            counters: Arc::new(ExitCounters::new()),
            kicker,
            waiting_for_sipi: id != 0,
        }
    }

    fn slot(&self) -> usize {
        self.id as usize
    }

    /// Applies a pending INIT or SIPI. Returns true if one was applied.
    fn handle_startup(&mut self) -> bool {
        let Some(ev) = self.chip.take_startup_event(self.slot()) else {
            return false;
        };
        match ev {
            StartupEvent::Init => {
                self.cpu.set_regs(&emu::CpuRegs::reset());
                self.waiting_for_sipi = self.id != 0;
            }
            StartupEvent::Sipi(vector) if self.waiting_for_sipi => {
                let mut regs = emu::CpuRegs::reset();
                regs.cs.selector = u16::from(vector) << 8;
                regs.cs.base = u64::from(vector) << 12;
                regs.rip = 0;
                self.cpu.set_regs(&regs);
                self.waiting_for_sipi = false;
            }
            StartupEvent::Sipi(_) => {}
        }
        true
    }

    fn take_kick(&self) -> bool {
        self.kicker.kicked.swap(false, Ordering::SeqCst)
    }
}

impl Vcpu for SwVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn set_state(&mut self, s: &CpuState) -> Result<(), Error> {
        let regs = state::to_emu(s, self.cpu.regs());
        self.cpu.set_regs(&regs);
        self.chip.set_cr8(self.slot(), s.cr8 & 0xf);
        self.waiting_for_sipi = false;
        Ok(())
    }

    fn state(&mut self) -> Result<CpuState, Error> {
        let mut s = state::from_emu(&self.cpu.regs());
        s.cr8 = self.chip.cr8(self.slot());
        Ok(s)
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VmExit, Error> {
        let slot = self.slot();
        loop {
            if self.take_kick() {
                self.counters.count(ExitReason::Interrupted);
                return Ok(VmExit::Interrupted);
            }
            if self.chip.startup_pending(slot) {
                self.handle_startup();
            }
            if self.waiting_for_sipi {
                self.chip.wait(slot, None);
                continue;
            }
            self.chip.poll_timers(slot);
            let mut platform = SwPlatform {
                io,
                chip: &self.chip,
                cpu: slot,
                counters: &self.counters,
                device_io: false,
            };
            let before = self.cpu.instructions();
            let exit = self.cpu.run(&mut platform, SLICE);
            let device_io = platform.device_io;
            self.counters
                .add_instructions(self.cpu.instructions() - before);
            match exit {
                emu::Exit::BudgetExhausted => {}
                emu::Exit::Halted => {
                    self.counters.count(ExitReason::Hlt);
                    if device_io {
                        return Ok(VmExit::Io);
                    }
                    self.sleep_while_halted();
                    continue;
                }
                emu::Exit::Shutdown => {
                    self.counters.count(ExitReason::Shutdown);
                    return Ok(VmExit::Shutdown);
                }
            }
            if device_io {
                return Ok(VmExit::Io);
            }
        }
    }

    fn kicker(&self) -> Arc<dyn Kicker> {
        self.kicker.clone()
    }

    fn counters(&self) -> Arc<ExitCounters> {
        self.counters.clone()
    }
}

impl SwVcpu {
    /// Sleeps until the halted guest can go on: an interrupt it can take (only if IF=1),
    /// a startup IPI, or a kick. The irqchip fires due timers while it waits.
    fn sleep_while_halted(&mut self) {
        let interrupts_enabled = self.cpu.interrupts_enabled();
        self.chip.wait_with(self.slot(), None, interrupts_enabled);
    }
}
