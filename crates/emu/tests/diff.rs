//! Differential tests: every instruction form (iced `Code`) of the classes the engine
//! implements — integer, SSE-SSE4.2, MMX, x87, and the VEX forms of AVX, AVX2, FMA and
//! F16C — runs with seeded random registers (general, full YMM), flags, MXCSR rounding
//! mode, memory (and x87 state) on the engine and natively on the host CPU; results,
//! flags (minus architecturally undefined ones) and memory must match bit for bit.
//!
//! `EMU_DIFF_CASES` (cases per instruction form, default 40) and `EMU_DIFF_SEED` set the
//! run; a failure prints the seed, the instruction, its register inputs and both states.
//! `EMU_DIFF_VERBOSE` lists the forms of a class that could not be generated.

mod common;

use common::*;
use emu::{Cpu, Exit};
use iced_x86::code_asm::*;
use iced_x86::{
    Code, CpuidFeature, Encoder, Instruction, MemoryOperand, Mnemonic as M, OpCodeOperandKind as K,
    Register,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use vm_memory::{Bytes, GuestAddress};

const BUF: usize = 1024;
const CR4_OSXSAVE: u64 = 1 << 18;

/// The host's memory buffer, aligned for the 32-byte aligned moves.
#[repr(C, align(64))]
struct Aligned([u8; BUF]);
const MEM_OFF: i64 = 256;
const ARITH: u64 = 0x8d5;
const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct St {
    gpr: [u64; 16],
    flags: u64,
    /// MXCSR (loaded before and stored after the instruction; the host's own MXCSR is
    /// saved and restored around the run).
    mxcsr: u64,
    xmm: [u128; 16],
    /// Bits 255:128 of YMM0..15.
    ymm_hi: [u128; 16],
}

/// The power-on MXCSR: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u64 = 0x1f80;

const XMM_OFF: i32 = 144;
const YMM_OFF: i32 = XMM_OFF + 256;
/// Offset of the FXSAVE image in [`XSt`] (after [`St`]).
const FX_OFF: i32 = YMM_OFF + 256;

/// Register state plus the x87/SSE state as an FXSAVE image, for the x87 test.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct XSt {
    st: St,
    fx: [u8; 512],
}

/// An executable buffer with prologue (load registers and flags from *rdi), a 32-byte
/// slot for the instruction under test, and an epilogue (store them back).
struct Native {
    mem: *mut u8,
    slot: usize,
}

impl Native {
    /// With `x87`, the prologue also loads the whole x87 state from the FXSAVE image
    /// after the `St` ([`XSt`]) and the epilogue saves it there and resets the FPU.
    fn new(x87: bool) -> Self {
        // SAFETY: anonymous private mapping, checked for failure.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        let base = mem as u64;
        let pro = asm64(base, |a| {
            a.sub(rsp, 8).unwrap();
            a.stmxcsr(dword_ptr(rsp)).unwrap();
            for r in [rbx, rbp, r12, r13, r14, r15, rdi] {
                a.push(r).unwrap();
            }
            if x87 {
                a.fxrstor64(ptr(rdi + FX_OFF)).unwrap();
            }
            a.mov(rax, qword_ptr(rdi + 128)).unwrap();
            a.push(rax).unwrap();
            a.popfq().unwrap();
            let regs = [
                rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
            ];
            for (i, r) in regs.iter().enumerate() {
                if i == 4 || i == 7 {
                    continue;
                }
                a.mov(*r, qword_ptr(rdi + (i * 8) as i32)).unwrap();
            }
            for (i, x) in XMMS.iter().enumerate() {
                a.movdqu(*x, xmmword_ptr(rdi + XMM_OFF + 16 * i as i32))
                    .unwrap();
            }
            for (i, y) in YMMS.iter().enumerate() {
                a.vinsertf128(*y, *y, xmmword_ptr(rdi + YMM_OFF + 16 * i as i32), 1)
                    .unwrap();
            }
            a.ldmxcsr(dword_ptr(rdi + 136)).unwrap();
            a.mov(rdi, qword_ptr(rdi + 56)).unwrap();
        });
        let slot = pro.len();
        let epi = asm64(base + slot as u64 + 32, |a| {
            a.push(rdi).unwrap();
            a.mov(rdi, qword_ptr(rsp + 8)).unwrap();
            if x87 {
                a.fxsave64(ptr(rdi + FX_OFF)).unwrap();
                a.fninit().unwrap();
            }
            let regs = [
                rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
            ];
            for (i, r) in regs.iter().enumerate() {
                if i == 4 || i == 7 {
                    continue;
                }
                a.mov(qword_ptr(rdi + (i * 8) as i32), *r).unwrap();
            }
            a.pushfq().unwrap();
            a.pop(rax).unwrap();
            a.mov(qword_ptr(rdi + 128), rax).unwrap();
            for (i, x) in XMMS.iter().enumerate() {
                a.movdqu(xmmword_ptr(rdi + XMM_OFF + 16 * i as i32), *x)
                    .unwrap();
            }
            for (i, y) in YMMS.iter().enumerate() {
                a.vextractf128(xmmword_ptr(rdi + YMM_OFF + 16 * i as i32), *y, 1)
                    .unwrap();
            }
            a.stmxcsr(dword_ptr(rdi + 136)).unwrap();
            a.pop(rax).unwrap();
            a.mov(qword_ptr(rdi + 56), rax).unwrap();
            for r in [rdi, r15, r14, r13, r12, rbp, rbx] {
                a.pop(r).unwrap();
            }
            a.ldmxcsr(dword_ptr(rsp)).unwrap();
            a.add(rsp, 8).unwrap();
            // The ABI requires DF=0 on return (the test may have set it); clean upper
            // YMM state keeps the caller's SSE code fast.
            a.cld().unwrap();
            a.vzeroupper().unwrap();
            a.ret().unwrap();
        });
        // SAFETY: the mapping is 4096 bytes; prologue + 32 + epilogue is far smaller.
        unsafe {
            std::ptr::copy_nonoverlapping(pro.as_ptr(), mem as *mut u8, pro.len());
            std::ptr::write_bytes((mem as *mut u8).add(slot), 0x90, 32);
            std::ptr::copy_nonoverlapping(epi.as_ptr(), (mem as *mut u8).add(slot + 32), epi.len());
        }
        Native {
            mem: mem as *mut u8,
            slot,
        }
    }

    fn run_x87(&self, code: &[u8], st: &mut XSt) {
        assert_eq!(std::mem::offset_of!(XSt, fx), FX_OFF as usize);
        self.run_ptr(code, st as *mut XSt as *mut u8);
    }

    fn run(&self, code: &[u8], st: &mut St) {
        self.run_ptr(code, st as *mut St as *mut u8);
    }

    fn run_ptr(&self, code: &[u8], st: *mut u8) {
        assert!(code.len() <= 32);
        // SAFETY: the slot is 32 bytes inside our RWX mapping; the code under test only
        // touches registers and the memory buffer rbx points at (the generator guarantees
        // it), and the prologue/epilogue preserve the callee-saved registers. `st` points
        // at a `St` (or an `XSt`, 16-byte aligned, when the x87 prologue reads and writes
        // its FXSAVE image; the epilogue then leaves the FPU initialized).
        unsafe {
            std::ptr::write_bytes(self.mem.add(self.slot), 0x90, 32);
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.mem.add(self.slot), code.len());
            let f: extern "C" fn(*mut u8) = std::mem::transmute(self.mem);
            f(st);
        }
    }
}

const XMMS: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

const YMMS: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];

#[derive(Clone, Copy, Debug)]
enum Op {
    R(Register),
    Mem,
    Imm(i64),
    /// A VSIB memory operand: base RBX, this vector index register and scale.
    Vsib(Register, u32),
}

fn gpr(size: usize, n: usize) -> Register {
    let base = match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    if size == 1 && n >= 4 {
        // SPL.. are numbered after AH..BH in iced.
        return unsafe_reg(Register::SPL as usize + n - 4);
    }
    unsafe_reg(base as usize + n)
}

fn unsafe_reg(n: usize) -> Register {
    Register::values().nth(n).unwrap()
}

fn pick_reg(rng: &mut StdRng, size: usize) -> Register {
    loop {
        let n = rng.gen_range(0..16);
        if n == 3 || n == 4 {
            continue; // rbx holds the buffer address, rsp the stack
        }
        return gpr(size, n);
    }
}

fn gen_ops(rng: &mut StdRng, code: Code) -> Option<Vec<Op>> {
    let oc = code.op_code();
    let mut ops = Vec::new();
    for &k in oc.op_kinds() {
        let op = match k {
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                if rng.gen_bool(0.5) {
                    Op::Mem
                } else {
                    Op::R(pick_reg(rng, size_of(k)))
                }
            }
            K::mem => Op::Mem,
            K::xmm_or_mem => {
                if rng.gen_bool(0.5) {
                    Op::Mem
                } else {
                    Op::R(unsafe_reg(Register::XMM0 as usize + rng.gen_range(0..16)))
                }
            }
            K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmm_is4 => {
                Op::R(unsafe_reg(Register::XMM0 as usize + rng.gen_range(0..16)))
            }
            K::ymm_or_mem => {
                if rng.gen_bool(0.5) {
                    Op::Mem
                } else {
                    Op::R(unsafe_reg(Register::YMM0 as usize + rng.gen_range(0..16)))
                }
            }
            K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => {
                Op::R(unsafe_reg(Register::YMM0 as usize + rng.gen_range(0..16)))
            }
            K::mem_vsib32x | K::mem_vsib64x | K::mem_vsib32y | K::mem_vsib64y => {
                let base = if matches!(k, K::mem_vsib32y | K::mem_vsib64y) {
                    Register::YMM0
                } else {
                    Register::XMM0
                };
                Op::Vsib(
                    unsafe_reg(base as usize + rng.gen_range(0..16)),
                    1 << rng.gen_range(0..4),
                )
            }
            K::r8_reg | K::r8_opcode => Op::R(pick_reg(rng, 1)),
            K::r16_reg | K::r16_opcode | K::r16_rm => Op::R(pick_reg(rng, 2)),
            K::r32_reg | K::r32_opcode | K::r32_rm => Op::R(pick_reg(rng, 4)),
            K::r64_reg | K::r64_opcode | K::r64_rm => Op::R(pick_reg(rng, 8)),
            K::r32_vvvv => Op::R(pick_reg(rng, 4)),
            K::r64_vvvv => Op::R(pick_reg(rng, 8)),
            K::al => Op::R(Register::AL),
            K::cl => Op::R(Register::CL),
            K::ax => Op::R(Register::AX),
            K::eax => Op::R(Register::EAX),
            K::rax => Op::R(Register::RAX),
            K::imm8 => Op::Imm(rng.gen_range(0..=255)),
            K::imm8_const_1 => Op::Imm(1),
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => Op::Imm(rng.gen_range(-128..=127)),
            K::imm16 => Op::Imm(rng.gen_range(0..=0xffff)),
            K::imm32 => Op::Imm(rng.gen::<u32>() as i64),
            K::imm32sex64 => Op::Imm(rng.gen::<i32>() as i64),
            K::imm64 => Op::Imm(rng.gen::<i64>()),
            _ => return None,
        };
        ops.push(op);
    }
    Some(ops)
}

