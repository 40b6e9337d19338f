//! A tiny static x86-64 Linux program that writes one byte to one I/O port: how the guest's
//! /init signals "ready" on wirt's boot-timer port (0x440).
//!
//! busybox has no `outb` applet, and Debian's stock cloud kernel has no /dev/port
//! (`CONFIG_DEVPORT` is off), so a shell cannot reach a port. Both kernels have
//! `CONFIG_X86_IOPL_IOPERM`, so a program can ask for the port with ioperm(2) and then
//! execute `out`. The program is assembled here with iced-x86 and wrapped in a minimal ELF
//! (one PT_LOAD segment, no sections): no C compiler or libc is needed to build the image,
//! and its bytes are part of the image's input hash.
//!
//! Behaviour: `ioperm(port, 1, 1)`; on failure exit status 1 without touching the port;
//! otherwise `outb(value, port)` and exit status 0.

use iced_x86::code_asm::{al, dx, eax, edi, edx, esi, CodeAssembler};
use iced_x86::IcedError;

/// Where the program is loaded (the usual base of non-PIE x86-64 executables).
const LOAD_ADDRESS: u64 = 0x40_0000;
/// ELF header (64 bytes) plus one program header (56 bytes); the code follows them.
const HEADERS_LEN: u64 = 64 + 56;

/// Linux x86-64 system call numbers.
const SYS_IOPERM: u32 = 173;
const SYS_EXIT: u32 = 60;

/// Builds the program that writes `value` to `port`.
pub fn port_writer_elf(port: u16, value: u8) -> Result<Vec<u8>, IcedError> {
    let entry = LOAD_ADDRESS + HEADERS_LEN;
    let code = assemble(port, value, entry)?;
    let file_len = HEADERS_LEN + code.len() as u64;

    let mut elf = Vec::with_capacity(file_len as usize);
    // ---- ELF header ----
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F']);
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, System V ABI
    elf.extend_from_slice(&[0; 8]); // ABI version and padding
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff: right after this header
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                                // ---- program header: the whole file, readable and executable ----
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&file_len.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&file_len.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    debug_assert_eq!(elf.len() as u64, HEADERS_LEN);
    elf.extend_from_slice(&code);
    Ok(elf)
}

fn assemble(port: u16, value: u8, entry: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut failed = a.create_label();
    // ioperm(port, 1, 1)
    a.mov(edi, u32::from(port))?;
    a.mov(esi, 1u32)?;
    a.mov(edx, 1u32)?;
    a.mov(eax, SYS_IOPERM)?;
    a.syscall()?;
    a.test(eax, eax)?;
    a.jnz(failed)?;
    // outb(value, port); exit(0)
    a.mov(dx, u32::from(port))?;
    a.mov(al, u32::from(value))?;
    a.out(dx, al)?;
    a.xor(edi, edi)?;
    a.mov(eax, SYS_EXIT)?;
    a.syscall()?;
    // exit(1)
    a.set_label(&mut failed)?;
    a.mov(edi, 1u32)?;
    a.mov(eax, SYS_EXIT)?;
    a.syscall()?;
    a.assemble(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn disassemble(code: &[u8], ip: u64) -> Vec<String> {
        let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let mut lines = Vec::new();
        for instruction in &mut decoder {
            let mut s = String::new();
            formatter.format(&instruction, &mut s);
            lines.push(s);
        }
        lines
    }

    #[test]
    fn elf_header_points_at_the_code() {
        let elf = port_writer_elf(0x440, 1).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDRESS + HEADERS_LEN);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, elf.len() as u64);
    }

    #[test]
    fn code_asks_for_the_port_then_writes_it() {
        let elf = port_writer_elf(0x440, 7).unwrap();
        let code = &elf[HEADERS_LEN as usize..];
        let listing = disassemble(code, LOAD_ADDRESS + HEADERS_LEN);
        let text = listing.join("\n");
        assert!(listing[0].contains("mov edi,440h"), "{text}");
        assert!(listing[3].contains("mov eax,0ADh"), "ioperm: {text}");
        assert_eq!(listing[4], "syscall");
        assert!(listing.iter().any(|l| l == "mov dx,440h"), "{text}");
        assert!(listing.iter().any(|l| l == "mov al,7"), "{text}");
        assert!(listing.iter().any(|l| l == "out dx,al"), "{text}");
        assert_eq!(listing.last().unwrap(), "syscall");
    }

    /// On the host, without CAP_SYS_RAWIO, ioperm fails and the program must exit 1
    /// without executing `out` (which would kill it with SIGSEGV). With the capability
    /// (root), it exits 0 after writing to an unused port. Either way it must not crash.
    #[test]
    fn runs_on_the_host_without_crashing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wirt-port-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("port-writer");
        // Port 0x80 (POST code) is written by Linux itself for I/O delays: harmless.
        std::fs::write(&path, port_writer_elf(0x80, 0).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = std::process::Command::new(&path).status().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            status.code() == Some(0) || status.code() == Some(1),
            "{status:?}"
        );
    }
}
