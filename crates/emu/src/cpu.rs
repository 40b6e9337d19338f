//! The vCPU: architectural state, the run loop and register access.

use std::collections::HashSet;
use std::sync::Arc;

use iced_x86::Register;
use vm_memory::GuestMemoryMmap;

use crate::decode_cache::{Block, BlockCache};
use crate::exceptions::Fault;
use crate::exec::fast::Kind;
use crate::flags::{self, Flags};
use crate::memory::GuestRam;
use crate::msr::Msrs;
use crate::platform::Platform;
use crate::state::{CpuRegs, FpuState, SegmentState, TableState};
use crate::tlb::Tlb;

pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_EM: u64 = 1 << 2;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_OSFXSR: u64 = 1 << 9;
pub const CR4_OSXSAVE: u64 = 1 << 18;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// Why `Cpu::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `budget` instructions ran; call again.
    BudgetExhausted,
    /// HLT with nothing to do: sleep until `Platform::interrupt_pending` may be true, then
    /// call `run` again.
    Halted,
    /// Triple fault (or an equivalent unrecoverable state): the machine resets or stops.
    Shutdown,
}

/// One x86-64 vCPU of the software engine.
pub struct Cpu {
    pub(crate) gpr: [u64; 16],
    pub(crate) rip: u64,
    pub(crate) flags: Flags,
    pub(crate) seg: [SegmentState; 6],
    pub(crate) ldtr: SegmentState,
    pub(crate) tr: SegmentState,
    pub(crate) gdtr: TableState,
    pub(crate) idtr: TableState,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) efer: u64,
    pub(crate) dr: [u64; 8],
    pub(crate) msr: Msrs,
    /// What the debug registers arm (see `debug`).
    pub(crate) dbg: crate::debug::DebugState,
    /// This vCPU's CPUID table (see `cpuid`).
    pub(crate) cpuid: Arc<[crate::cpuid::CpuidLeaf]>,
    /// The VEX instruction sets `cpuid` offers (looked up once per table, not per
    /// instruction).
    pub(crate) vex_offer: crate::sse::VexOffer,
    /// The paging/protection features that table offers.
    pub(crate) feat: crate::protect::Features,
    /// PKRU and IA32_PKRS.
    pub(crate) keys: crate::protect::Keys,
    pub(crate) fpu: FpuState,
    pub(crate) halted: bool,
    /// Interrupts are inhibited until after the next instruction (STI, MOV SS, POP SS).
    pub(crate) shadow: bool,
    /// NMI delivery state (see `interrupts.rs`: blocked until the next IRET, one latched).
    pub(crate) nmi: crate::interrupts::NmiState,
    /// Current privilege level.
    pub(crate) cpl: u8,
    /// Code size of the current CS: 16, 32 or 64.
    pub(crate) bitness: u32,
    pub(crate) ram: GuestRam,
    pub(crate) tlb: Tlb,
    pub(crate) cache: BlockCache,
    pub(crate) icount: u64,
    /// RIP after the executing instruction (branches overwrite it).
    pub(crate) next_rip: u64,
    /// Leave the current block after this instruction (mode change, SMC, interrupt window).
    pub(crate) block_end: bool,
    /// Set by a triple fault; `run` keeps returning `Exit::Shutdown` until `set_regs`.
    pub(crate) shutdown: bool,
    pub(crate) logged_ud: HashSet<u64>,
}

impl Cpu {
    /// A vCPU over `mem` with its own code-version table (single-vCPU VMs, tests).
    pub fn new(mem: &GuestMemoryMmap) -> Self {
        Self::with_ram(GuestRam::new(mem))
    }

    /// A vCPU sharing `ram` (and so the code-version table) with the VM's other vCPUs.
    pub fn with_ram(ram: GuestRam) -> Self {
        let mut cpu = Cpu {
            gpr: [0; 16],
            rip: 0,
            flags: Flags::default(),
            seg: [SegmentState::default(); 6],
            ldtr: SegmentState::default(),
            tr: SegmentState::default(),
            gdtr: TableState::default(),
            idtr: TableState::default(),
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr: [0; 8],
            msr: Msrs::default(),
            dbg: Default::default(),
            cpuid: crate::cpuid::supported().into(),
            vex_offer: crate::sse::VexOffer::of(&crate::cpuid::supported()),
            feat: crate::protect::Features::from_cpuid(&crate::cpuid::supported()),
            keys: crate::protect::Keys::default(),
            fpu: FpuState::default(),
            halted: false,
            shadow: false,
            nmi: crate::interrupts::NmiState::default(),
            cpl: 0,
            bitness: 16,
            ram,
            tlb: Tlb::default(),
            cache: BlockCache::default(),
            icount: 0,
            next_rip: 0,
            block_end: false,
            shutdown: false,
            logged_ud: HashSet::new(),
        };
        cpu.set_regs(&CpuRegs::reset());
        cpu
    }