fn size_of(k: K) -> usize {
    match k {
        K::r8_or_mem => 1,
        K::r16_or_mem => 2,
        K::r32_or_mem => 4,
        _ => 8,
    }
}

fn build(code: Code, ops: &[Op], disp: i64) -> Option<Instruction> {
    let mem = MemoryOperand::with_base_displ(Register::RBX, MEM_OFF + disp);
    let imm_u32 = |v: i64| v as u32;
    let r = match ops {
        [] => Ok(Instruction::with(code)),
        [Op::R(a)] => Instruction::with1(code, *a),
        [Op::Mem] => Instruction::with1(code, mem),
        [Op::R(a), Op::R(b)] => Instruction::with2(code, *a, *b),
        [Op::R(a), Op::Mem] => Instruction::with2(code, *a, mem),
        [Op::Mem, Op::R(b)] => Instruction::with2(code, mem, *b),
        [Op::R(a), Op::Imm(i)] => {
            if *i < 0 {
                Instruction::with2(code, *a, *i)
            } else {
                Instruction::with2(code, *a, *i as u64)
            }
        }
        [Op::Mem, Op::Imm(i)] => {
            if *i < 0 {
                Instruction::with2(code, mem, *i as i32)
            } else {
                Instruction::with2(code, mem, imm_u32(*i))
            }
        }
        [Op::R(a), Op::R(b), Op::R(c)] => Instruction::with3(code, *a, *b, *c),
        [Op::Mem, Op::R(b), Op::R(c)] => Instruction::with3(code, mem, *b, *c),
        [Op::R(a), Op::R(b), Op::Mem] => Instruction::with3(code, *a, *b, mem),
        [Op::R(a), Op::Mem, Op::R(c)] => Instruction::with3(code, *a, mem, *c),
        [Op::R(a), Op::R(b), Op::Imm(i)] => {
            if *i < 0 {
                Instruction::with3(code, *a, *b, *i as i32)
            } else {
                Instruction::with3(code, *a, *b, imm_u32(*i))
            }
        }
        [Op::R(a), Op::Mem, Op::Imm(i)] => {
            if *i < 0 {
                Instruction::with3(code, *a, mem, *i as i32)
            } else {
                Instruction::with3(code, *a, mem, imm_u32(*i))
            }
        }
        [Op::Mem, Op::R(b), Op::Imm(i)] => {
            if *i < 0 {
                Instruction::with3(code, mem, *b, *i as i32)
            } else {
                Instruction::with3(code, mem, *b, imm_u32(*i))
            }
        }
        [Op::R(a), Op::Vsib(x, scale), Op::R(c)] => Instruction::with3(
            code,
            *a,
            MemoryOperand::with_base_index_scale_displ_size(
                Register::RBX,
                *x,
                *scale,
                MEM_OFF + disp,
                1,
            ),
            *c,
        ),
        [Op::R(a), Op::R(b), Op::R(c), Op::R(d)] => Instruction::with4(code, *a, *b, *c, *d),
        [Op::R(a), Op::R(b), Op::Mem, Op::R(d)] => Instruction::with4(code, *a, *b, mem, *d),
        [Op::R(a), Op::R(b), Op::R(c), Op::Imm(i)] => {
            Instruction::with4(code, *a, *b, *c, imm_u32(*i))
        }
        [Op::R(a), Op::R(b), Op::Mem, Op::Imm(i)] => {
            Instruction::with4(code, *a, *b, mem, imm_u32(*i))
        }
        _ => return None,
    };
    r.ok()
}

fn interesting(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..8) {
        0 => 0,
        1 => rng.gen_range(0..64),
        2 => u64::MAX - rng.gen_range(0..4),
        3 => 0x8000_0000_0000_0000 >> (rng.gen_range(0..4) * 8 + rng.gen_range(0..2) * 32),
        4 => 0x7fff_ffff_ffff_ffff >> (rng.gen_range(0..4) * 8),
        5 => rng.gen::<u32>() as u64,
        _ => rng.gen(),
    }
}

const CLASSES: &[M] = &[
    M::Mov,
    M::Movzx,
    M::Movsx,
    M::Movsxd,
    M::Add,
    M::Or,
    M::Adc,
    M::Sbb,
    M::And,
    M::Sub,
    M::Xor,
    M::Cmp,
    M::Test,
    M::Inc,
    M::Dec,
    M::Not,
    M::Neg,
    M::Shl,
    M::Sal,
    M::Shr,
    M::Sar,
    M::Rol,
    M::Ror,
    M::Rcl,
    M::Rcr,
    M::Shld,
    M::Shrd,
    M::Mul,
    M::Imul,
    M::Div,
    M::Idiv,
    M::Bt,
    M::Bts,
    M::Btr,
    M::Btc,
    M::Bsf,
    M::Bsr,
    M::Popcnt,
    M::Crc32,
    M::Lzcnt,
    M::Tzcnt,
    M::Movbe,
    M::Andn,
    M::Bextr,
    M::Blsi,
    M::Blsmsk,
    M::Blsr,
    M::Bzhi,
    M::Mulx,
    M::Pdep,
    M::Pext,
    M::Rorx,
    M::Sarx,
    M::Shlx,
    M::Shrx,
    M::Bswap,
    M::Xchg,
    M::Xadd,
    M::Cmpxchg,
    M::Seto,
    M::Setno,
    M::Setb,
    M::Setae,
    M::Sete,
    M::Setne,
    M::Setbe,
    M::Seta,
    M::Sets,
    M::Setns,
    M::Setp,
    M::Setnp,
    M::Setl,
    M::Setge,
    M::Setle,
    M::Setg,
    M::Cmovo,
    M::Cmovno,
    M::Cmovb,
    M::Cmovae,
    M::Cmove,
    M::Cmovne,
    M::Cmovbe,
    M::Cmova,
    M::Cmovs,
    M::Cmovns,
    M::Cmovp,
    M::Cmovnp,
    M::Cmovl,
    M::Cmovge,
    M::Cmovle,
    M::Cmovg,
    M::Cbw,
    M::Cwde,
    M::Cdqe,
    M::Cwd,
    M::Cdq,
    M::Cqo,
    M::Lahf,
    M::Sahf,
    M::Clc,
    M::Stc,
    M::Cmc,
    M::Nop,
];

/// Flags whose value is architecturally undefined for this case.
fn undefined_flags(ins: &Instruction, st: &St) -> (u64, bool) {
    let m = ins.mnemonic();
    let count = || -> u64 {
        if ins.op_count() < 2 {
            return 1;
        }
        let k = if matches!(m, M::Shld | M::Shrd) { 2 } else { 1 };
        if ins.op_kind(k) == iced_x86::OpKind::Register {
            st.gpr[1] & 0xff
        } else {
            ins.immediate(k)
        }
    };
    let size = match ins.op_kind(0) {
        iced_x86::OpKind::Register => ins.op0_register().size(),
        _ => ins.memory_size().size(),
    };
    let cmask = if size == 8 { 63 } else { 31 };
    match m {
        M::And | M::Or | M::Xor | M::Test => (AF, false),
        M::Shl | M::Sal | M::Shr | M::Sar => {
            let c = count() & cmask;
            let mut u = AF;
            if c != 1 {
                u |= OF;
            }
            if c > (size * 8) as u64 {
                u |= CF;
            }
            (u, false)
        }
        M::Rol | M::Ror | M::Rcl | M::Rcr => {
            let c = count() & cmask;
            (if c != 1 { OF } else { 0 }, false)
        }
        M::Shld | M::Shrd => {
            let c = count() & cmask;
            let mut u = AF;
            if c != 1 {
                u |= OF;
            }
            // 16-bit with count > 16: result and flags undefined.
            if size == 2 && c > 16 {
                return (ARITH, true);
            }
            (u, false)
        }
        M::Mul | M::Imul => (SF | ZF | AF | PF, false),
        M::Div | M::Idiv => (ARITH, false),
        M::Bt | M::Bts | M::Btr | M::Btc => (OF | SF | AF | PF, false),
        M::Bsf | M::Bsr => (CF | OF | SF | AF | PF, false),
        M::Lzcnt | M::Tzcnt => (OF | SF | AF | PF, false),
        M::Andn | M::Blsi | M::Blsmsk | M::Blsr | M::Bzhi => (AF | PF, false),
        M::Bextr => (AF | SF | PF, false),
        _ => (0, false),
    }
}

/// A special double (sign random): a quiet or signalling NaN with random payload, an
/// infinity, zero, the largest finite, a subnormal, or a value near the overflow and
/// underflow thresholds.
fn special_f64(rng: &mut StdRng) -> f64 {
    let sign = (rng.gen::<u64>() & 1) << 63;
    let m = rng.gen::<u64>() & ((1 << 52) - 1);
    let bits = match rng.gen_range(0..7) {
        0 => 0x7ff8_0000_0000_0000 | m,
        1 => 0x7ff0_0000_0000_0000 | (m >> 1).max(1),
        2 => 0x7ff0_0000_0000_0000,
        3 => 0,
        4 => 0x7fef_ffff_ffff_ffff - (m & 0xff),
        5 => m >> rng.gen_range(0..52),
        _ => ((rng.gen_range(1..4u64) << 52) | m) + ((rng.gen_range(0..2) * 0x7e00) << 48),
    };
    f64::from_bits(bits | sign)
}

/// `special_f64` for singles.
fn special_f32(rng: &mut StdRng) -> f32 {
    let sign = (rng.gen::<u32>() & 1) << 31;
    let m = rng.gen::<u32>() & ((1 << 23) - 1);
    let bits = match rng.gen_range(0..7) {
        0 => 0x7fc0_0000 | m,
        1 => 0x7f80_0000 | (m >> 1).max(1),
        2 => 0x7f80_0000,
        3 => 0,
        4 => 0x7f7f_ffff - (m & 0xff),
        5 => m >> rng.gen_range(0..23),
        _ => ((rng.gen_range(1..4u32) << 23) | m) + ((rng.gen_range(0..2) * 0x7c00) << 16),
    };
    f32::from_bits(bits | sign)
}

fn xmm_value(rng: &mut StdRng) -> u128 {
    let half = |rng: &mut StdRng| -> u64 {
        match rng.gen_range(0..8) {
            0 => (rng.gen_range(-1000i64..1000) as f64 / 8.0).to_bits(),
            // Special doubles: NaNs (quiet and signalling), infinities, extremes, subnormals.
            6 => special_f64(rng).to_bits(),
            7 => special_f32(rng).to_bits() as u64 | (special_f32(rng).to_bits() as u64) << 32,
            1 => {
                let a = (rng.gen_range(-100i32..100) as f32).to_bits() as u64;
                let b = (rng.gen_range(-1000i32..1000) as f32 / 4.0).to_bits() as u64;
                a | b << 32
            }
            2 => rng.gen::<f64>().to_bits(),
            3 => 0,
            _ => rng.gen(),
        }
    };
    half(rng) as u128 | (half(rng) as u128) << 64
}

