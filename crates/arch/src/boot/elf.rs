//! A small, bounds-checked reader for ELF32 and ELF64 headers.
//!
//! linux-loader loads ELF64 vmlinux images but neither reads ELF32 (which Multiboot
//! kernels such as kvm-unit-tests use) nor tells us the class and machine before loading.
//! This reader answers exactly what format detection and the Multiboot loader need:
//! class, machine, entry point, loadable segments and the PVH entry note. Every offset
//! comes from the (untrusted) file and is checked against its length.

use thiserror::Error;

pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH 32-bit entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Upper bound on program headers read, against absurd `e_phnum` values.
const MAX_PHDRS: usize = 256;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("truncated ELF file: {what} at offset {offset:#x} lies beyond its {len} bytes")]
    Truncated {
        what: &'static str,
        offset: u64,
        len: usize,
    },
    #[error("unsupported ELF: {0}")]
    Unsupported(String),
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// What we need to know about an ELF image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub is_64: bool,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<LoadSegment>,
    /// The PVH entry point, if the image carries a Xen PHYS32_ENTRY note.
    pub pvh_entry: Option<u32>,
}

/// True if `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn field(bytes: &[u8], offset: u64, size: usize, what: &'static str) -> Result<u64, ElfError> {
    let truncated = ElfError::Truncated {
        what,
        offset,
        len: bytes.len(),
    };
    let start = usize::try_from(offset).map_err(|_| truncated.clone())?;
    let end = start.checked_add(size).ok_or(truncated.clone())?;
    let slice = bytes.get(start..end).ok_or(truncated)?;
    let mut buf = [0u8; 8];
    buf[..size].copy_from_slice(slice);
    Ok(u64::from_le_bytes(buf))
}

/// Parses the headers of a little-endian ELF32 or ELF64 image.
pub fn parse(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::Unsupported("no ELF magic".into()));
    }
    let class = field(bytes, 4, 1, "e_ident")?;
    let data = field(bytes, 5, 1, "e_ident")?;
    if data != 1 {
        return Err(ElfError::Unsupported("big-endian ELF".into()));
    }
    let is_64 = match class {
        1 => false,
        2 => true,
        c => return Err(ElfError::Unsupported(format!("ELF class {c}"))),
    };
    let machine = field(bytes, 18, 2, "e_machine")? as u16;
    let (entry, phoff, phentsize, phnum) = if is_64 {
        (
            field(bytes, 24, 8, "e_entry")?,
            field(bytes, 32, 8, "e_phoff")?,
            field(bytes, 54, 2, "e_phentsize")?,
            field(bytes, 56, 2, "e_phnum")?,
        )
    } else {
        (
            field(bytes, 24, 4, "e_entry")?,
            field(bytes, 28, 4, "e_phoff")?,
            field(bytes, 42, 2, "e_phentsize")?,
            field(bytes, 44, 2, "e_phnum")?,
        )
    };
    let want = if is_64 { 56 } else { 32 };
    if phentsize != want {
        return Err(ElfError::Unsupported(format!(
            "program header size {phentsize}, expected {want}"
        )));
    }
    if phnum as usize > MAX_PHDRS {
        return Err(ElfError::Unsupported(format!("{phnum} program headers")));
    }
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or(ElfError::Unsupported(
                "program header offset overflows".into(),
            ))?;
        let (p_type, offset, paddr, filesz, memsz) = if is_64 {
            (
                field(bytes, ph, 4, "p_type")? as u32,
                field(bytes, ph + 8, 8, "p_offset")?,
                field(bytes, ph + 24, 8, "p_paddr")?,
                field(bytes, ph + 32, 8, "p_filesz")?,
                field(bytes, ph + 40, 8, "p_memsz")?,
            )
        } else {
            (
                field(bytes, ph, 4, "p_type")? as u32,
                field(bytes, ph + 4, 4, "p_offset")?,
                field(bytes, ph + 12, 4, "p_paddr")?,
                field(bytes, ph + 16, 4, "p_filesz")?,
                field(bytes, ph + 20, 4, "p_memsz")?,
            )
        };
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(ElfError::Unsupported(format!(
                        "segment at {paddr:#x} has filesz {filesz:#x} > memsz {memsz:#x}"
                    )));
                }
                let end = offset.checked_add(filesz);
                if end.is_none_or(|e| e > bytes.len() as u64) {
                    return Err(ElfError::Truncated {
                        what: "segment data",
                        offset,
                        len: bytes.len(),
                    });
                }
                segments.push(LoadSegment {
                    offset,
                    paddr,
                    filesz,
                    memsz,
                });
            }
            PT_NOTE if pvh_entry.is_none() => {
                pvh_entry = find_pvh_note(bytes, offset, filesz)?;
            }
            _ => {}
        }
    }
    Ok(ElfInfo {
        is_64,
        machine,
        entry,
        segments,
        pvh_entry,
    })
}

fn align4(v: u64) -> u64 {
    (v + 3) & !3
}

