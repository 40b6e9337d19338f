//! Page-walk faults and the paging protection features (SMEP, SMAP, protection keys,
//! UMIP, PCID/INVPCID, CR4 reserved bits, canonical descriptor-table bases), each rule
//! checked by a small guest in the long-mode machine of `common`.

mod common;

use common::*;
use emu::{Cpu, CpuRegs, CpuidLeaf, Exit};
use iced_x86::code_asm::*;
use vm_memory::GuestMemoryMmap;

/// A 4K page table for 0x200000..0x400000; the test page is its entry 0 (0x200000).
const PT: u64 = 0x50000;
const PAGE: u64 = 0x200000;
const FRAME: u64 = 0x60000;
const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const NX: u64 = 1 << 63;

const CR4_UMIP: u64 = 1 << 11;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;

/// Ports the handlers report on.
const PF_CODE: i32 = 0xf3;
const PF_CR2: i32 = 0xf4;
const GP_CODE: i32 = 0xf6;
const MARK: i32 = 0xf5;

fn outs(p: &TestPlatform, port: i32) -> Vec<u32> {
    p.outs
        .iter()
        .filter(|(q, _)| i32::from(*q) == port)
        .map(|(_, v)| *v)
        .collect()
}

struct Run {
    p: TestPlatform,
    m: GuestMemoryMmap,
}

impl Run {
    fn pf(&self) -> Vec<u32> {
        outs(&self.p, PF_CODE)
    }
    fn gp(&self) -> Vec<u32> {
        outs(&self.p, GP_CODE)
    }
    fn marks(&self) -> Vec<u32> {
        outs(&self.p, MARK)
    }
    fn pte(&self) -> u64 {
        r64(&self.m, PT)
    }
}

/// Runs `code` at CPL 0 with the test page mapped by `pte` (the first 2 MiB, where code,
/// tables and handlers live, are supervisor-only). #PF reports its error code and CR2 and
/// halts; #GP reports its error code and halts; other vectors go to `VEC_PORT`.
fn run(
    pte: u64,
    edit: impl FnOnce(&mut CpuRegs, &GuestMemoryMmap),
    code: impl FnOnce(&mut CodeAssembler),
) -> Run {
    run_with(pte, edit, None, code)
}