    /// The guest RAM view (clone it for the other vCPUs of the same VM).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Instructions executed so far.
    pub fn instructions(&self) -> u64 {
        self.icount
    }

    /// Whether the vCPU is waiting in HLT.
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Whether RFLAGS.IF is set (maskable interrupts can be taken), without saving the
    /// whole register state.
    pub fn interrupts_enabled(&self) -> bool {
        self.flags.bits & flags::IF != 0
    }

    /// Gives this vCPU its CPUID table: [`crate::cpuid::supported`] after the platform's
    /// policy (APIC ID, topology, feature edits).
    pub fn set_cpuid(&mut self, table: Vec<crate::cpuid::CpuidLeaf>) {
        self.vex_offer = crate::sse::VexOffer::of(&table);
        self.feat = crate::protect::Features::from_cpuid(&table);
        self.cpuid = table.into();
    }

    /// Sets the vCPU's APIC ID (only APIC ID 0 is the bootstrap processor); CPUID's view
    /// of it comes with the table from [`Cpu::set_cpuid`].
    pub fn set_apic_id(&mut self, id: u8) {
        if id != 0 {
            // Only the bootstrap processor has the BSP flag in IA32_APIC_BASE.
            self.msr.apic_base &= !(1 << 8);
        }
    }

    /// Offset added to `Platform::tsc()` to form the guest TSC (save/restore it with the
    /// register state; a guest write to IA32_TSC changes it).
    pub fn tsc_offset(&self) -> u64 {
        self.msr.tsc_offset
    }

    pub fn set_tsc_offset(&mut self, offset: u64) {
        self.msr.tsc_offset = offset;
    }

    /// The state an application processor starts in after INIT + SIPI with `vector`
    /// (real mode at `vector * 4096`).
    pub fn sipi_state(vector: u8) -> CpuRegs {
        let mut r = CpuRegs::reset();
        r.cs.selector = (vector as u16) << 8;
        r.cs.base = (vector as u64) << 12;
        r.rip = 0;
        r
    }

    /// Saves the register state.
    pub fn regs(&self) -> CpuRegs {
        CpuRegs {
            gpr: self.gpr,
            rip: self.rip,
            rflags: self.flags.get(),
            es: self.seg[ES],
            cs: self.seg[CS],
            ss: self.seg[SS],
            ds: self.seg[DS],
            fs: self.seg[FS],
            gs: self.seg[GS],
            ldt: self.ldtr,
            tr: self.tr,
            gdt: self.gdtr,
            idt: self.idtr,
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            dr: self.dr,
            msrs: self.msr.save(),
            fpu: self.fpu.clone(),
            halted: self.halted,
        }
    }

    /// Loads the register state (drops the TLB and recomputes the mode).
    pub fn set_regs(&mut self, r: &CpuRegs) {
        self.gpr = r.gpr;
        self.rip = r.rip;
        self.flags.set(r.rflags);
        self.seg = [r.es, r.cs, r.ss, r.ds, r.fs, r.gs];
        self.ldtr = r.ldt;
        self.tr = r.tr;
        self.gdtr = r.gdt;
        self.idtr = r.idt;
        self.cr0 = r.cr0;
        self.cr2 = r.cr2;
        self.cr3 = r.cr3;
        self.cr4 = r.cr4;
        self.efer = r.efer;
        self.dr = r.dr;
        self.msr.load(&r.msrs);
        self.fpu = r.fpu.clone();
        self.halted = r.halted;
        self.shadow = false;
        self.nmi = crate::interrupts::NmiState::default();
        self.shutdown = false;
        self.cpl = if self.cr0 & CR0_PE != 0 {
            self.seg[CS].dpl & 3
        } else {
            0
        };
        self.reset_debug_state();
        self.tlb.flush_all();
        // Memory may have been rewritten behind our back (snapshot restore, loaders).
        self.cache.clear();
        self.update_mode();
    }

