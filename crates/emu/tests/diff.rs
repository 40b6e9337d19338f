//! Differential tests: every integer instruction form (iced `Code`) of the classes the
//! engine implements runs with seeded random registers, flags and memory on the engine and
//! natively on the host CPU; results, flags (minus architecturally undefined ones) and
//! memory must match bit for bit.
//!
//! `EMU_DIFF_CASES` (cases per instruction form, default 40) and `EMU_DIFF_SEED` set the
//! run; a failure prints the seed, the instruction and both states.

mod common;

use common::*;
use emu::{Cpu, Exit};
use iced_x86::code_asm::*;
use iced_x86::{
    Code, Encoder, Instruction, MemoryOperand, Mnemonic as M, OpCodeOperandKind as K, Register,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use vm_memory::{Bytes, GuestAddress};

const BUF: usize = 1024;
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
}

/// The power-on MXCSR: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u64 = 0x1f80;

const XMM_OFF: i32 = 144;

/// An executable buffer with prologue (load registers and flags from *rdi), a 32-byte
/// slot for the instruction under test, and an epilogue (store them back).
struct Native {
    mem: *mut u8,
    slot: usize,
}

impl Native {
    fn new() -> Self {
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
            a.ldmxcsr(dword_ptr(rdi + 136)).unwrap();
            a.mov(rdi, qword_ptr(rdi + 56)).unwrap();
        });
        let slot = pro.len();
        let epi = asm64(base + slot as u64 + 32, |a| {
            a.push(rdi).unwrap();
            a.mov(rdi, qword_ptr(rsp + 8)).unwrap();
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
            a.stmxcsr(dword_ptr(rdi + 136)).unwrap();
            a.pop(rax).unwrap();
            a.mov(qword_ptr(rdi + 56), rax).unwrap();
            for r in [rdi, r15, r14, r13, r12, rbp, rbx] {
                a.pop(r).unwrap();
            }
            a.ldmxcsr(dword_ptr(rsp)).unwrap();
            a.add(rsp, 8).unwrap();
            // The ABI requires DF=0 on return (the test may have set it).
            a.cld().unwrap();
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

    fn run(&self, code: &[u8], st: &mut St) {
        assert!(code.len() <= 32);
        // SAFETY: the slot is 32 bytes inside our RWX mapping; the code under test only
        // touches registers and the memory buffer rbx points at (the generator guarantees
        // it), and the prologue/epilogue preserve the callee-saved registers.
        unsafe {
            std::ptr::write_bytes(self.mem.add(self.slot), 0x90, 32);
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.mem.add(self.slot), code.len());
            let f: extern "C" fn(*mut St) = std::mem::transmute(self.mem);
            f(st as *mut St);
        }
    }
}

const XMMS: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

#[derive(Clone, Copy, Debug)]
enum Op {
    R(Register),
    Mem,
    Imm(i64),
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
            K::xmm_reg | K::xmm_rm => {
                Op::R(unsafe_reg(Register::XMM0 as usize + rng.gen_range(0..16)))
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
    run_diff(CLASSES, 517);
}

#[test]
fn sse_instructions_match_host() {
    let classes: Vec<M> = M::values().filter(|m| sse_class(*m)).collect();
    run_diff(&classes, 280);
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

/// The VEX-encoded general-purpose instructions (BMI1/BMI2), compared in their VEX forms.
fn bmi_class(m: M) -> bool {
    matches!(
        m,
        M::Andn
            | M::Bextr
            | M::Blsi
            | M::Blsmsk
            | M::Blsr
            | M::Bzhi
            | M::Mulx
            | M::Pdep
            | M::Pext
            | M::Rorx
            | M::Sarx
            | M::Shlx
            | M::Shrx
    )
}

/// Runs every form of `classes`; `min_forms` is the number of forms the classes have, so
/// a form that silently stops being generated fails the test.
fn run_diff(classes: &[M], min_forms: usize) {
    let seed: u64 = std::env::var("EMU_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: usize = std::env::var("EMU_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = StdRng::seed_from_u64(seed);
    let native = Native::new();
    let mem = memory();
    setup_long_mode(&mem);
    let mut cpu = Cpu::new(&mem);
    let mut plat = TestPlatform::default();
    let mut host_store = vec![0u128; BUF / 16];
    // SAFETY: viewing a u128 vector as bytes (16-byte aligned for SSE operands).
    let host_buf: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(host_store.as_mut_ptr() as *mut u8, BUF) };
    let mut tested = 0usize;
    let mut forms = 0usize;
    for code in Code::values() {
        let oc = code.op_code();
        // Legacy encodings, plus VEX for the general-purpose (BMI) instructions.
        let encoding_ok = match oc.encoding() {
            iced_x86::EncodingKind::Legacy => true,
            iced_x86::EncodingKind::VEX => bmi_class(oc.mnemonic()),
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
            let disp = rng.gen_range(0..8) * 16;
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
            };
            for x in st.xmm.iter_mut() {
                *x = xmm_value(&mut rng);
            }
            for g in st.gpr.iter_mut() {
                *g = interesting(&mut rng);
            }
            let m = ins.mnemonic();
            if mxcsr_rounding(m) {
                st.mxcsr = MXCSR_DEFAULT | rng.gen_range(0..4) << 13;
            }
            if string_compare(m) {
                for x in st.xmm.iter_mut() {
                    *x = string_value(&mut rng);
                }
                // Lengths: mostly in or near the element count, of either sign.
                for r in [0, 2] {
                    if rng.gen_bool(0.8) {
                        st.gpr[r] = rng.gen_range(-20i64..=20) as u64;
                    }
                }
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
                bad |= emu_gpr != host_gpr || emu_buf != host_buf || er.fpu.xmm != hs.xmm;
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
                    .collect();
                eprintln!("{xdiff:?}");
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
    let native = Native::new();
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