#[test]
fn integer_instructions_match_host() {
    run_diff(CLASSES, &[CpuidFeature::BMI1, CpuidFeature::BMI2], 517);
}

#[test]
fn sse_instructions_match_host() {
    let classes: Vec<M> = M::values().filter(|m| sse_class(*m)).collect();
    run_diff(&classes, &[], 280);
}

/// The AVX forms: the VEX forms of the SSE instructions and the AVX-only ones (with AES
/// and PCLMULQDQ, whose VEX.128 forms need only AVX besides).
#[test]
fn avx_instructions_match_host() {
    let classes: Vec<M> = M::values()
        .filter(|&m| m != legacy(m) && sse_class(legacy(m)) || avx_class(m))
        .collect();
    run_diff(
        &classes,
        &[
            CpuidFeature::AVX,
            CpuidFeature::AES,
            CpuidFeature::PCLMULQDQ,
        ],
        AVX_FORMS,
    );
}

/// The AVX2 forms: the VEX.256 integer forms of the SSE instructions and the AVX2-only
/// ones (gathers with in-buffer indices; their fault behaviour is in `tests/avx.rs`).
#[test]
fn avx2_instructions_match_host() {
    let classes: Vec<M> = M::values()
        .filter(|&m| m != legacy(m) && sse_class(legacy(m)) || avx2_class(m))
        .collect();
    run_diff(&classes, &[CpuidFeature::AVX2], AVX2_FORMS);
}

/// The number of AVX2 forms `avx2_instructions_match_host` runs.
const AVX2_FORMS: usize = 172;

/// The AVX2 instructions without a legacy SSE counterpart.
fn avx2_class(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Vpermps
            | Vpermd
            | Vpsrlvd
            | Vpsrlvq
            | Vpsravd
            | Vpsllvd
            | Vpsllvq
            | Vpbroadcastd
            | Vpbroadcastq
            | Vbroadcasti128
            | Vpbroadcastb
            | Vpbroadcastw
            | Vbroadcastss
            | Vbroadcastsd
            | Vpmaskmovd
            | Vpmaskmovq
            | Vpermq
            | Vpermpd
            | Vpblendd
            | Vinserti128
            | Vextracti128
            | Vperm2i128
            | Vgatherdps
            | Vgatherdpd
            | Vgatherqps
            | Vgatherqpd
            | Vpgatherdd
            | Vpgatherdq
            | Vpgatherqd
            | Vpgatherqq
    )
}

/// FMA: every VFMADD/VFMSUB/VFNMADD/VFNMSUB/VFMADDSUB/VFMSUBADD form, with random
/// MXCSR rounding modes.
#[test]
fn fma_instructions_match_host() {
    let classes: Vec<M> = M::values().filter(|&m| fma_class(m)).collect();
    run_diff(&classes, &[CpuidFeature::FMA], FMA_FORMS);
}

/// The number of FMA forms `fma_instructions_match_host` runs.
const FMA_FORMS: usize = 96;

fn fma_class(m: M) -> bool {
    let name = format!("{m:?}");
    ["Vfmadd", "Vfmsub", "Vfnmadd", "Vfnmsub"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// F16C: VCVTPH2PS and VCVTPS2PH (rounding from the immediate or MXCSR).
#[test]
fn f16c_instructions_match_host() {
    run_diff(
        &[M::Vcvtph2ps, M::Vcvtps2ph],
        &[CpuidFeature::F16C],
        F16C_FORMS,
    );
}

/// The number of F16C forms `f16c_instructions_match_host` runs.
const F16C_FORMS: usize = 4;

/// The number of AVX forms `avx_instructions_match_host` runs.
const AVX_FORMS: usize = 389;

/// The AVX instructions without a legacy SSE counterpart.
fn avx_class(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Vbroadcastss
            | Vbroadcastsd
            | Vbroadcastf128
            | Vinsertf128
            | Vextractf128
            | Vperm2f128
            | Vpermilps
            | Vpermilpd
            | Vmaskmovps
            | Vmaskmovpd
            | Vtestps
            | Vtestpd
            | Vzeroupper
            | Vzeroall
            | Vmovntps
            | Vmovntpd
            | Vstmxcsr
    )
}

/// The legacy SSE mnemonic of a VEX mnemonic (VADDPS → ADDPS); others map to themselves.
fn legacy(m: M) -> M {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<String, M>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| M::values().map(|l| (format!("{l:?}"), l)).collect());
    let name = format!("{m:?}");
    let Some(rest) = name.strip_prefix('V') else {
        return m;
    };
    let mut chars = rest.chars();
    let Some(first) = chars.next() else {
        return m;
    };
    let want = format!("{}{}", first.to_ascii_uppercase(), chars.as_str());
    names.get(&want).copied().unwrap_or(m)
}

fn sse_class(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Movdqa
            | Movdqu
            | Movaps
            | Movups
            | Movapd
            | Movupd
            | Movntdq
            | Movnti
            | Movq
            | Movd
            | Movss
            | Movsd
            | Movhpd
            | Movhps
            | Movlpd
            | Movlps
            | Movhlps
            | Movlhps
            | Movmskpd
            | Movmskps
            | Pmovmskb
            | Pxor
            | Xorps
            | Xorpd
            | Por
            | Orps
            | Orpd
            | Pand
            | Andps
            | Andpd
            | Pandn
            | Andnps
            | Andnpd
            | Paddb
            | Paddw
            | Paddd
            | Paddq
            | Psubb
            | Psubw
            | Psubd
            | Psubq
            | Paddusb
            | Paddusw
            | Psubusb
            | Psubusw
            | Paddsb
            | Paddsw
            | Psubsb
            | Psubsw
            | Pcmpeqb
            | Pcmpeqw
            | Pcmpeqd
            | Pcmpgtb
            | Pcmpgtw
            | Pcmpgtd
            | Pminub
            | Pmaxub
            | Pminsw
            | Pmaxsw
            | Pavgb
            | Pavgw
            | Pmullw
            | Pmulhw
            | Pmulhuw
            | Pmuludq
            | Pmaddwd
            | Psadbw
            | Psllw
            | Pslld
            | Psllq
            | Psrlw
            | Psrld
            | Psrlq
            | Psraw
            | Psrad
            | Pslldq
            | Psrldq
            | Punpcklbw
            | Punpcklwd
            | Punpckldq
            | Punpcklqdq
            | Punpckhbw
            | Punpckhwd
            | Punpckhdq
            | Punpckhqdq
            | Packsswb
            | Packssdw
            | Packuswb
            | Pshufd
            | Pshuflw
            | Pshufhw
            | Shufps
            | Shufpd
            | Unpcklps
            | Unpckhps
            | Unpcklpd
            | Unpckhpd
            | Addsd
            | Subsd
            | Mulsd
            | Divsd
            | Minsd
            | Maxsd
            | Sqrtsd
            | Addss
            | Subss
            | Mulss
            | Divss
            | Minss
            | Maxss
            | Sqrtss
            | Addpd
            | Subpd
            | Mulpd
            | Divpd
            | Minpd
            | Maxpd
            | Sqrtpd
            | Addps
            | Subps
            | Mulps
            | Divps
            | Minps
            | Maxps
            | Sqrtps
            | Comisd
            | Ucomisd
            | Comiss
            | Ucomiss
            | Cmpsd
            | Cmpss
            | Cmppd
            | Cmpps
            | Cvtsi2sd
            | Cvtsi2ss
            | Cvttsd2si
            | Cvtsd2si
            | Cvttss2si
            | Cvtss2si
            | Cvtsd2ss
            | Cvtss2sd
            | Cvtdq2pd
            | Cvtdq2ps
            | Cvttps2dq
            | Cvtps2dq
            | Cvtps2pd
            | Cvtpd2ps
            | Cvttpd2dq
            | Cvtpd2dq
            | Pextrw
            | Pinsrw
            // SSE3
            | Addsubps
            | Addsubpd
            | Haddps
            | Haddpd
            | Hsubps
            | Hsubpd
            | Movshdup
            | Movsldup
            | Movddup
            | Lddqu
            // SSSE3 (the MMX-register forms are not generated: no `mm` operands)
            | Pabsb
            | Pabsw
            | Pabsd
            | Palignr
            | Phaddw
            | Phaddd
            | Phaddsw
            | Phsubw
            | Phsubd
            | Phsubsw
            | Pmaddubsw
            | Pmulhrsw
            | Pshufb
            | Psignb
            | Psignw
            | Psignd
            // SSE4.1
            | Blendpd
            | Blendps
            | Blendvpd
            | Blendvps
            | Pblendvb
            | Pblendw
            | Dppd
            | Dpps
            | Extractps
            | Insertps
            | Movntdqa
            | Mpsadbw
            | Packusdw
            | Pcmpeqq
            | Pextrb
            | Pextrd
            | Pextrq
            | Pinsrb
            | Pinsrd
            | Pinsrq
            | Phminposuw
            | Pmaxsb
            | Pmaxsd
            | Pmaxuw
            | Pmaxud
            | Pminsb
            | Pminsd
            | Pminuw
            | Pminud
            | Pmovsxbw
            | Pmovsxbd
            | Pmovsxbq
            | Pmovsxwd
            | Pmovsxwq
            | Pmovsxdq
            | Pmovzxbw
            | Pmovzxbd
            | Pmovzxbq
            | Pmovzxwd
            | Pmovzxwq
            | Pmovzxdq
            | Pmuldq
            | Pmulld
            | Ptest
            | Roundps
            | Roundpd
            | Roundss
            | Roundsd
            // SSE4.2
            | Pcmpgtq
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
            // PCLMULQDQ, AES-NI
            | Pclmulqdq
            | Aesenc
            | Aesenclast
            | Aesdec
            | Aesdeclast
            | Aesimc
            | Aeskeygenassist
    )
}

/// PCMPxSTRx: the instructions whose inputs are drawn from a small alphabet with NULs
/// and short lengths, so matches, ranges and string ends actually occur.
fn string_compare(m: M) -> bool {
    matches!(
        m,
        M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm
    )
}

/// Instructions run with a random MXCSR rounding mode, whose MXCSR (exception flags)
/// after the run is compared with the host's too.
fn mxcsr_exact(m: M) -> bool {
    matches!(m, M::Roundps | M::Roundpd | M::Roundss | M::Roundsd)
}