    /// Recomputes the cached code size after CS, CR0 or EFER changed.
    pub(crate) fn update_mode(&mut self) {
        let cs = &self.seg[CS];
        self.bitness = if self.efer & EFER_LMA != 0 && cs.l {
            64
        } else if self.cr0 & CR0_PE != 0 && cs.db {
            32
        } else {
            16
        };
        self.block_end = true;
    }

    #[inline(always)]
    pub(crate) fn long64(&self) -> bool {
        self.bitness == 64
    }

    pub(crate) fn real_mode(&self) -> bool {
        self.cr0 & CR0_PE == 0
    }

    /// Runs until `budget` instructions have executed, HLT, or shutdown.
    pub fn run(&mut self, io: &mut dyn Platform, budget: u64) -> Exit {
        let target = self.icount.saturating_add(budget);
        loop {
            if self.shutdown {
                return Exit::Shutdown;
            }
            if !self.shadow && self.take_nmi(io) {
                continue;
            }
            if !self.shadow && self.flags.bits & flags::IF != 0 && io.interrupt_pending() {
                if let Some(vector) = io.acknowledge_interrupt() {
                    self.halted = false;
                    if let Err(f) = self.deliver_external(io, vector) {
                        self.handle_fault(io, f);
                    }
                    continue;
                }
            }
            if self.halted {
                return Exit::Halted;
            }
            if self.icount >= target {
                // (A pending interrupt shadow stays for the next call.)
                return Exit::BudgetExhausted;
            }
            // In an interrupt shadow only one instruction runs before the next check.
            let single = std::mem::take(&mut self.shadow);
            // TF, RF, armed breakpoints: one instruction at a time with the debug rules.
            if self.debug_armed() {
                self.step_debug(io);
                continue;
            }
            self.run_block(io, single);
            if self.dbg.tf_at_end {
                self.sysret_single_step(io);
            }
        }
    }

    /// Runs exactly one instruction; returns whether it completed without an exception.
    pub(crate) fn run_one(&mut self, io: &mut dyn Platform) -> bool {
        self.run_block(io, true)
    }

    /// Runs one block (one instruction if `single`); returns whether the last instruction
    /// completed without an exception.
    fn run_block(&mut self, io: &mut dyn Platform, single: bool) -> bool {
        let (block, key) = match self.fetch_block(io) {
            Ok(b) => b,
            Err(f) => {
                self.handle_fault(io, f);
                return false;
            }
        };
        let n = if single { 1 } else { block.steps.len() };
        let mut done = 0;
        for (ins, st) in block.instrs[..n].iter().zip(block.steps[..n].iter()) {
            // A block is a trace: leave it where execution departs from it (a taken
            // conditional branch, or a jump the trace did not follow). The first
            // instruction is at RIP by construction.
            if st.ip != self.rip {
                break;
            }
            self.next_rip = st.next_ip;
            done += 1;
            // Single-stepping (TF, interrupt shadow) may observe the state after any
            // instruction: it takes the generic path, which computes every flag.
            let kind = if single { Kind::Generic } else { st.kind };
            if let Err(f) = self.exec_kind(io, ins, kind, &st.ops) {
                self.icount += done;
                let f = self.stack_segment_fault(ins, f);
                self.handle_fault(io, f);
                self.block_end = false;
                return self.finish_block(block, key, false);
            }
            self.rip = self.next_rip;
            if self.block_end {
                self.block_end = false;
                break;
            }
        }
        self.icount += done;
        self.finish_block(block, key, true)
    }

    #[inline(always)]
    fn finish_block(&mut self, block: Arc<Block>, key: Option<u64>, completed: bool) -> bool {
        if let Some(key) = key {
            self.cache.put_back(key, block);
        }
        completed
    }

    /// A non-canonical address reached through SS (an RSP/RBP-based operand, or the stack
    /// itself) raises #SS(0), not #GP(0). The page walk cannot tell which segment an
    /// address came from, so the fault is reclassified here, off the fast path.
    fn stack_segment_fault(&self, ins: &iced_x86::Instruction, f: Fault) -> Fault {
        let canonical = |a: u64| {
            let top = (a as i64) >> 47;
            top == 0 || top == -1
        };
        if f != crate::exceptions::gp0() || !self.long64() {
            return f;
        }
        let via_ss = (0..ins.op_count()).any(|i| ins.op_kind(i) == iced_x86::OpKind::Memory)
            && ins.memory_segment() == Register::SS
            && !canonical(self.ea(ins));
        let stack = ins.stack_pointer_increment() != 0 && !canonical(self.gpr[4]);
        if via_ss || stack {
            crate::exceptions::ss(0)
        } else {
            f
        }
    }

