//! Decoded basic blocks, cached by linear address and validated against the physical page
//! they came from and its code version (so self-modifying code, kernel text patching and
//! remapped pages are all seen).
//!
//! A block is a trace through one page: decoding goes on past conditional branches (the
//! not-taken path) and direct jumps to the same page, and ends at other control flow,
//! at an instruction that may change the execution mode, at the page boundary, or after
//! `MAX_BLOCK` instructions. The run loop leaves a block wherever execution departs from
//! the trace. An instruction
//! that straddles a page boundary is decoded on its own and not cached.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};

use crate::cpu::{Cpu, CS};
use crate::exceptions::R;
use crate::exec::fast::{classify, drop_dead_flags, operands, Kind, Operands};
use crate::platform::Platform;
use crate::tlb::Access;

const MAX_BLOCK: usize = 64;
const MAX_BLOCKS: usize = 1 << 16;

/// What the run loop needs of one instruction, in one place (so the hot loop reads one
/// small record per instruction instead of iced's `Instruction`).
pub struct Step {
    /// Address of the instruction (CS offset).
    pub ip: u64,
    /// Address of the next instruction, masked to the code size.
    pub next_ip: u64,
    pub kind: Kind,
    pub ops: Operands,
}

pub struct Block {
    pub instrs: Vec<Instruction>,
    /// How to run each instruction (parallel to `instrs`).
    pub steps: Vec<Step>,
    rip: u64,
    cs_base: u64,
    bitness: u32,
    phys: u64,
    vidx: usize,
    version: u32,
}

/// A multiplicative hasher for u64 keys (the std SipHash is far slower here).
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

const FRONT: usize = 4096;

pub struct BlockCache {
    map: HashMap<u64, Arc<Block>, BuildHasherDefault<KeyHasher>>,
    /// Direct-mapped front of `map` keyed by linear address: most lookups end here.
    front: Vec<Option<(u64, Arc<Block>)>>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            map: HashMap::default(),
            front: vec![None; FRONT],
        }
    }
}