/// Instructions run with a random MXCSR rounding mode (their result depends on it) but
/// whose MXCSR exception flags the engine does not track.
fn mxcsr_rounding(m: M) -> bool {
    use M::*;
    mxcsr_exact(m)
        || fma_class(m)
        || m == M::Vcvtps2ph
        || matches!(
            m,
            Cvtsd2si
                | Cvtss2si
                | Cvtps2dq
                | Cvtpd2dq
                | Cvtsi2sd
                | Cvtsi2ss
                | Cvtsd2ss
                | Cvtpd2ps
                | Cvtdq2ps
                | Addsd
                | Subsd
                | Mulsd
                | Divsd
                | Sqrtsd
                | Addss
                | Subss
                | Mulss
                | Divss
                | Sqrtss
                | Addpd
                | Subpd
                | Mulpd
                | Divpd
                | Sqrtpd
                | Addps
                | Subps
                | Mulps
                | Divps
                | Sqrtps
                | Addsubps
                | Addsubpd
                | Haddps
                | Haddpd
                | Hsubps
                | Hsubpd
                | Dpps
                | Dppd
        )
}

/// 16 bytes for the string compares: letters from a small alphabet (words of either
/// sign), some NULs.
fn string_value(rng: &mut StdRng) -> u128 {
    const ALPHABET: &[u8] = b"abcAB09\x80\xff";
    let mut b = [0u8; 16];
    let nul_odds = rng.gen_range(0.0..0.3);
    for x in b.iter_mut() {
        *x = if rng.gen_bool(nul_odds) {
            0
        } else {
            ALPHABET[rng.gen_range(0..ALPHABET.len())]
        };
    }
    u128::from_le_bytes(b)
}