    /// Delivers an exception raised by an instruction (RIP still points at it). When the
    /// delivery itself faults, the SDM's double-fault table (Vol. 3, 6.15) decides: the
    /// second exception is delivered in turn, or the pair escalates to #DF, and a fault
    /// while delivering #DF shuts the CPU down.
    pub(crate) fn handle_fault(&mut self, io: &mut dyn Platform, f: Fault) {
        self.handle_fault_nested(io, f, 0);
    }

    fn handle_fault_nested(&mut self, io: &mut dyn Platform, f: Fault, depth: u32) {
        self.block_end = true;
        let rip = self.rip;
        let Err(f2) = self.deliver_exception(io, f, rip) else {
            return;
        };
        if f.vector == crate::exceptions::DF || f2.vector == crate::exceptions::DF || depth > 4 {
            self.shutdown = true;
            return;
        }
        /// #DE, #TS, #NP, #SS, #GP.
        fn contributory(v: u8) -> bool {
            matches!(v, 0 | 10..=13)
        }
        let pf = crate::exceptions::PF;
        let double = (contributory(f.vector) && contributory(f2.vector))
            || (f.vector == pf && (f2.vector == pf || contributory(f2.vector)));
        if !double {
            self.handle_fault_nested(io, f2, depth + 1);
            return;
        }
        let df = Fault::with_code(crate::exceptions::DF, 0);
        if self.deliver_exception(io, df, rip).is_err() {
            self.shutdown = true;
        }
    }

    // ---- general-purpose registers by iced register ----

    #[inline(always)]
    pub(crate) fn reg_read(&self, r: Register) -> u64 {
        let n = r as usize;
        match n {
            1..=4 => self.gpr[n - 1] & 0xff,
            5..=8 => (self.gpr[n - 5] >> 8) & 0xff,
            9..=20 => self.gpr[n - 5] & 0xff,
            21..=36 => self.gpr[n - 21] & 0xffff,
            37..=52 => self.gpr[n - 37] & 0xffff_ffff,
            53..=68 => self.gpr[n - 53],
            71..=76 => self.seg[n - 71].selector as u64,
            _ => 0,
        }
    }

    /// Writes a GPR with x86 merge rules (8/16-bit merge, 32-bit zero-extends).
    #[inline(always)]
    pub(crate) fn reg_write(&mut self, r: Register, v: u64) {
        let n = r as usize;
        match n {
            1..=4 => self.gpr[n - 1] = (self.gpr[n - 1] & !0xff) | (v & 0xff),
            5..=8 => self.gpr[n - 5] = (self.gpr[n - 5] & !0xff00) | ((v & 0xff) << 8),
            9..=20 => self.gpr[n - 5] = (self.gpr[n - 5] & !0xff) | (v & 0xff),
            21..=36 => self.gpr[n - 21] = (self.gpr[n - 21] & !0xffff) | (v & 0xffff),
            37..=52 => self.gpr[n - 37] = v & 0xffff_ffff,
            53..=68 => self.gpr[n - 53] = v,
            _ => {}
        }
    }

    #[inline(always)]
    pub(crate) fn set_gpr_sized(&mut self, n: usize, size: usize, v: u64) {
        self.gpr[n] = match size {
            8 => v,
            4 => v & 0xffff_ffff,
            _ => (self.gpr[n] & !flags::mask(size)) | (v & flags::mask(size)),
        };
    }

    /// Logs an unimplemented or invalid instruction once per RIP, and returns #UD.
    pub(crate) fn unimplemented(&mut self, ins: &iced_x86::Instruction) -> Fault {
        let lin = self.seg[CS].base.wrapping_add(self.rip);
        if self.logged_ud.len() < 4096 && self.logged_ud.insert(lin) {
            let mut bytes = [0u8; 16];
            let n = ins.len().min(15);
            for (i, b) in bytes.iter_mut().enumerate().take(n) {
                *b = self.peek_code_byte(lin.wrapping_add(i as u64)).unwrap_or(0);
            }
            tracing::warn!(
                "emu: #UD at rip {:#x} ({:?}, {} bit): bytes {:02x?}",
                self.rip,
                ins.code(),
                self.bitness,
                &bytes[..n.max(1)]
            );
        }
        crate::exceptions::ud()
    }
}