impl BlockCache {
    /// Puts a block taken by `fetch_block` back into the front cache.
    pub(crate) fn put_back(&mut self, key: u64, block: Arc<Block>) {
        let slot = Self::slot(key);
        if self.front[slot].is_none() {
            self.front[slot] = Some((key, block));
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.front.iter_mut().for_each(|e| *e = None);
    }

    #[inline(always)]
    pub(crate) fn slot(lin: u64) -> usize {
        ((lin ^ (lin >> 12)) as usize) & (FRONT - 1)
    }
}

/// Where decoding of a block (a *trace*) may go on after a control-flow instruction.
/// The run loop leaves the block as soon as the next RIP is not the next instruction's
/// address, so a trace is only ever a guess about the common path, never a commitment.
enum Successor {
    /// A conditional branch: go on with the not-taken path.
    FallThrough,
    /// A direct unconditional jump: go on at its target (if on the same page).
    Jump(u64),
}

fn trace_successor(ins: &Instruction) -> Option<Successor> {
    let direct = matches!(
        ins.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    );
    match ins.flow_control() {
        FlowControl::ConditionalBranch if direct => Some(Successor::FallThrough),
        FlowControl::UnconditionalBranch if direct => {
            Some(Successor::Jump(ins.near_branch_target()))
        }
        _ => None,
    }
}

/// Instructions after which the block must end so the run loop re-reads the mode, the
/// interrupt window or the code mapping (control flow, unless `trace_successor` allows
/// going on).
fn ends_block(ins: &Instruction) -> bool {
    if ins.flow_control() != FlowControl::Next {
        return true;
    }
    match ins.mnemonic() {
        Mnemonic::Mov | Mnemonic::Pop => {
            // mov/pop to a segment register or control register.
            let r = ins.op0_register();
            r.is_segment_register() || r.is_cr() || r.is_dr()
        }
        Mnemonic::Sti
        | Mnemonic::Popf
        | Mnemonic::Popfd
        | Mnemonic::Popfq
        | Mnemonic::Wrmsr
        | Mnemonic::Lgdt
        | Mnemonic::Lidt
        | Mnemonic::Lldt
        | Mnemonic::Ltr
        | Mnemonic::Lmsw
        | Mnemonic::Clts
        | Mnemonic::Invlpg
        | Mnemonic::Lss
        | Mnemonic::Lfs
        | Mnemonic::Lgs
        | Mnemonic::Fxrstor
        | Mnemonic::Fxrstor64
        | Mnemonic::Xrstor
        | Mnemonic::Xrstor64
        | Mnemonic::Xsetbv
        | Mnemonic::Swapgs => true,
        _ => ins.code() == Code::INVALID,
    }
}

/// The execution path and pre-decoded operands of each instruction of a block; a fast
/// memory path whose address form `operands` cannot represent goes generic.
fn classify_all(instrs: &[Instruction], bitness: u32) -> Vec<Step> {
    let mask = match bitness {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    };
    let (mut kinds, ops): (Vec<Kind>, Vec<Operands>) = instrs
        .iter()
        .map(|i| {
            let o = operands(i, bitness);
            let k = classify(i, bitness);
            let k = if k.uses_mem_form() && !o.mem_ok {
                Kind::Generic
            } else {
                k
            };
            (k, o)
        })
        .unzip();
    drop_dead_flags(&mut kinds);
    instrs
        .iter()
        .zip(kinds)
        .zip(ops)
        .map(|((i, kind), ops)| Step {
            ip: i.ip(),
            next_ip: i.next_ip() & mask,
            kind,
            ops,
        })
        .collect()
}

impl Cpu {
    /// The block at CS:RIP, from the cache or freshly decoded.
    /// Returns the block and, if it should go back into the front cache after running (it
    /// is moved out while it runs, which saves reference counting), its key.
    pub(crate) fn fetch_block(&mut self, io: &mut dyn Platform) -> R<(Arc<Block>, Option<u64>)> {
        let cs_base = if self.long64() { 0 } else { self.seg[CS].base };
        let mut lin = cs_base.wrapping_add(self.rip);
        if !self.long64() {
            lin &= 0xffff_ffff;
        }
        let e = self.translate(lin, Access::Exec, self.user())?;
        let valid = |cpu: &Cpu, b: &Block| {
            b.rip == cpu.rip
                && b.cs_base == cs_base
                && b.bitness == cpu.bitness
                && b.phys == e.phys
                && cpu.ram.versions().current(b.vidx) == b.version
        };
        let slot = BlockCache::slot(lin);
        if let Some((key, b)) = self.cache.front[slot].take() {
            if key == lin && valid(self, &b) {
                return Ok((b, Some(key)));
            }
            // Stale or colliding: dropped; the block about to run takes the slot.
        }
        if let Some(b) = self.cache.map.get(&lin) {
            if valid(self, b) {
                return Ok((b.clone(), Some(lin)));
            }
        }
        let off = (lin & 0xfff) as usize;
        let mut instrs = Vec::new();
        if !e.host.is_null() {
            // Record the version before reading the bytes: a concurrent write then makes
            // the block stale rather than silently wrong.
            let version = self.ram.versions().mark_code(e.vidx());
            // SAFETY: `host` points at a whole 4K page of RAM.
            let page = unsafe { std::slice::from_raw_parts(e.host, 4096) };
            let mut dec =
                Decoder::with_ip(self.bitness, &page[off..], self.rip, DecoderOptions::NONE);
            while dec.can_decode() && instrs.len() < MAX_BLOCK {
                let ins = dec.decode();
                if ins.code() == Code::INVALID
                    && dec.last_error() == iced_x86::DecoderError::NoMoreBytes
                {
                    // Straddles the page end: decoded separately next time.
                    break;
                }
                let end = ends_block(&ins);
                let follow = if end { trace_successor(&ins) } else { None };
                instrs.push(ins);
                match follow {
                    _ if !end => {}
                    Some(Successor::FallThrough) => {}
                    Some(Successor::Jump(target)) => {
                        // Continue at a direct jump's target if it is on the same page.
                        let mut tlin = cs_base.wrapping_add(target);
                        if !self.long64() {
                            tlin &= 0xffff_ffff;
                        }
                        if tlin & !0xfff != lin & !0xfff {
                            break;
                        }
                        let toff = (tlin & 0xfff) as usize;
                        dec = Decoder::with_ip(
                            self.bitness,
                            &page[toff..],
                            target,
                            DecoderOptions::NONE,
                        );
                    }
                    None => break,
                }
            }
            if !instrs.is_empty() {
                let steps = classify_all(&instrs, self.bitness);
                let block = Arc::new(Block {
                    steps,
                    instrs,
                    rip: self.rip,
                    cs_base,
                    bitness: self.bitness,
                    phys: e.phys,
                    vidx: e.vidx(),
                    version,
                });
                if self.cache.map.len() >= MAX_BLOCKS {
                    self.cache.clear();
                }
                self.cache.map.insert(lin, block.clone());
                return Ok((block, Some(lin)));
            }
        }
        // Slow path: an instruction crossing a page boundary, or code outside RAM.
        let mut buf = [0u8; 15];
        let first = (4096 - off).min(15);
        self.read_code(io, lin, &mut buf[..first])?;
        let mut dec = Decoder::with_ip(self.bitness, &buf[..first], self.rip, DecoderOptions::NONE);
        let mut ins = dec.decode();
        if ins.code() == Code::INVALID
            && dec.last_error() == iced_x86::DecoderError::NoMoreBytes
            && first < 15
        {
            self.read_code(io, lin.wrapping_add(first as u64), &mut buf[first..])?;
            let mut dec = Decoder::with_ip(self.bitness, &buf, self.rip, DecoderOptions::NONE);
            ins = dec.decode();
        }
        let steps = classify_all(std::slice::from_ref(&ins), self.bitness);
        Ok((
            Arc::new(Block {
                steps,
                instrs: vec![ins],
                rip: self.rip,
                cs_base,
                bitness: self.bitness,
                phys: e.phys,
                vidx: usize::MAX,
                version: 0,
            }),
            None,
        ))
    }

    fn read_code(&mut self, io: &mut dyn Platform, lin: u64, out: &mut [u8]) -> R<()> {
        let user = self.user();
        let mut done = 0;
        while done < out.len() {
            let a = lin.wrapping_add(done as u64);
            let e = self.translate(a, Access::Exec, user)?;
            let off = (a & 0xfff) as usize;
            let n = (4096 - off).min(out.len() - done);
            if e.host.is_null() {
                for (i, c) in out[done..done + n].chunks_mut(8).enumerate() {
                    io.mmio_read(e.phys + (off + i * 8) as u64, c);
                }
            } else {
                // SAFETY: off + n <= 4096 within a RAM page.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.host.add(off), out[done..].as_mut_ptr(), n)
                };
            }
            done += n;
        }
        Ok(())
    }
}