/// Runs every form of `classes` (VEX forms only if the CPUID features they need are all
/// in `vex`); `min_forms` is the number of forms the classes have, so a form that silently
/// stops being generated fails the test.
fn run_diff(classes: &[M], vex: &[CpuidFeature], min_forms: usize) {
    let seed: u64 = std::env::var("EMU_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: usize = std::env::var("EMU_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = StdRng::seed_from_u64(seed);
    let native = Native::new(false);
    let mem = memory();
    setup_long_mode(&mem);
    let mut cpu = Cpu::new(&mem);
    let mut plat = TestPlatform::default();
    let mut host_store = Box::new(Aligned([0; BUF]));
    let host_buf: &mut [u8] = &mut host_store.0;
    let mut tested = 0usize;
    let mut forms = 0usize;
    for code in Code::values() {
        let oc = code.op_code();
        let encoding_ok = match oc.encoding() {
            iced_x86::EncodingKind::Legacy => true,
            iced_x86::EncodingKind::VEX => code.cpuid_features().iter().all(|f| vex.contains(f)),
            _ => false,
        };
        if !encoding_ok || !oc.mode64() || !classes.contains(&oc.mnemonic()) {
            continue;
        }
        if matches!(code, Code::Nopw | Code::Nopd | Code::Nopq)
            || oc.mnemonic() == M::Nop && oc.op_count() > 0
        {
            continue;
        }
        let mut ran = 0;
        for _ in 0..cases {
            let Some(ops) = gen_ops(&mut rng, code) else {
                break;
            };
            let vex = oc.encoding() == iced_x86::EncodingKind::VEX;
            // 32-byte aligned for the VEX.256 aligned moves.
            let disp = if vex {
                rng.gen_range(0..4) * 32
            } else {
                rng.gen_range(0..8) * 16
            };
            let Some(mut ins) = build(code, &ops, disp) else {
                continue;
            };
            if ins.op0_kind() == iced_x86::OpKind::Memory
                && oc.can_use_lock_prefix()
                && rng.gen_bool(0.4)
            {
                ins.set_has_lock_prefix(true);
            }
            let mut enc = Encoder::new(64);
            if enc.encode(&ins, CODE).is_err() {
                continue;
            }
            let bytes = enc.take_buffer();
            // Inputs.
            let mut st = St {
                gpr: [0; 16],
                flags: (rng.gen::<u64>() & ARITH) | 2,
                mxcsr: MXCSR_DEFAULT,
                xmm: [0; 16],
                ymm_hi: [0; 16],
            };
            for x in st.xmm.iter_mut().chain(st.ymm_hi.iter_mut()) {
                *x = xmm_value(&mut rng);
            }
            for g in st.gpr.iter_mut() {
                *g = interesting(&mut rng);
            }
            let m = legacy(ins.mnemonic());
            if mxcsr_rounding(m) {
                st.mxcsr = MXCSR_DEFAULT | rng.gen_range(0..4) << 13;
            }
            if matches!(
                m,
                M::Vpsllvd | M::Vpsllvq | M::Vpsrlvd | M::Vpsrlvq | M::Vpsravd
            ) {
                // Per-element counts: mostly below the element width.
                for x in st.xmm.iter_mut().chain(st.ymm_hi.iter_mut()) {
                    *x = u128::from_le_bytes(x.to_le_bytes().map(|b| b % 72));
                }
            }
            if string_compare(m) {
                for x in st.xmm.iter_mut().chain(st.ymm_hi.iter_mut()) {
                    *x = string_value(&mut rng);
                }
                // Lengths: mostly in or near the element count, of either sign.
                for r in [0, 2] {
                    if rng.gen_bool(0.8) {
                        st.gpr[r] = rng.gen_range(-20i64..=20) as u64;
                    }
                }
            }
            if let [Op::R(d), Op::Vsib(x, scale), Op::R(k)] = ops[..] {
                // Gathers: distinct registers, and every element's address in the buffer.
                let n = |r: Register| r.full_register() as usize - Register::ZMM0 as usize;
                if n(d) == n(x) || n(d) == n(k) || n(x) == n(k) {
                    continue;
                }
                let wide = matches!(oc.op_kind(1), K::mem_vsib64x | K::mem_vsib64y);
                let lo = -(MEM_OFF + disp) / scale as i64;
                let hi = (BUF as i64 - 8 - MEM_OFF - disp) / scale as i64;
                let mut v = [0u8; 32];
                for e in v.chunks_mut(if wide { 8 } else { 4 }) {
                    let i = rng.gen_range(lo..=hi);
                    let len = e.len();
                    e.copy_from_slice(&i.to_le_bytes()[..len]);
                }
                let mut h = [0u8; 16];
                h.copy_from_slice(&v[..16]);
                st.xmm[n(x)] = u128::from_le_bytes(h);
                h.copy_from_slice(&v[16..]);
                st.ymm_hi[n(x)] = u128::from_le_bytes(h);
            }
            if matches!(m, M::Bt | M::Bts | M::Btr | M::Btc)
                && ins.op0_kind() == iced_x86::OpKind::Memory
                && ins.op1_kind() == iced_x86::OpKind::Register
            {
                // Keep bit-string offsets inside the buffer.
                let v = rng.gen_range(-256i64..1024) as u64;
                let r = ins.op1_register().full_register();
                st.gpr[r as usize - Register::RAX as usize] = v;
            }
            rng.fill(&mut host_buf[..]);
            if string_compare(m) {
                for c in host_buf.chunks_mut(16) {
                    c.copy_from_slice(&string_value(&mut rng).to_le_bytes());
                }
            }
            // Engine.
            mem.write_slice(host_buf, GuestAddress(DATA)).unwrap();
            let mut regs = long_mode_regs(CODE);
            regs.gpr = st.gpr;
            regs.gpr[3] = DATA;
            regs.gpr[4] = KSTACK_TOP;
            regs.rflags = st.flags;
            regs.fpu.xmm = st.xmm;
            regs.fpu.ymm_hi = st.ymm_hi;
            regs.cr4 |= CR4_OSXSAVE;
            regs.fpu.xcr0 = 7;
            regs.fpu.mxcsr = st.mxcsr as u32;
            let mut prog = bytes.clone();
            prog.push(0xf4);
            cpu.ram().write_phys(CODE, &prog);
            cpu.set_regs(&regs);
            plat.outs.clear();
            let exit = run_to_halt(&mut cpu, &mut plat);
            assert_eq!(exit, Exit::Halted, "{ins} did not halt");
            if !vectors(&plat).is_empty() {
                // The engine raised an exception (e.g. #DE): do not run it natively.
                assert!(
                    matches!(m, M::Div | M::Idiv),
                    "{ins}: unexpected exception {:?} (seed {seed})",
                    vectors(&plat)
                );
                continue;
            }
            let er = cpu.regs();
            let mut emu_buf = vec![0u8; BUF];
            mem.read_slice(&mut emu_buf, GuestAddress(DATA)).unwrap();
            // Host.
            let mut hs = st;
            hs.gpr[3] = host_buf.as_ptr() as u64;
            native.run(&bytes, &mut hs);
            let (undef, skip_result) = undefined_flags(&ins, &st);
            let fm = ARITH & !undef;
            let mut bad = (er.rflags & fm) != (hs.flags & fm);
            let mut emu_gpr = er.gpr;
            emu_gpr[3] = 0;
            emu_gpr[4] = 0;
            let mut host_gpr = hs.gpr;
            host_gpr[3] = 0;
            host_gpr[4] = 0;
            let src_zero = matches!(m, M::Bsf | M::Bsr) && hs.flags & ZF != 0;
            if !skip_result && !src_zero {
                bad |= emu_gpr != host_gpr
                    || emu_buf != host_buf
                    || er.fpu.xmm != hs.xmm
                    || er.fpu.ymm_hi != hs.ymm_hi;
            }
            if mxcsr_exact(m) {
                bad |= er.fpu.mxcsr as u64 != hs.mxcsr;
            }
            if bad {
                let diff: Vec<String> = (0..16)
                    .filter(|&i| emu_gpr[i] != host_gpr[i])
                    .map(|i| {
                        format!(
                            "r{i}: in {:#x} emu {:#x} host {:#x}",
                            st.gpr[i], emu_gpr[i], host_gpr[i]
                        )
                    })
                    .collect();
                let xdiff: Vec<String> = (0..16)
                    .filter(|&i| er.fpu.xmm[i] != hs.xmm[i])
                    .map(|i| {
                        format!(
                            "xmm{i}: in {:#x} emu {:#x} host {:#x}",
                            st.xmm[i], er.fpu.xmm[i], hs.xmm[i]
                        )
                    })
                    .chain(
                        (0..16)
                            .filter(|&i| er.fpu.ymm_hi[i] != hs.ymm_hi[i])
                            .map(|i| {
                                format!(
                                    "ymm{i}[255:128]: in {:#x} emu {:#x} host {:#x}",
                                    st.ymm_hi[i], er.fpu.ymm_hi[i], hs.ymm_hi[i]
                                )
                            }),
                    )
                    .collect();
                eprintln!("{xdiff:?}");
                for i in 0..ins.op_count() {
                    if ins.op_kind(i) != iced_x86::OpKind::Register {
                        continue;
                    }
                    let r = ins.op_register(i);
                    let n = (r.full_register() as usize).wrapping_sub(Register::ZMM0 as usize);
                    if n < 16 {
                        eprintln!(
                            "operand {i} ({r:?}) in: {:#x} {:#x}",
                            st.ymm_hi[n], st.xmm[n]
                        );
                    }
                }
                panic!(
                    "mismatch (seed {seed}) for `{ins}` ({code:?}) bytes {bytes:02x?}\n flags in {:#x} emu {:#x} host {:#x} (compared {fm:#x})\n regs: {diff:?}\n mem equal: {}\n mxcsr in {:#x} emu {:#x} host {:#x}",
                    st.flags, er.rflags, hs.flags, emu_buf == host_buf, st.mxcsr, er.fpu.mxcsr, hs.mxcsr
                );
            }
            ran += 1;
        }
        if ran > 0 {
            forms += 1;
            tested += ran;
        } else if std::env::var_os("EMU_DIFF_VERBOSE").is_some() {
            eprintln!("not run: {code:?}");
        }
    }
    eprintln!("differential: {forms} instruction forms, {tested} cases (seed {seed})");
    assert!(
        forms >= min_forms,
        "too few instruction forms tested: {forms} (expected {min_forms})"
    );
}

/// REP string instructions (both directions, overlapping ranges, page crossings) against
/// the host: registers (pointers relative to the buffer), flags and memory.
#[test]
fn string_instructions_match_host() {
    let seed: u64 = std::env::var("EMU_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: usize = std::env::var("EMU_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x57);
    let native = Native::new(false);
    let mem = memory();
    setup_long_mode(&mem);
    let mut cpu = Cpu::new(&mem);
    let mut plat = TestPlatform::default();
    const SBUF: usize = 16384;
    let mut host = vec![0u8; SBUF];
    // (encoding without prefixes, element size)
    let forms: [(&[u8], usize); 14] = [
        (&[0xa4], 1),
        (&[0x66, 0xa5], 2),
        (&[0xa5], 4),
        (&[0x48, 0xa5], 8), // movs
        (&[0xaa], 1),
        (&[0x66, 0xab], 2),
        (&[0xab], 4),
        (&[0x48, 0xab], 8), // stos
        (&[0xac], 1),
        (&[0x48, 0xad], 8), // lods
        (&[0xa6], 1),
        (&[0xa7], 4), // cmps
        (&[0xae], 1),
        (&[0x48, 0xaf], 8), // scas
    ];
    let mut total = 0;
    for (op, size) in forms {
        for _ in 0..cases * 4 {
            let rep = rng.gen_range(0..4);
            let mut bytes = Vec::new();
            match rep {
                1 => bytes.push(0xf3),
                2 => bytes.push(0xf2),
                _ => {}
            }
            if op[0] == 0x66 {
                // The operand-size prefix goes before REP is fine either way; keep it first.
                bytes.insert(0, 0x66);
                bytes.extend_from_slice(&op[1..]);
            } else {
                bytes.extend_from_slice(op);
            }
            let df = rng.gen_bool(0.3);
            let count = rng.gen_range(0..2048 / size as u64) >> rng.gen_range(0..6);
            let soff = rng.gen_range(2048..12000u64);
            let doff = if rng.gen_bool(0.3) {
                soff + rng.gen_range(0..16)
            } else {
                rng.gen_range(2048..12000u64)
            };
            let mut st = St {
                gpr: [0; 16],
                flags: (rng.gen::<u64>() & ARITH) | 2 | if df { 0x400 } else { 0 },
                mxcsr: MXCSR_DEFAULT,
                xmm: [0; 16],
                ymm_hi: [0; 16],
            };
            for g in st.gpr.iter_mut() {
                *g = rng.gen();
            }
            st.gpr[1] = count;
            // Make the compares sometimes run long: fill with few distinct values.
            for b in host.iter_mut() {
                *b = rng.gen_range(0..3);
            }
            st.gpr[0] = rng.gen_range(0..3);
            mem.write_slice(&host, GuestAddress(DATA)).unwrap();
            let mut regs = long_mode_regs(CODE);
            regs.gpr = st.gpr;
            regs.gpr[6] = DATA + soff;
            regs.gpr[7] = DATA + doff;
            regs.gpr[4] = KSTACK_TOP;
            regs.rflags = st.flags;
            let mut prog = bytes.clone();
            prog.push(0xf4);
            cpu.ram().write_phys(CODE, &prog);
            cpu.set_regs(&regs);
            plat.outs.clear();
            assert_eq!(run_to_halt(&mut cpu, &mut plat), Exit::Halted);
            assert!(
                vectors(&plat).is_empty(),
                "{bytes:02x?}: exception {:?}",
                vectors(&plat)
            );
            let er = cpu.regs();
            let mut emu_buf = vec![0u8; SBUF];
            mem.read_slice(&mut emu_buf, GuestAddress(DATA)).unwrap();
            let mut hs = st;
            let hb = host.as_mut_ptr() as u64;
            hs.gpr[6] = hb + soff;
            hs.gpr[7] = hb + doff;
            native.run(&bytes, &mut hs);
            let mut e = er.gpr;
            e[6] = e[6].wrapping_sub(DATA);
            e[7] = e[7].wrapping_sub(DATA);
            e[4] = 0;
            let mut h = hs.gpr;
            h[6] = h[6].wrapping_sub(hb);
            h[7] = h[7].wrapping_sub(hb);
            h[4] = 0;
            assert_eq!(
                e, h,
                "registers differ for {bytes:02x?} count {count} df {df} (seed {seed})"
            );
            assert_eq!(
                er.rflags & (ARITH | 0x400),
                hs.flags & (ARITH | 0x400),
                "flags for {bytes:02x?}"
            );
            if emu_buf != host {
                let d: Vec<(usize, u8, u8)> = (0..SBUF)
                    .filter(|&i| emu_buf[i] != host[i])
                    .map(|i| (i, emu_buf[i], host[i]))
                    .take(10)
                    .collect();
                eprintln!("first differences (offset, emu, host): {d:?}");
            }
            assert!(emu_buf == host, "memory differs for {bytes:02x?} count {count} df {df} soff {soff} doff {doff} (seed {seed})");
            total += 1;
        }
    }
    eprintln!("string differential: {total} cases");
}

/// The x87 instructions the differential test runs (every form of each).
const X87_CLASSES: &[M] = &[
    M::Fld,
    M::Fild,
    M::Fbld,
    M::Fld1,
    M::Fldl2t,
    M::Fldl2e,
    M::Fldpi,
    M::Fldlg2,
    M::Fldln2,
    M::Fldz,
    M::Fst,
    M::Fstp,
    M::Fist,
    M::Fistp,
    M::Fisttp,
    M::Fbstp,
    M::Fxch,
    M::Fcmovb,
    M::Fcmove,
    M::Fcmovbe,
    M::Fcmovu,
    M::Fcmovnb,
    M::Fcmovne,
    M::Fcmovnbe,
    M::Fcmovnu,
    M::Fadd,
    M::Faddp,
    M::Fiadd,
    M::Fsub,
    M::Fsubp,
    M::Fisub,
    M::Fsubr,
    M::Fsubrp,
    M::Fisubr,
    M::Fmul,
    M::Fmulp,
    M::Fimul,
    M::Fdiv,
    M::Fdivp,
    M::Fidiv,
    M::Fdivr,
    M::Fdivrp,
    M::Fidivr,
    M::Fcom,
    M::Fcomp,
    M::Fcompp,
    M::Fucom,
    M::Fucomp,
    M::Fucompp,
    M::Ficom,
    M::Ficomp,
    M::Fcomi,
    M::Fcomip,
    M::Fucomi,
    M::Fucomip,
    M::Ftst,
    M::Fxam,
    M::Fchs,
    M::Fabs,
    M::Fsqrt,
    M::Frndint,
    M::Fscale,
    M::Fxtract,
    M::Fprem,
    M::Fprem1,
    M::F2xm1,
    M::Fyl2x,
    M::Fyl2xp1,
    M::Fptan,
    M::Fpatan,
    M::Fsin,
    M::Fcos,
    M::Fsincos,
    M::Fninit,
    M::Finit,
    M::Fnstcw,
    M::Fstcw,
    M::Fldcw,
    M::Fnstsw,
    M::Fstsw,
    M::Fnclex,
    M::Fclex,
    M::Fnstenv,
    M::Fstenv,
    M::Fldenv,
    M::Fnsave,
    M::Fsave,
    M::Frstor,
    M::Fnop,
    M::Fdecstp,
    M::Fincstp,
    M::Ffree,
    M::Ffreep,
    M::Wait,
    M::Fstpnce,
    M::Fneni,
    M::Feni,
    M::Fndisi,
    M::Fdisi,
    M::Fnsetpm,
    M::Fsetpm,
    M::Fxsave,
    M::Fxsave64,
    M::Fxrstor,
    M::Fxrstor64,
];

/// Transcendental instructions: hardware is accurate to 1 ulp, so results may differ by
/// one unit in the last place and C1 (rounded up) may differ.
fn transcendental(m: M) -> bool {
    matches!(
        m,
        M::F2xm1 | M::Fyl2x | M::Fyl2xp1 | M::Fptan | M::Fpatan | M::Fsin | M::Fcos | M::Fsincos
    )
}

/// A random 80-bit value: zeros, infinities, NaNs, denormals, huge and tiny exponents,
/// small integers, ordinary numbers, and now and then an unsupported encoding.
fn ext_value(rng: &mut StdRng) -> [u8; 10] {
    const J: u64 = 1 << 63;
    let sign: u16 = if rng.gen_bool(0.5) { 0x8000 } else { 0 };
    let (e, m): (u16, u64) = match rng.gen_range(0..16) {
        0 => (0, 0),
        1 => (0x7fff, J),
        2 => (
            0x7fff,
            J | 1 << 62 | (rng.gen::<u64>() >> rng.gen_range(2..64)),
        ),
        3 => (0x7fff, J | (rng.gen::<u64>() >> 2).max(1)),
        4 => (0, rng.gen::<u64>() >> rng.gen_range(1..64)),
        5 => (0x7fff - rng.gen_range(1..40), J | rng.gen::<u64>()),
        6 => (rng.gen_range(1..40), J | rng.gen::<u64>()),
        7 => {
            let v = rng.gen_range(1..1000u64);
            let lz = v.leading_zeros();
            (0x3fff + 63 - lz as u16, v << lz)
        }
        8 => (
            0x3fff + rng.gen_range(0..2),
            J | (rng.gen::<u64>() >> rng.gen_range(1..64)),
        ),
        9 => match rng.gen_range(0..3) {
            0 => (rng.gen_range(1..0x7fff), rng.gen::<u64>() >> 1),
            1 => (0, J | rng.gen::<u64>()),
            _ => (0x7fff, rng.gen::<u64>() >> 1),
        },
        10 => (0x3fff - rng.gen_range(1..70), J | rng.gen::<u64>()),
        11 => (0x3fff + rng.gen_range(0..70), J | rng.gen::<u64>()),
        12 => (0x3fff + rng.gen_range(60..70), J | rng.gen::<u64>()),
        _ => (rng.gen_range(0x3f00..0x4100), J | rng.gen::<u64>()),
    };
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&m.to_le_bytes());
    b[8..].copy_from_slice(&(sign | e).to_le_bytes());
    b
}