fn run_with(
    pte: u64,
    edit: impl FnOnce(&mut CpuRegs, &GuestMemoryMmap),
    cpuid: Option<Vec<CpuidLeaf>>,
    code: impl FnOnce(&mut CodeAssembler),
) -> Run {
    let m = memory();
    setup_long_mode(&m);
    w64(&m, PD, 0x83); // first 2 MiB: supervisor, writable, large
    w64(&m, PD + 8, PT | P | W | U);
    w64(&m, PT, pte);
    for i in 1..512 {
        w64(&m, PT + i * 8, (FRAME + i * 4096) | P | W | U);
    }
    w64(&m, FRAME, 0xc3); // RET, for fetches
    let pf = HANDLERS + 0x1000;
    load(
        &m,
        pf,
        &asm64(pf, |a| {
            a.pop(rax).unwrap();
            a.out(PF_CODE, eax).unwrap();
            a.mov(rax, cr2).unwrap();
            a.out(PF_CR2, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    set_gate(&m, 14, pf, 0, 0);
    let gp = HANDLERS + 0x1100;
    load(
        &m,
        gp,
        &asm64(gp, |a| {
            a.pop(rax).unwrap();
            a.out(GP_CODE, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    set_gate(&m, 13, gp, 0, 0);
    let mut c = asm64(CODE, code);
    c.push(0xf4);
    load(&m, CODE, &c);
    let mut r = long_mode_regs(CODE);
    edit(&mut r, &m);
    let mut cpu = Cpu::new(&m);
    if let Some(t) = cpuid {
        cpu.set_cpuid(t);
    }
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    Run { p, m }
}

fn none(_: &mut CpuRegs, _: &GuestMemoryMmap) {}

fn read_page(a: &mut CodeAssembler) {
    a.mov(rax, qword_ptr(PAGE as i32)).unwrap();
    a.out(MARK, eax).unwrap();
}

fn write_page(a: &mut CodeAssembler) {
    a.mov(qword_ptr(PAGE as i32), 0x77).unwrap();
    a.out(MARK, eax).unwrap();
}

#[test]
fn physical_address_bits_above_maxphyaddr_are_reserved() {
    for bit in [40, 45, 51] {
        let r = run(FRAME | P | W | (1 << bit), none, read_page);
        assert_eq!(r.pf(), vec![9], "bit {bit}: P|RSVD");
        assert_eq!(outs(&r.p, PF_CR2), vec![PAGE as u32]);
        assert_eq!(r.pte() & A, 0, "no accessed bit on a faulting access");
    }
    // Bit 39 is an address bit (40-bit MAXPHYADDR): no reserved-bit fault (MMIO read).
    let r = run(FRAME | P | W | (1 << 39), none, read_page);
    assert!(r.pf().is_empty());
}

#[test]
fn reserved_bits_in_upper_levels_and_large_pages() {
    // PD entry with an address bit above MAXPHYADDR.
    let r = run(
        FRAME | P,
        |_, m| w64(m, PD + 8, PT | P | W | U | (1 << 44)),
        read_page,
    );
    assert_eq!(r.pf(), vec![9]);
    // 2 MiB page with bit 13 set.
    let r = run(
        FRAME | P,
        |_, m| w64(m, PD + 8, 0x20_0000 | 0x87 | (1 << 13)),
        read_page,
    );
    assert_eq!(r.pf(), vec![9]);
    // PS in a PML4 entry is reserved.
    let r = run(
        FRAME | P,
        |_, m| w64(m, PML4 + 8, PDPT | 0x87),
        |a| {
            a.mov(rax, 0x80_0000_0000u64).unwrap();
            a.mov(rax, qword_ptr(rax)).unwrap();
        },
    );
    assert_eq!(r.pf(), vec![9]);
    // 1 GiB page with bit 13 set.
    let r = run(
        FRAME | P,
        |_, m| w64(m, PDPT + 8, (1 << 30) | 0x87 | (1 << 13)),
        |a| {
            a.mov(rax, 0x4000_0000u64).unwrap();
            a.mov(rax, qword_ptr(rax)).unwrap();
        },
    );
    assert_eq!(r.pf(), vec![9]);
}

#[test]
fn nx_bit_is_reserved_without_efer_nxe() {
    let r = run(FRAME | P | W | NX, |r, _| r.efer &= !(1 << 11), read_page);
    assert_eq!(r.pf(), vec![9]);
    let r = run(FRAME | P | W | NX, none, read_page);
    assert!(r.pf().is_empty(), "NX is a permission bit with EFER.NXE");
}

#[test]
fn accessed_and_dirty_bits_only_on_success() {
    // Supervisor write to a read-only page with CR0.WP: P|W, no A/D.
    let r = run(FRAME | P, none, write_page);
    assert_eq!(r.pf(), vec![3]);
    assert_eq!(r.pte() & (A | D), 0);
    // A read sets A only; a write sets A and D.
    let r = run(FRAME | P | W, none, read_page);
    assert_eq!(r.pte() & (A | D), A);
    let r = run(FRAME | P | W, none, write_page);
    assert_eq!(r.pte() & (A | D), A | D);
    // Without CR0.WP the supervisor write goes through.
    let r = run(FRAME | P, |r, _| r.cr0 &= !(1 << 16), write_page);
    assert!(r.pf().is_empty());
    assert_eq!(r.pte() & (A | D), A | D);
}

fn fetch_page(a: &mut CodeAssembler) {
    a.mov(rax, PAGE).unwrap();
    a.call(rax).unwrap();
    a.out(MARK, eax).unwrap();
}

#[test]
fn fetch_error_code_has_id_only_with_nx_or_smep() {
    let r = run(FRAME | NX | P, none, fetch_page);
    assert_eq!(r.pf(), vec![0x11], "NX page: P|I/D");
    let r = run(FRAME, |r, _| r.efer &= !(1 << 11), fetch_page);
    assert_eq!(r.pf(), vec![0], "not present, no NXE, no SMEP: no I/D");
    let r = run(
        FRAME,
        |r, _| {
            r.efer &= !(1 << 11);
            r.cr4 |= CR4_SMEP;
        },
        fetch_page,
    );
    assert_eq!(r.pf(), vec![0x10], "SMEP alone sets I/D");
}

#[test]
fn smep_blocks_supervisor_fetches_from_user_pages() {
    let r = run(FRAME | P | U, |r, _| r.cr4 |= CR4_SMEP, fetch_page);
    assert_eq!(r.pf(), vec![0x11]);
    assert_eq!(r.pte() & A, 0);
    let r = run(FRAME | P | U, none, fetch_page);
    assert!(r.pf().is_empty());
    assert_eq!(r.marks().len(), 1);
    let r = run(FRAME | P, |r, _| r.cr4 |= CR4_SMEP, fetch_page);
    assert!(r.pf().is_empty(), "supervisor page");
}

#[test]
fn smap_blocks_supervisor_data_accesses_unless_ac() {
    let smap = |r: &mut CpuRegs, _: &GuestMemoryMmap| r.cr4 |= CR4_SMAP;
    let r = run(FRAME | P | W | U, smap, read_page);
    assert_eq!(r.pf(), vec![1]);
    let r = run(FRAME | P | W | U, smap, write_page);
    assert_eq!(r.pf(), vec![3]);
    // STAC lets explicit accesses through; CLAC closes again (after a TLB fill).
    let r = run(FRAME | P | W | U, smap, |a| {
        a.stac().unwrap();
        write_page(a);
        read_page(a);
        a.clac().unwrap();
        read_page(a);
    });
    assert_eq!(r.marks().len(), 2);
    assert_eq!(r.pf(), vec![1]);
    // Supervisor pages are unaffected; without SMAP user pages are fine.
    let r = run(FRAME | P | W, smap, read_page);
    assert!(r.pf().is_empty());
    let r = run(FRAME | P | W | U, none, read_page);
    assert!(r.pf().is_empty());
}

#[test]
fn stac_needs_smap_and_cpl0() {
    let no_smap: Vec<CpuidLeaf> = emu::cpuid::supported()
        .into_iter()
        .map(|mut l| {
            if l.function == 7 {
                l.ebx &= !(1 << 20);
            }
            l
        })
        .collect();
    let r = run_with(FRAME | P, none, Some(no_smap), |a| a.stac().unwrap());
    assert_eq!(vectors(&r.p), vec![6], "#UD without SMAP in CPUID");
}

/// Runs `user` at CPL 3 (64-bit user code segment).
fn run_user(
    pte: u64,
    cr4_bits: u64,
    pre: impl FnOnce(&mut CodeAssembler),
    user: impl FnOnce(&mut CodeAssembler),
) -> Run {
    let ucode = CODE + 0x800;
    let mut body = asm64(ucode, user);
    body.push(0xcc); // INT3 ends the user part (vector 3 on VEC_PORT)
    run(
        pte,
        |r, m| {
            r.cr4 |= cr4_bits;
            load(m, ucode, &body);
            // User code and stack: make the first 2 MiB user-accessible.
            w64(m, PD, 0x87);
            set_gate(m, 3, HANDLERS + 3 * 16, 3, 0);
        },
        |a| {
            pre(a);
            a.push((UDATA | 3) as i32).unwrap();
            a.push(USTACK_TOP as i32).unwrap();
            a.push(0x3202).unwrap(); // IOPL 3: the user part may OUT
            a.push((UCODE | 3) as i32).unwrap();
            a.push(ucode as i32).unwrap();
            a.iretq().unwrap();
        },
    )
}

#[test]
fn protection_keys_deny_data_accesses_to_user_pages() {
    let key1 = 1u64 << 59;
    // PKRU: key 1 access-disabled.
    let wrpkru = |v: u32| {
        move |a: &mut CodeAssembler| {
            a.xor(ecx, ecx).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(eax, v).unwrap();
            a.wrpkru().unwrap();
        }
    };
    let r = run_user(FRAME | P | W | U | key1, CR4_PKE, wrpkru(0b0100), read_page);
    assert_eq!(r.pf(), vec![0x25], "P|U|PK");
    assert_eq!(r.pte() & A, 0);
    // Write-disable: reads pass, writes fault with PK.
    let r = run_user(FRAME | P | W | U | key1, CR4_PKE, wrpkru(0b1000), |a| {
        read_page(a);
        write_page(a);
    });
    assert_eq!(r.marks().len(), 1);
    assert_eq!(r.pf(), vec![0x27], "P|W|U|PK");
    // Key 0 is unaffected; with CR4.PKE clear keys are ignored.
    let r = run_user(FRAME | P | W | U, CR4_PKE, wrpkru(0b1100), read_page);
    assert!(r.pf().is_empty());
    assert_eq!(vectors(&r.p), vec![3]);
    // Supervisor reads of a user page obey PKRU too.
    let r = run(
        FRAME | P | W | U | key1,
        |r, _| r.cr4 |= CR4_PKE,
        |a| {
            wrpkru(0b0100)(a);
            read_page(a);
        },
    );
    assert_eq!(r.pf(), vec![0x21], "P|PK");
}

#[test]
fn rdpkru_wrpkru_and_ospke() {
    let r = run(
        FRAME | P,
        |r, _| r.cr4 |= CR4_PKE,
        |a| {
            a.xor(ecx, ecx).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(eax, 0x5555_0004u32).unwrap();
            a.wrpkru().unwrap();
            a.xor(eax, eax).unwrap();
            a.rdpkru().unwrap();
            a.out(MARK, eax).unwrap();
            a.mov(eax, 7).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.cpuid().unwrap();
            a.mov(eax, ecx).unwrap();
            a.out(MARK, eax).unwrap();
            a.mov(ecx, 1).unwrap();
            a.rdpkru().unwrap();
        },
    );
    let m = r.marks();
    assert_eq!(m[0], 0x5555_0004);
    assert_ne!(m[1] & (1 << 4), 0, "OSPKE with CR4.PKE");
    assert_eq!(r.gp(), vec![0], "RDPKRU with ECX != 0");
    let r = run(FRAME | P, none, |a| {
        a.xor(ecx, ecx).unwrap();
        a.rdpkru().unwrap();
    });
    assert_eq!(vectors(&r.p), vec![6], "#UD without CR4.PKE");
}

#[test]
fn cr4_bits_follow_the_cpuid_offer() {
    let set_cr4 = |bits: u64| {
        move |a: &mut CodeAssembler| {
            a.mov(rax, cr4).unwrap();
            a.mov(rcx, bits).unwrap();
            a.or(rax, rcx).unwrap();
            a.mov(cr4, rax).unwrap();
            a.out(MARK, eax).unwrap();
        }
    };
    for bit in [CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_UMIP, CR4_PCIDE] {
        let r = run(FRAME | P, none, set_cr4(bit));
        assert!(r.gp().is_empty(), "{bit:#x} offered");
        let without: Vec<CpuidLeaf> = emu::cpuid::supported()
            .into_iter()
            .map(|mut l| {
                if l.function == 7 {
                    l.ebx = 0;
                    l.ecx = 0;
                }
                if l.function == 1 {
                    l.ecx &= !(1 << 17);
                }
                l
            })
            .collect();
        let r = run_with(FRAME | P, none, Some(without), set_cr4(bit));
        assert_eq!(r.gp(), vec![0], "{bit:#x} not offered");
    }
    // Never-offered bits (FSGSBASE, LA57) are reserved.
    for bit in [1u64 << 16, 1 << 12, 1 << 30] {
        let r = run(FRAME | P, none, set_cr4(bit));
        assert_eq!(r.gp(), vec![0], "{bit:#x}");
    }
}

#[test]
fn umip_denies_descriptor_table_stores_at_cpl3() {
    let r = run_user(
        FRAME | P | W | U,
        CR4_UMIP,
        |_| {},
        |a| {
            a.sgdt(ptr(PAGE)).unwrap();
        },
    );
    assert_eq!(r.gp(), vec![0]);
    let r = run_user(
        FRAME | P | W | U,
        CR4_UMIP,
        |_| {},
        |a| {
            a.smsw(eax).unwrap();
        },
    );
    assert_eq!(r.gp(), vec![0]);
    let r = run_user(
        FRAME | P | W | U,
        0,
        |_| {},
        |a| {
            a.sgdt(ptr(PAGE)).unwrap();
            a.str(eax).unwrap();
        },
    );
    assert!(r.gp().is_empty());
    assert_eq!(vectors(&r.p), vec![3]);
    // CPL 0 is not affected.
    let r = run(
        FRAME | P | W,
        |r, _| r.cr4 |= CR4_UMIP,
        |a| {
            a.sidt(ptr(PAGE)).unwrap();
            a.out(MARK, eax).unwrap();
        },
    );
    assert_eq!(r.marks().len(), 1);
}

#[test]
fn pcide_rules() {
    // CR3[11:0] != 0 → #GP on setting PCIDE.
    let r = run(FRAME | P, none, |a| {
        a.mov(rax, cr3).unwrap();
        a.or(rax, 1).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_PCIDE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
    });
    assert_eq!(r.gp(), vec![0]);
    // With PCIDE: bit 63 of a CR3 write is not stored; clearing CR0.PG is #GP.
    let r = run(FRAME | P, none, |a| {
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_PCIDE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        a.mov(rax, cr3).unwrap();
        a.bts(rax, 63).unwrap();
        a.or(rax, 5).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rax, cr3).unwrap();
        a.shr(rax, 32).unwrap();
        a.out(MARK, eax).unwrap();
        a.mov(rax, cr3).unwrap();
        a.out(MARK, eax).unwrap();
        a.mov(rax, cr0).unwrap();
        a.btr(rax, 31).unwrap();
        a.mov(cr0, rax).unwrap();
    });
    assert_eq!(r.marks(), vec![0, PML4 as u32 | 5]);
    assert_eq!(r.gp(), vec![0]);
    // A CR3 value above MAXPHYADDR is #GP.
    let r = run(FRAME | P, none, |a| {
        a.mov(rax, cr3).unwrap();
        a.bts(rax, 45).unwrap();
        a.mov(cr3, rax).unwrap();
    });
    assert_eq!(r.gp(), vec![0]);
}

fn invpcid(ty: u32, pcid: u64, addr: u64) -> impl FnOnce(&mut CodeAssembler) {
    move |a| {
        a.mov(rax, pcid).unwrap();
        a.mov(qword_ptr(DATA as i32), rax).unwrap();
        a.mov(rax, addr).unwrap();
        a.mov(qword_ptr(DATA as i32 + 8), rax).unwrap();
        a.mov(ecx, ty).unwrap();
        a.invpcid(rcx, xmmword_ptr(DATA as i32)).unwrap();
        a.out(MARK, eax).unwrap();
    }
}

#[test]
fn invpcid_types_and_faults() {
    for ty in 0..4 {
        let r = run(FRAME | P, none, invpcid(ty, 0, PAGE));
        assert_eq!(r.marks().len(), 1, "type {ty}");
    }
    for (ty, pcid, addr) in [
        (4, 0, 0),
        (0, 1, PAGE),
        (1, 1, 0),
        (0, 0, 1 << 60),
        (0, 1 << 12, 0),
    ] {
        let r = run(FRAME | P, none, invpcid(ty, pcid, addr));
        assert_eq!(r.gp(), vec![0], "type {ty} pcid {pcid:#x} addr {addr:#x}");
    }
    // Type 0 drops a stale translation.
    let r = run(FRAME | P | W, none, |a| {
        a.mov(rax, qword_ptr(PAGE as i32)).unwrap(); // fills the TLB
        a.mov(qword_ptr(PT as i32), (FRAME + 0x1000) as i32 | 3)
            .unwrap();
        a.mov(dword_ptr(FRAME as i32 + 0x1000), 0x42).unwrap();
        invpcid(0, 0, PAGE)(a);
        a.mov(eax, dword_ptr(PAGE as i32)).unwrap();
        a.out(MARK, eax).unwrap();
    });
    assert_eq!(r.marks(), vec![PAGE as u32, 0x42]);
    let no_invpcid: Vec<CpuidLeaf> = emu::cpuid::supported()
        .into_iter()
        .map(|mut l| {
            if l.function == 7 {
                l.ebx &= !(1 << 10);
            }
            l
        })
        .collect();
    let r = run_with(FRAME | P, none, Some(no_invpcid), invpcid(2, 0, 0));
    assert_eq!(vectors(&r.p), vec![6]);
}

#[test]
fn descriptor_table_bases_must_be_canonical() {
    let r = run(FRAME | P, none, |a| {
        a.mov(word_ptr(DATA as i32), 0xfff).unwrap();
        a.mov(rax, 0xffaa_aaaa_aaaa_aaaau64).unwrap();
        a.mov(qword_ptr(DATA as i32 + 2), rax).unwrap();
        a.lgdt(ptr(DATA)).unwrap();
    });
    assert_eq!(r.gp(), vec![0]);
    let r = run(FRAME | P, none, |a| {
        a.mov(word_ptr(DATA as i32), 0xfff).unwrap();
        a.mov(rax, 0xaaaa_aaaa_aaaa_aaaau64).unwrap();
        a.mov(qword_ptr(DATA as i32 + 2), rax).unwrap();
        a.lidt(ptr(DATA)).unwrap();
    });
    assert_eq!(r.gp(), vec![0]);
    // LTR with a non-canonical TSS base: #GP(selector).
    let r = run(
        FRAME | P,
        |_, m| w64(m, GDT + 7 * 8, 0xaaaa_aaaa),
        |a| {
            a.mov(eax, TSS_SEL as u32).unwrap();
            a.ltr(ax).unwrap();
        },
    );
    assert_eq!(r.gp(), vec![TSS_SEL as u32]);
}

#[test]
fn smap_applies_to_implicit_supervisor_accesses_even_with_ac() {
    // An LDT on the (user) test page holds a data descriptor; loading DS from it reads
    // the LDT implicitly. (The GDT stays on a supervisor page so #PF can be delivered.)
    const LDT_SEL: u16 = 0x48;
    let ldt_on_user_page = |smap: bool| {
        move |r: &mut CpuRegs, m: &GuestMemoryMmap| {
            w64(m, FRAME, 0);
            w64(m, FRAME + 8, 0x00cf_9200_0000_ffff);
            w64(
                m,
                GDT + 9 * 8,
                0xff | ((PAGE & 0xff_ffff) << 16) | (0x82 << 40),
            );
            w64(m, GDT + 10 * 8, 0);
            r.gdt.limit = 11 * 8 - 1;
            if smap {
                r.cr4 |= CR4_SMAP;
            }
        }
    };
    let load_ds = |a: &mut CodeAssembler| {
        a.mov(eax, LDT_SEL as u32).unwrap();
        a.lldt(ax).unwrap();
        a.stac().unwrap();
        a.mov(eax, 0x0c).unwrap(); // LDT entry 1
        a.mov(ds, ax).unwrap();
        a.out(MARK, eax).unwrap();
    };
    let r = run(FRAME | P | W | U, ldt_on_user_page(true), load_ds);
    assert_eq!(r.pf(), vec![1], "implicit supervisor read of a user page");
    assert!(r.marks().is_empty());
    let r = run(FRAME | P | W | U, ldt_on_user_page(false), load_ds);
    assert!(r.pf().is_empty());
    assert_eq!(r.marks().len(), 1);
}
