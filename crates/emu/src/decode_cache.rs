//! Decoded basic blocks, cached by linear address and validated against the physical page
//! they came from and its code version (so self-modifying code, kernel text patching and
//! remapped pages are all seen).
//!
//! A block ends at a control-flow instruction, at an instruction that may change the
//! execution mode, at a page boundary, or after `MAX_BLOCK` instructions. An instruction
//! that straddles a page boundary is decoded on its own and not cached.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic};

use crate::cpu::{Cpu, CS};
use crate::exceptions::R;
use crate::exec::fast::{classify, Kind};
use crate::platform::Platform;
use crate::tlb::Access;

const MAX_BLOCK: usize = 64;
const MAX_BLOCKS: usize = 1 << 16;

pub struct Block {
    pub instrs: Vec<Instruction>,
    /// Execution path of each instruction (parallel to `instrs`).
    pub kinds: Vec<Kind>,
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

/// Instructions after which the block must end so the run loop re-reads the mode, the
/// interrupt window or the code mapping.
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
        | Mnemonic::Swapgs => true,
        _ => ins.code() == Code::INVALID,
    }
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
            let version = self.ram.versions().mark_code(e.vidx);
            // SAFETY: `host` points at a whole 4K page of RAM and off < 4096.
            let bytes = unsafe { std::slice::from_raw_parts(e.host.add(off), 4096 - off) };
            let mut dec = Decoder::with_ip(self.bitness, bytes, self.rip, DecoderOptions::NONE);
            while dec.can_decode() && instrs.len() < MAX_BLOCK {
                let pos = dec.position();
                let ins = dec.decode();
                if ins.code() == Code::INVALID
                    && dec.last_error() == iced_x86::DecoderError::NoMoreBytes
                {
                    // Straddles the page end: decoded separately next time.
                    let _ = pos;
                    break;
                }
                let end = ends_block(&ins);
                instrs.push(ins);
                if end {
                    break;
                }
            }
            if !instrs.is_empty() {
                let kinds = instrs.iter().map(|i| classify(i, self.bitness)).collect();
                let block = Arc::new(Block {
                    kinds,
                    instrs,
                    rip: self.rip,
                    cs_base,
                    bitness: self.bitness,
                    phys: e.phys,
                    vidx: e.vidx,
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
        Ok((
            Arc::new(Block {
                kinds: vec![classify(&ins, self.bitness)],
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