fn f64_value(rng: &mut StdRng) -> u64 {
    let v = match rng.gen_range(0..8) {
        0 => 0,
        1 => 0x7ff0_0000_0000_0000,
        2 => 0x7ff0_0000_0000_0000 | rng.gen_range(1..1u64 << 52),
        3 => rng.gen_range(1..1u64 << 52),
        4 => (rng.gen_range(-1000i64..1000) as f64 / 4.0).to_bits(),
        _ => rng.gen::<u64>() & !(1 << 63),
    };
    v | if rng.gen_bool(0.5) { 1 << 63 } else { 0 }
}

fn f32_value(rng: &mut StdRng) -> u32 {
    let v = match rng.gen_range(0..8) {
        0 => 0,
        1 => 0x7f80_0000,
        2 => 0x7f80_0000 | rng.gen_range(1..1u32 << 23),
        3 => rng.gen_range(1..1u32 << 23),
        4 => (rng.gen_range(-1000i32..1000) as f32 / 4.0).to_bits(),
        _ => rng.gen::<u32>() & !(1 << 31),
    };
    v | if rng.gen_bool(0.5) { 1 << 31 } else { 0 }
}

/// FCW with all exceptions masked and random precision (not the reserved 01) and rounding.
fn random_fcw(rng: &mut StdRng) -> u16 {
    let pc = [0u16, 2, 3][rng.gen_range(0..3)];
    0x7f | pc << 8 | rng.gen_range(0..4u16) << 10
}

/// Memory contents for an x87 memory operand of `size` bytes, by what the instruction
/// reads there.
fn x87_mem(rng: &mut StdRng, m: M, ms: iced_x86::MemorySize, out: &mut [u8]) {
    use iced_x86::MemorySize as S;
    let int = |rng: &mut StdRng| -> i64 {
        match rng.gen_range(0..4) {
            0 => rng.gen_range(-100..100),
            1 => rng.gen::<i16>() as i64,
            2 => rng.gen::<i32>() as i64,
            _ => rng.gen(),
        }
    };
    let env = |rng: &mut StdRng, out: &mut [u8], small: bool| {
        let fcw = random_fcw(rng);
        let fsw = rng.gen::<u16>() & 0x7f7f;
        let tag = rng.gen::<u16>();
        let w = if small { 2 } else { 4 };
        out[0..2].copy_from_slice(&fcw.to_le_bytes());
        out[w..w + 2].copy_from_slice(&fsw.to_le_bytes());
        out[2 * w..2 * w + 2].copy_from_slice(&tag.to_le_bytes());
    };
    match ms {
        S::Float32 => out[..4].copy_from_slice(&f32_value(rng).to_le_bytes()),
        S::Float64 => out[..8].copy_from_slice(&f64_value(rng).to_le_bytes()),
        S::Float80 => out[..10].copy_from_slice(&ext_value(rng)),
        S::Int16 => out[..2].copy_from_slice(&(int(rng) as i16).to_le_bytes()),
        S::Int32 => out[..4].copy_from_slice(&(int(rng) as i32).to_le_bytes()),
        S::Int64 => out[..8].copy_from_slice(&int(rng).to_le_bytes()),
        S::Bcd => {
            for b in out[..9].iter_mut() {
                *b = rng.gen_range(0..10) << 4 | rng.gen_range(0..10);
            }
            let n = rng.gen_range(0..9);
            out[n..9].fill(0);
            out[9] = if rng.gen_bool(0.5) { 0x80 } else { 0 };
        }
        S::FpuEnv14 | S::FpuEnv28 => env(rng, out, ms == S::FpuEnv14),
        S::FpuState94 | S::FpuState108 => {
            let small = ms == S::FpuState94;
            env(rng, out, small);
            let n = if small { 14 } else { 28 };
            for i in 0..8 {
                out[n + 10 * i..n + 10 * i + 10].copy_from_slice(&ext_value(rng));
            }
        }
        S::Fxsave_512Byte | S::Fxsave64_512Byte => {
            // FXRSTOR: a valid image (MXCSR without reserved bits); the rest random.
            out[0..2].copy_from_slice(&random_fcw(rng).to_le_bytes());
            let fsw = rng.gen::<u16>() & 0x7f7f;
            out[2..4].copy_from_slice(&fsw.to_le_bytes());
            let mxcsr = MXCSR_DEFAULT as u32 | rng.gen_range(0..4u32) << 13;
            out[24..28].copy_from_slice(&mxcsr.to_le_bytes());
            for i in 0..8 {
                out[32 + 16 * i..42 + 16 * i].copy_from_slice(&ext_value(rng));
            }
            // FIP canonical for 48 address bits, so hosts with 5-level paging (57)
            // agree with the engine's 48.
            let fip = ((rng.gen::<u64>() << 16) as i64 >> 16) as u64;
            out[8..16].copy_from_slice(&fip.to_le_bytes());
        }
        _ if m == M::Fldcw => out[..2].copy_from_slice(&random_fcw(rng).to_le_bytes()),
        _ => {}
    }
}

/// Position of an 80-bit value on the number line of its sign (consecutive values differ
/// by one), for the 1-ulp tolerance.
fn ulp_index(b: &[u8]) -> (bool, u16, i128) {
    let m = u64::from_le_bytes(b[..8].try_into().unwrap());
    let se = u16::from_le_bytes([b[8], b[9]]);
    let e = se & 0x7fff;
    let idx = if e == 0 {
        m as i128
    } else {
        ((e as i128) << 63) | (m & !(1 << 63)) as i128
    };
    (se & 0x8000 != 0, e, idx)
}

fn close(a: &[u8], b: &[u8]) -> bool {
    let (sa, ea, ia) = ulp_index(a);
    let (sb, eb, ib) = ulp_index(b);
    a == b || (sa == sb && ea != 0x7fff && eb != 0x7fff && (ia - ib).abs() <= 1)
}

fn fx_state(fx: &[u8]) -> String {
    let mut s = format!(
        "fcw {:04x} fsw {:04x} (top {}) ftw {:02x}",
        u16::from_le_bytes([fx[0], fx[1]]),
        u16::from_le_bytes([fx[2], fx[3]]),
        (u16::from_le_bytes([fx[2], fx[3]]) >> 11) & 7,
        fx[4]
    );
    for i in 0..8 {
        let r = &fx[32 + 16 * i..42 + 16 * i];
        let m = u64::from_le_bytes(r[..8].try_into().unwrap());
        s += &format!(" st{i}={:04x}:{m:016x}", u16::from_le_bytes([r[8], r[9]]));
    }
    s
}

