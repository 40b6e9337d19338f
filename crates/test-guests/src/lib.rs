//! Paths of the tiny test guests built from `guests/*.S` (see each file's header for what
//! it does and how it ends).

/// The path of the guest built from `guests/<name>.S`.
pub fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("OUT_DIR")).join(format!("{name}.elf"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn guests_are_built_as_elf() {
        for name in ["hello64", "mb32"] {
            let bytes = std::fs::read(super::path(name)).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{name}");
        }
    }
}