/// Walks the notes in `[offset, offset + size)` for a Xen PHYS32_ENTRY note.
fn find_pvh_note(bytes: &[u8], offset: u64, size: u64) -> Result<Option<u32>, ElfError> {
    let end = offset.saturating_add(size);
    let mut pos = offset;
    while pos.saturating_add(12) <= end {
        let namesz = field(bytes, pos, 4, "note namesz")?;
        let descsz = field(bytes, pos + 4, 4, "note descsz")?;
        let n_type = field(bytes, pos + 8, 4, "note type")? as u32;
        let name_at = pos + 12;
        let desc_at = name_at + align4(namesz);
        if n_type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 {
            let name = field(bytes, name_at, 4, "note name")?;
            if name == u64::from(u32::from_le_bytes(*b"Xen\0")) {
                if descsz < 4 {
                    return Err(ElfError::Unsupported(
                        "PVH note shorter than 4 bytes".into(),
                    ));
                }
                return Ok(Some(field(bytes, desc_at, 4, "PVH entry")? as u32));
            }
        }
        pos = desc_at + align4(descsz);
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF image: one PT_LOAD segment with `code` at `paddr`, entry
    /// `entry`, and optionally a PT_NOTE with a PVH entry note.
    pub(crate) fn build_elf(
        is_64: bool,
        paddr: u64,
        entry: u64,
        code: &[u8],
        pvh: Option<u32>,
    ) -> Vec<u8> {
        let (ehsize, phsize) = if is_64 { (64u64, 56u64) } else { (52, 32) };
        let phnum = if pvh.is_some() { 2 } else { 1 };
        let note_off = ehsize + phsize * phnum;
        let note: Vec<u8> = match pvh {
            Some(e) => {
                let mut n = Vec::new();
                // A foreign note first, to exercise skipping.
                n.extend_from_slice(&6u32.to_le_bytes());
                n.extend_from_slice(&4u32.to_le_bytes());
                n.extend_from_slice(&1u32.to_le_bytes());
                n.extend_from_slice(b"Linux\0\0\0");
                n.extend_from_slice(&0u32.to_le_bytes());
                n.extend_from_slice(&4u32.to_le_bytes());
                n.extend_from_slice(&8u32.to_le_bytes());
                n.extend_from_slice(&18u32.to_le_bytes());
                n.extend_from_slice(b"Xen\0");
                n.extend_from_slice(&u64::from(e).to_le_bytes());
                n
            }
            None => Vec::new(),
        };
        let code_off = (note_off + note.len() as u64 + 0xf) & !0xf;
        let mut f = vec![0u8; code_off as usize];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = if is_64 { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        f[16] = 2; // ET_EXEC
        let machine = if is_64 { EM_X86_64 } else { EM_386 };
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20] = 1;
        let put = |f: &mut Vec<u8>, at: u64, v: u64, n: usize| {
            f[at as usize..at as usize + n].copy_from_slice(&v.to_le_bytes()[..n]);
        };
        if is_64 {
            put(&mut f, 24, entry, 8);
            put(&mut f, 32, ehsize, 8);
            put(&mut f, 52, ehsize, 2);
            put(&mut f, 54, phsize, 2);
            put(&mut f, 56, phnum, 2);
        } else {
            put(&mut f, 24, entry, 4);
            put(&mut f, 28, ehsize, 4);
            put(&mut f, 40, ehsize, 2);
            put(&mut f, 42, phsize, 2);
            put(&mut f, 44, phnum, 2);
        }
        // PT_LOAD.
        let ph = ehsize;
        let memsz = code.len() as u64 + 0x100; // some bss
        if is_64 {
            put(&mut f, ph, 1, 4);
            put(&mut f, ph + 4, 7, 4);
            put(&mut f, ph + 8, code_off, 8);
            put(&mut f, ph + 16, paddr, 8);
            put(&mut f, ph + 24, paddr, 8);
            put(&mut f, ph + 32, code.len() as u64, 8);
            put(&mut f, ph + 40, memsz, 8);
        } else {
            put(&mut f, ph, 1, 4);
            put(&mut f, ph + 4, code_off, 4);
            put(&mut f, ph + 8, paddr, 4);
            put(&mut f, ph + 12, paddr, 4);
            put(&mut f, ph + 16, code.len() as u64, 4);
            put(&mut f, ph + 20, memsz, 4);
            put(&mut f, ph + 24, 7, 4);
        }
        if pvh.is_some() {
            let ph = ehsize + phsize;
            if is_64 {
                put(&mut f, ph, 4, 4);
                put(&mut f, ph + 8, note_off, 8);
                put(&mut f, ph + 32, note.len() as u64, 8);
                put(&mut f, ph + 40, note.len() as u64, 8);
            } else {
                put(&mut f, ph, 4, 4);
                put(&mut f, ph + 4, note_off, 4);
                put(&mut f, ph + 16, note.len() as u64, 4);
                put(&mut f, ph + 20, note.len() as u64, 4);
            }
            f[note_off as usize..note_off as usize + note.len()].copy_from_slice(&note);
        }
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn parses_elf64_with_pvh_note() {
        let img = build_elf(true, 0x100_0000, 0x100_0000, &[0x90; 16], Some(0x100_0040));
        let info = parse(&img).unwrap();
        assert!(info.is_64);
        assert_eq!(info.machine, EM_X86_64);
        assert_eq!(info.entry, 0x100_0000);
        assert_eq!(info.pvh_entry, Some(0x100_0040));
        assert_eq!(info.segments.len(), 1);
        assert_eq!(info.segments[0].filesz, 16);
        assert_eq!(info.segments[0].memsz, 16 + 0x100);
    }

    #[test]
    fn parses_elf32_without_note() {
        let img = build_elf(false, 0x40_0000, 0x40_0010, &[0xf4; 32], None);
        let info = parse(&img).unwrap();
        assert!(!info.is_64);
        assert_eq!(info.machine, EM_386);
        assert_eq!(info.entry, 0x40_0010);
        assert_eq!(info.pvh_entry, None);
        assert_eq!(info.segments[0].paddr, 0x40_0000);
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let img = build_elf(true, 0x100_0000, 0x100_0000, &[0x90; 16], Some(0x100_0040));
        for cut in [3usize, 10, 30, 63, 100, 150, img.len() - 1] {
            assert!(parse(&img[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = img.clone();
        bad[56] = 0xff; // e_phnum
        bad[57] = 0xff;
        assert!(parse(&bad).is_err());
    }
}