/// Every x87 instruction form, register and memory, with random stacks (TOP, tags and
/// values of every class), FCW (PC, RC; exceptions masked), FSW, flags and memory,
/// against the host FPU: ST0–7 (80 bits), FCW, FSW (C0–C3, TOP, flags), the abridged tag,
/// GPRs, RFLAGS, XMM registers, MXCSR and memory must match bit for bit. Exceptions:
/// transcendental results may be 1 ulp off and their C1 may differ; FIP and FDP are
/// compared relative to the instruction and the buffer (they are addresses); FXSAVE's
/// MXCSR_MASK is not compared (the engine reports no DAZ). A quarter of the cases unmask
/// some exceptions (see below). 25 × `EMU_DIFF_CASES` cases per form.
#[test]
fn x87_instructions_match_host() {
    let seed: u64 = std::env::var("EMU_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: usize = std::env::var("EMU_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
        * 25;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x87);
    let native = Native::new(true);
    let mem = memory();
    setup_long_mode(&mem);
    let mut cpu = Cpu::new(&mem);
    let mut plat = TestPlatform::default();
    let mut host_store = vec![0u128; BUF / 16];
    // SAFETY: viewing a u128 vector as bytes.
    let host_buf: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(host_store.as_mut_ptr() as *mut u8, BUF) };
    let (mut forms, mut tested, mut ulp_off) = (0usize, 0usize, 0usize);
    for code in Code::values() {
        let oc = code.op_code();
        if oc.encoding() != iced_x86::EncodingKind::Legacy
            || !oc.mode64()
            || !X87_CLASSES.contains(&oc.mnemonic())
        {
            continue;
        }
        let m = oc.mnemonic();
        let mut ran = 0;
        for _ in 0..cases {
            let mut ops = Vec::new();
            for &k in oc.op_kinds() {
                ops.push(match k {
                    K::st0 => Op::R(Register::ST0),
                    K::sti_opcode => {
                        Op::R(unsafe_reg(Register::ST0 as usize + rng.gen_range(0..8)))
                    }
                    K::mem => Op::Mem,
                    K::ax => Op::R(Register::AX),
                    _ => panic!("{code:?}: operand kind {k:?}"),
                });
            }
            let disp = rng.gen_range(0..8) * 16;
            let Some(ins) = build(code, &ops, disp) else {
                continue;
            };
            let mut enc = Encoder::new(64);
            if enc.encode(&ins, CODE).is_err() {
                continue;
            }
            let bytes = enc.take_buffer();
            // Inputs: registers, flags, memory, and the x87 state as an FXSAVE image.
            let mut st = XSt {
                st: St {
                    gpr: [0; 16],
                    flags: (rng.gen::<u64>() & ARITH) | 2,
                    mxcsr: MXCSR_DEFAULT,
                    xmm: [0; 16],
                    ymm_hi: [0; 16],
                },
                fx: [0; 512],
            };
            for g in st.st.gpr.iter_mut() {
                *g = interesting(&mut rng);
            }
            // A quarter of the cases unmask some of IE, DE, ZE and PE; the input flags are
            // then only masked ones, so nothing is pending (no #MF natively: the epilogue's
            // FXSAVE and FNINIT do not wait) and an exception the instruction raises shows
            // up as ES/B and a suppressed result.
            let mut fcw = random_fcw(&mut rng);
            if rng.gen_bool(0.25) {
                fcw &= !(rng.gen::<u16>() & 0x3f);
            }
            let top = rng.gen_range(0..8u16);
            let fsw = (rng.gen::<u16>() & 0x473f & !(!fcw & 0x3f)) | top << 11;
            let ftw: u8 = match rng.gen_range(0..4) {
                0 => 0xff,
                1 => 0,
                _ => rng.gen(),
            };
            st.st.xmm.iter_mut().for_each(|x| *x = xmm_value(&mut rng));
            let fx = &mut st.fx;
            fx[0..2].copy_from_slice(&fcw.to_le_bytes());
            fx[2..4].copy_from_slice(&fsw.to_le_bytes());
            fx[4] = ftw;
            fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
            fx[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
            for i in 0..8 {
                let v = ext_value(&mut rng);
                fx[32 + 16 * i..42 + 16 * i].copy_from_slice(&v);
            }
            // Keep ST0 mostly inside the defined domain of F2XM1 (outside it the engine
            // returns the operand like the host) and always inside that of FYL2XP1
            // (|x| < 1 - sqrt(2)/2; outside the result is undefined) if finite nonzero.
            let e0 = u16::from_le_bytes([fx[40], fx[41]]) & 0x7fff;
            let out_of_domain = e0 != 0 && e0 != 0x7fff && e0 >= 0x3ffd;
            if (m == M::F2xm1 && rng.gen_bool(0.8)) || (m == M::Fyl2xp1 && out_of_domain) {
                let r = rng.gen_range(1..40u16);
                let e = if m == M::F2xm1 {
                    0x4000 - r
                } else {
                    0x3ffd - r
                };
                let v = (1u64 << 63) | rng.gen::<u64>();
                let v = if e == 0x3fff { 1 << 63 } else { v };
                let sign = if rng.gen_bool(0.5) { 0x8000u16 } else { 0 };
                fx[32..40].copy_from_slice(&v.to_le_bytes());
                fx[40..42].copy_from_slice(&(sign | e).to_le_bytes());
            }
            rng.fill(&mut host_buf[..]);
            let moff = (MEM_OFF + disp) as usize;
            if ins.op_count() > 0 && ins.op0_kind() == iced_x86::OpKind::Memory {
                x87_mem(
                    &mut rng,
                    m,
                    ins.memory_size(),
                    &mut host_buf[moff..moff + 512],
                );
            }
            // Engine.
            mem.write_slice(host_buf, GuestAddress(DATA)).unwrap();
            let mut regs = long_mode_regs(CODE);
            regs.gpr = st.st.gpr;
            regs.gpr[3] = DATA;
            regs.gpr[4] = KSTACK_TOP;
            regs.rflags = st.st.flags;
            regs.fpu.xmm = st.st.xmm;
            regs.fpu.fcw = fcw;
            regs.fpu.fsw = fsw;
            regs.fpu.ftw = ftw;
            for i in 0..8 {
                regs.fpu.st[i] = [0; 16];
                regs.fpu.st[i][..10].copy_from_slice(&st.fx[32 + 16 * i..42 + 16 * i]);
            }
            let mut prog = bytes.clone();
            prog.push(0xf4);
            cpu.ram().write_phys(CODE, &prog);
            cpu.set_regs(&regs);
            plat.outs.clear();
            let exit = run_to_halt(&mut cpu, &mut plat);
            assert_eq!(exit, Exit::Halted, "{ins} did not halt");
            let input = fx_state(&st.fx);
            assert!(
                vectors(&plat).is_empty(),
                "{ins} ({code:?}, bytes {bytes:02x?}, seed {seed}): exception {:?}\n in   {input}",
                vectors(&plat)
            );
            let er = cpu.regs();
            let mut emu_buf = vec![0u8; BUF];
            mem.read_slice(&mut emu_buf, GuestAddress(DATA)).unwrap();
            // Host.
            let mut hs = st;
            hs.st.gpr[3] = host_buf.as_ptr() as u64;
            native.run_x87(&bytes, &mut hs);
            // The engine's state as an image, for comparing and printing.
            let mut efx = [0u8; 512];
            efx[0..2].copy_from_slice(&er.fpu.fcw.to_le_bytes());
            efx[2..4].copy_from_slice(&er.fpu.fsw.to_le_bytes());
            efx[4] = er.fpu.ftw;
            for i in 0..8 {
                efx[32 + 16 * i..42 + 16 * i].copy_from_slice(&er.fpu.st[i][..10]);
            }
            // FXSAVE's MXCSR_MASK differs (the host's has DAZ). (Stored pointer fields
            // compare as they are: control instructions store what the prologue loaded.)
            use iced_x86::MemorySize as S;
            let ptrs = match ins.memory_size() {
                S::Fxsave_512Byte | S::Fxsave64_512Byte => 28..32,
                _ => 0..0,
            };
            if !ptrs.is_empty() {
                let r = moff + ptrs.start..moff + ptrs.end;
                emu_buf[r.clone()].copy_from_slice(&host_buf[r]);
            }
            let tol = transcendental(m);
            let mut fsw_mask = 0xffffu16;
            if tol {
                fsw_mask &= !0x200;
            }
            let hfx = &hs.fx;
            let word = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
            let mut bad = word(&efx, 0) != word(hfx, 0)
                || word(&efx, 2) & fsw_mask != word(hfx, 2) & fsw_mask
                || efx[4] != hfx[4];
            let mut off_by_ulp = false;
            for i in 0..8 {
                let (a, b) = (
                    &efx[32 + 16 * i..42 + 16 * i],
                    &hfx[32 + 16 * i..42 + 16 * i],
                );
                if a != b {
                    if tol && close(a, b) {
                        off_by_ulp = true;
                    } else {
                        bad = true;
                    }
                }
            }
            let mut eg = er.gpr;
            eg[3] = 0;
            eg[4] = 0;
            let mut hg = hs.st.gpr;
            hg[3] = 0;
            hg[4] = 0;
            // FOP, FIP and FDP: FIP relative to the instruction and FDP to the buffer
            // (they are addresses), unless loaded from memory as they are.
            let h = &hs.fx;
            let q = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
            let (hfop, hfip, hfdp) = (u16::from_le_bytes([h[6], h[7]]), q(8), q(16));
            let loaded = matches!(m, M::Fldenv | M::Frstor | M::Fxrstor | M::Fxrstor64);
            let rel = |e: u64, h: u64, ebase: u64, hbase: u64| {
                if loaded || (e == 0 && h == 0) {
                    e == h
                } else {
                    e.wrapping_sub(ebase) == h.wrapping_sub(hbase)
                }
            };
            let slot_addr = native.mem as u64 + native.slot as u64;
            let ptrs_ok = er.fpu.fop == hfop
                && rel(er.fpu.fip, hfip, CODE, slot_addr)
                && rel(er.fpu.fdp, hfdp, DATA, host_buf.as_ptr() as u64);
            if !ptrs_ok {
                eprintln!(
                    "pointers: emu fop {:#x} fip {:#x} fdp {:#x}; host fop {hfop:#x} fip {hfip:#x} (slot {slot_addr:#x}) fdp {hfdp:#x} (buffer {:#x})",
                    er.fpu.fop,
                    er.fpu.fip,
                    er.fpu.fdp,
                    host_buf.as_ptr() as u64
                );
            }
            bad |= !ptrs_ok
                || eg != hg
                || (er.rflags & ARITH) != (hs.st.flags & ARITH)
                || emu_buf != *host_buf
                || er.fpu.xmm != hs.st.xmm
                || er.fpu.mxcsr as u64 != hs.st.mxcsr;
            if bad {
                let md: Vec<(usize, u8, u8)> = (0..BUF)
                    .filter(|&i| emu_buf[i] != host_buf[i])
                    .map(|i| (i - moff, emu_buf[i], host_buf[i]))
                    .take(16)
                    .collect();
                panic!(
                    "x87 mismatch (seed {seed}) for `{ins}` ({code:?}) bytes {bytes:02x?}\n in   {input}\n emu  {}\n host {}\n flags in {:#x} emu {:#x} host {:#x}; rax emu {:#x} host {:#x}\n memory (operand offset, emu, host): {md:02x?}",
                    fx_state(&efx),
                    fx_state(hfx),
                    st.st.flags,
                    er.rflags,
                    hs.st.flags,
                    er.gpr[0],
                    hs.st.gpr[0],
                );
            }
            ulp_off += off_by_ulp as usize;
            ran += 1;
        }
        if ran > 0 {
            forms += 1;
            tested += ran;
        }
    }
    eprintln!(
        "x87 differential: {forms} instruction forms, {tested} cases, {ulp_off} transcendental results 1 ulp off (seed {seed})"
    );
    assert!(forms > 150, "too few x87 instruction forms tested: {forms}");
}

/// The MMX instructions the differential test runs: every legacy form with an MM
/// operand, plus CVTPI2PS/CVTPI2PD (whose memory forms have none) and EMMS. (FEMMS is
/// AMD's: #UD on this Intel host.)
const MMX_CLASSES: &[M] = &[
    M::Emms,
    M::Movd,
    M::Movq,
    M::Movntq,
    M::Movq2dq,
    M::Movdq2q,
    M::Maskmovq,
    M::Pmovmskb,
    M::Pextrw,
    M::Pinsrw,
    M::Pshufw,
    M::Pxor,
    M::Por,
    M::Pand,
    M::Pandn,
    M::Paddb,
    M::Paddw,
    M::Paddd,
    M::Paddq,
    M::Psubb,
    M::Psubw,
    M::Psubd,
    M::Psubq,
    M::Paddusb,
    M::Paddusw,
    M::Psubusb,
    M::Psubusw,
    M::Paddsb,
    M::Paddsw,
    M::Psubsb,
    M::Psubsw,
    M::Pcmpeqb,
    M::Pcmpeqw,
    M::Pcmpeqd,
    M::Pcmpgtb,
    M::Pcmpgtw,
    M::Pcmpgtd,
    M::Pminub,
    M::Pmaxub,
    M::Pminsw,
    M::Pmaxsw,
    M::Pavgb,
    M::Pavgw,
    M::Pmullw,
    M::Pmulhw,
    M::Pmulhuw,
    M::Pmuludq,
    M::Pmaddwd,
    M::Psadbw,
    M::Psllw,
    M::Pslld,
    M::Psllq,
    M::Psrlw,
    M::Psrld,
    M::Psrlq,
    M::Psraw,
    M::Psrad,
    M::Punpcklbw,
    M::Punpcklwd,
    M::Punpckldq,
    M::Punpckhbw,
    M::Punpckhwd,
    M::Punpckhdq,
    M::Packsswb,
    M::Packssdw,
    M::Packuswb,
    M::Cvtpi2ps,
    M::Cvtps2pi,
    M::Cvttps2pi,
    M::Cvtpi2pd,
    M::Cvtpd2pi,
    M::Cvttpd2pi,
    M::Pabsb,
    M::Pabsw,
    M::Pabsd,
    M::Palignr,
    M::Phaddw,
    M::Phaddd,
    M::Phaddsw,
    M::Phsubw,
    M::Phsubd,
    M::Phsubsw,
    M::Pmaddubsw,
    M::Pmulhrsw,
    M::Pshufb,
    M::Psignb,
    M::Psignw,
    M::Psignd,
];

/// The number of forms of [`MMX_CLASSES`] the MMX differential test runs.
const MMX_FORMS: usize = 103;

/// A random 64-bit lane value for an MM register: integers of interest or float pairs.
fn mm_value(rng: &mut StdRng) -> u64 {
    if rng.gen_bool(0.5) {
        interesting(rng)
    } else {
        xmm_value(rng) as u64
    }
}

/// Operands of an MMX form (None if a kind is not one of them).
fn gen_mmx_ops(rng: &mut StdRng, code: Code) -> Option<Vec<Op>> {
    let mm = |rng: &mut StdRng| Op::R(unsafe_reg(Register::MM0 as usize + rng.gen_range(0..8)));
    let xmm = |rng: &mut StdRng| Op::R(unsafe_reg(Register::XMM0 as usize + rng.gen_range(0..16)));
    let mut ops = Vec::new();
    for &k in code.op_code().op_kinds() {
        ops.push(match k {
            K::mm_reg | K::mm_rm => mm(rng),
            K::mm_or_mem | K::xmm_or_mem | K::r32_or_mem | K::r64_or_mem if rng.gen_bool(0.5) => {
                Op::Mem
            }
            K::mm_or_mem => mm(rng),
            K::xmm_reg | K::xmm_rm | K::xmm_or_mem => xmm(rng),
            K::r32_reg | K::r32_or_mem => Op::R(pick_reg(rng, 4)),
            K::r64_reg | K::r64_or_mem => Op::R(pick_reg(rng, 8)),
            K::mem => Op::Mem,
            // MASKMOVQ's DS:rDI, set up by the caller.
            K::seg_rDI => Op::R(Register::RDI),
            K::imm8 => Op::Imm(rng.gen_range(0..=255)),
            _ => return None,
        });
    }
    Some(ops)
}

/// Every MMX form (see [`MMX_CLASSES`]) with random x87 state (TOP, tags, FSW flags,
/// significands and exponents of the registers MM0–7 alias), XMM registers, MXCSR rounding,
/// GPRs and memory against the host, compared like the x87 test: the FXSAVE image's FCW,
/// FSW (TOP), abridged tag and all 80 bits of ST0–7 (so the MMX transition, the aliasing
/// and the exponent of a written MM register), FOP/FIP/FDP, GPRs, RFLAGS, XMM, MXCSR and
/// memory bit for bit (MXCSR minus the exception flags for the conversions, which do not
/// set them). MASKMOVQ stores through RDI into the buffer.
#[test]
fn mmx_instructions_match_host() {
    let seed: u64 = std::env::var("EMU_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: usize = std::env::var("EMU_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
        * 5;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x33);
    let native = Native::new(true);
    let mem = memory();
    setup_long_mode(&mem);
    let mut cpu = Cpu::new(&mem);
    let mut plat = TestPlatform::default();
    let mut host_store = vec![0u128; BUF / 16];
    // SAFETY: viewing a u128 vector as bytes (16-byte aligned for m128 operands).
    let host_buf: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(host_store.as_mut_ptr() as *mut u8, BUF) };
    let (mut forms, mut tested) = (0usize, 0usize);
    for code in Code::values() {
        let oc = code.op_code();
        let m = oc.mnemonic();
        let mm_operand = oc
            .op_kinds()
            .iter()
            .any(|k| matches!(k, K::mm_reg | K::mm_rm | K::mm_or_mem));
        if oc.encoding() != iced_x86::EncodingKind::Legacy
            || !oc.mode64()
            || !MMX_CLASSES.contains(&m)
            || !(mm_operand || matches!(m, M::Emms | M::Cvtpi2ps | M::Cvtpi2pd))
        {
            continue;
        }
        let mut ran = 0;
        for _ in 0..cases {
            let Some(ops) = gen_mmx_ops(&mut rng, code) else {
                break;
            };
            let disp = rng.gen_range(0..8) * 16;
            let ins = if m == M::Maskmovq {
                let r = |o: &Op| match o {
                    Op::R(r) => *r,
                    _ => Register::None,
                };
                Instruction::with_maskmovq(64, r(&ops[1]), r(&ops[2]), Register::None).ok()
            } else {
                build(code, &ops, disp)
            };
            let Some(ins) = ins else {
                continue;
            };
            let mut enc = Encoder::new(64);
            if enc.encode(&ins, CODE).is_err() {
                continue;
            }
            let bytes = enc.take_buffer();
            let mut st = XSt {
                st: St {
                    gpr: [0; 16],
                    flags: (rng.gen::<u64>() & ARITH) | 2,
                    mxcsr: MXCSR_DEFAULT | rng.gen_range(0..4) << 13,
                    xmm: [0; 16],
                    ymm_hi: [0; 16],
                },
                fx: [0; 512],
            };
            for g in st.st.gpr.iter_mut() {
                *g = interesting(&mut rng);
            }
            let fcw = random_fcw(&mut rng);
            let top = rng.gen_range(0..8u16);
            let fsw = (rng.gen::<u16>() & 0x473f) | top << 11;
            let ftw: u8 = match rng.gen_range(0..4) {
                0 => 0xff,
                1 => 0,
                _ => rng.gen(),
            };
            st.st.xmm.iter_mut().for_each(|x| *x = xmm_value(&mut rng));
            let fx = &mut st.fx;
            fx[0..2].copy_from_slice(&fcw.to_le_bytes());
            fx[2..4].copy_from_slice(&fsw.to_le_bytes());
            fx[4] = ftw;
            fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
            fx[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
            for i in 0..8 {
                let se: u16 = if rng.gen_bool(0.5) { 0xffff } else { rng.gen() };
                fx[32 + 16 * i..40 + 16 * i].copy_from_slice(&mm_value(&mut rng).to_le_bytes());
                fx[40 + 16 * i..42 + 16 * i].copy_from_slice(&se.to_le_bytes());
            }
            rng.fill(&mut host_buf[..]);
            let moff = (MEM_OFF + disp) as usize;
            // Engine.
            mem.write_slice(host_buf, GuestAddress(DATA)).unwrap();
            let mut regs = long_mode_regs(CODE);
            regs.gpr = st.st.gpr;
            regs.gpr[3] = DATA;
            regs.gpr[4] = KSTACK_TOP;
            if m == M::Maskmovq {
                regs.gpr[7] = DATA + moff as u64;
            }
            regs.rflags = st.st.flags;
            regs.fpu.xmm = st.st.xmm;
            regs.fpu.mxcsr = st.st.mxcsr as u32;
            regs.fpu.fcw = fcw;
            regs.fpu.fsw = fsw;
            regs.fpu.ftw = ftw;
            for i in 0..8 {
                regs.fpu.st[i] = [0; 16];
                regs.fpu.st[i][..10].copy_from_slice(&st.fx[32 + 16 * i..42 + 16 * i]);
            }
            let mut prog = bytes.clone();
            prog.push(0xf4);
            cpu.ram().write_phys(CODE, &prog);
            cpu.set_regs(&regs);
            plat.outs.clear();
            let exit = run_to_halt(&mut cpu, &mut plat);
            assert_eq!(exit, Exit::Halted, "{ins} did not halt");
            let input = fx_state(&st.fx);
            assert!(
                vectors(&plat).is_empty(),
                "{ins} ({code:?}, bytes {bytes:02x?}, seed {seed}): exception {:?}\n in   {input}",
                vectors(&plat)
            );
            let er = cpu.regs();
            let mut emu_buf = vec![0u8; BUF];
            mem.read_slice(&mut emu_buf, GuestAddress(DATA)).unwrap();
            // Host.
            let mut hs = st;
            hs.st.gpr[3] = host_buf.as_ptr() as u64;
            if m == M::Maskmovq {
                hs.st.gpr[7] = host_buf.as_ptr() as u64 + moff as u64;
            }
            native.run_x87(&bytes, &mut hs);
            let mut efx = [0u8; 512];
            efx[0..2].copy_from_slice(&er.fpu.fcw.to_le_bytes());
            efx[2..4].copy_from_slice(&er.fpu.fsw.to_le_bytes());
            efx[4] = er.fpu.ftw;
            for i in 0..8 {
                efx[32 + 16 * i..42 + 16 * i].copy_from_slice(&er.fpu.st[i][..10]);
            }
            let h = &hs.fx;
            let q = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
            let (hfop, hfip, hfdp) = (u16::from_le_bytes([h[6], h[7]]), q(8), q(16));
            let mut eg = er.gpr;
            let mut hg = hs.st.gpr;
            for r in [3, 4, 7] {
                if r != 7 || m == M::Maskmovq {
                    eg[r] = 0;
                    hg[r] = 0;
                }
            }
            // The conversions' MXCSR exception flags are not tracked (as for the XMM ones).
            let mxcsr_mask = if matches!(
                m,
                M::Cvtpi2ps | M::Cvtps2pi | M::Cvttps2pi | M::Cvtpi2pd | M::Cvtpd2pi | M::Cvttpd2pi
            ) {
                !0x3f
            } else {
                !0
            };
            let bad = efx[..5] != h[..5]
                || (0..8).any(|i| efx[32 + 16 * i..42 + 16 * i] != h[32 + 16 * i..42 + 16 * i])
                || (er.fpu.fop, er.fpu.fip, er.fpu.fdp) != (hfop, hfip, hfdp)
                || eg != hg
                || (er.rflags & ARITH) != (hs.st.flags & ARITH)
                || emu_buf != *host_buf
                || er.fpu.xmm != hs.st.xmm
                || er.fpu.mxcsr as u64 & mxcsr_mask != hs.st.mxcsr & mxcsr_mask;
            if bad {
                let md: Vec<(usize, u8, u8)> = (0..BUF)
                    .filter(|&i| emu_buf[i] != host_buf[i])
                    .map(|i| (i - moff, emu_buf[i], host_buf[i]))
                    .take(16)
                    .collect();
                let xd: Vec<String> = (0..16)
                    .filter(|&i| er.fpu.xmm[i] != hs.st.xmm[i])
                    .map(|i| {
                        format!(
                            "xmm{i}: in {:#x} emu {:#x} host {:#x}",
                            st.st.xmm[i], er.fpu.xmm[i], hs.st.xmm[i]
                        )
                    })
                    .collect();
                let gd: Vec<String> = (0..16)
                    .filter(|&i| eg[i] != hg[i])
                    .map(|i| {
                        format!(
                            "r{i}: in {:#x} emu {:#x} host {:#x}",
                            st.st.gpr[i], eg[i], hg[i]
                        )
                    })
                    .collect();
                panic!(
                    "MMX mismatch (seed {seed}) for `{ins}` ({code:?}) bytes {bytes:02x?}\n in   {input}\n emu  {}\n host {}\n fop/fip/fdp emu {:#x} {:#x} {:#x} host {hfop:#x} {hfip:#x} {hfdp:#x}\n gprs {gd:?}\n {xd:?}\n flags in {:#x} emu {:#x} host {:#x}; mxcsr in {:#x} emu {:#x} host {:#x}\n memory (operand offset, emu, host): {md:02x?}",
                    fx_state(&efx),
                    fx_state(h),
                    er.fpu.fop,
                    er.fpu.fip,
                    er.fpu.fdp,
                    st.st.flags,
                    er.rflags,
                    hs.st.flags,
                    st.st.mxcsr,
                    er.fpu.mxcsr,
                    hs.st.mxcsr,
                );
            }
            ran += 1;
        }
        if ran > 0 {
            forms += 1;
            tested += ran;
        } else {
            eprintln!("MMX form not run: {code:?}");
        }
    }
    eprintln!("MMX differential: {forms} instruction forms, {tested} cases (seed {seed})");
    assert_eq!(forms, MMX_FORMS, "MMX instruction forms tested");
}
