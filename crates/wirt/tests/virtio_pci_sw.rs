//! End-to-end on the software engine: with `--virtio-transport pci` the default guest finds
//! its virtio devices as PCI functions behind the ACPI host bridge, uses them through MSI-X
//! (the software engine delivers MSIs) or, when the guest turns MSIs off, through INTx
//! lines routed by the DSDT's `_PRT`; a block write reaches the host file and virtio-rng
//! gives bytes. The stock Debian kernel (virtio_pci as a module loaded by /init, ECAM
//! through MCFG) is checked too: it is what the issue is about.

mod common;

use common::{assert_rng_line, boot_guest, Run, Scratch};
use image::KernelFlavour;

/// Lists the PCI functions and virtio devices, writes a marker to /dev/vda, reads the
/// hardware RNG, and prints the interrupt lines the virtio drivers use.
const SCRIPT: &str =
    "i=0; while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
    for d in /sys/bus/pci/devices/*; do echo pci=$(cat $d/vendor):$(cat $d/device); done\n\
    for v in /sys/bus/virtio/devices/*; do echo virtio=$(readlink $v); done\n\
    echo wirt-pci-marker | dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/dev/null\n\
    echo rng=$(head -c 16 /dev/hwrng | hexdump -v -e '/1 \"%02x\"')\n\
    grep virtio /proc/interrupts | sed 's/^/irq=/'\n\
    dmesg | grep MMCONFIG | sed 's/^/dmesg=/'\n";

/// Boots `flavour` with a disk and an rng over virtio-pci; returns the run, the script's
/// output and the disk's bytes afterwards.
fn boot(flavour: KernelFlavour, extra_cmdline: &str) -> (Run, String, Vec<u8>) {
    let scratch = Scratch::new(&format!("virtio-pci-{flavour}-{}", extra_cmdline.len()));
    let disk = scratch.path("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let disk_arg = format!("path={}", disk.display());
    let args = ["--virtio-transport", "pci", "--disk", &disk_arg, "--rng"];
    let r = boot_guest(flavour, extra_cmdline, SCRIPT, &args);
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(r.status, 0, "the guest must power off cleanly: {r:?}");
    assert_eq!(image::cmdline::exit_status(&r.stdout), Some(0), "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    (r, out, bytes)
}

/// What every virtio-pci boot must show: both functions on bus 0 with the modern virtio
/// IDs, the virtio devices below them, the block write on the host, random bytes.
fn check_devices_and_io(out: &str, disk: &[u8]) {
    assert!(
        out.contains("pci=0x1af4:0x1042\n"),
        "virtio-blk function: {out}"
    );
    assert!(
        out.contains("pci=0x1af4:0x1044\n"),
        "virtio-rng function: {out}"
    );
    let virtio: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("virtio="))
        .collect();
    assert_eq!(virtio.len(), 2, "{out}");
    assert!(
        virtio.iter().all(|p| p.contains("/pci0000:00/0000:00:0")),
        "virtio devices must sit on the PCI bus: {out}"
    );
    assert_rng_line(out);
    assert_eq!(
        &disk[2048 * 512..2048 * 512 + 15],
        b"wirt-pci-marker",
        "flushed write on the host"
    );
}

/// The `/proc/interrupts` lines of the virtio devices.
fn irq_lines(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.strip_prefix("irq=")).collect()
}

/// The count of the first CPU column of an interrupt line.
fn irq_count(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn virtio_pci_devices_work_with_msix_on_the_software_engine() {
    let (_, out, disk) = boot(KernelFlavour::Minimal, "");
    check_devices_and_io(&out, &disk);
    let irqs = irq_lines(&out);
    // Per-queue MSI-X vectors: "virtio0-req.0" (blk) and "virtio1-input" (rng).
    for name in ["virtio0-req.0", "virtio1-input"] {
        let line = irqs
            .iter()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} interrupt: {out}"));
        assert!(line.contains("PCI-MSI"), "{line}");
        assert!(irq_count(line) > 0, "{name} never interrupted: {line}");
    }
    assert!(!irqs.iter().any(|l| l.contains("IO-APIC")), "{out}");
}

#[test]
fn virtio_pci_falls_back_to_intx_through_the_ioapic() {
    // The guest refuses MSIs: the functions must interrupt on their INTA# lines, which
    // the DSDT's _PRT routes to IOAPIC pins 17 (slot 1) and 18 (slot 2), level-triggered.
    let (_, out, disk) = boot(KernelFlavour::Minimal, "pci=nomsi");
    check_devices_and_io(&out, &disk);
    let irqs = irq_lines(&out);
    for (gsi, name) in [(17, "virtio0"), (18, "virtio1")] {
        let line = irqs
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{gsi}:")))
            .unwrap_or_else(|| panic!("no GSI {gsi} line: {out}"));
        assert!(line.contains("IO-APIC"), "{line}");
        assert!(line.contains("fasteoi"), "level-triggered: {line}");
        assert!(line.ends_with(name), "{line}");
        assert!(irq_count(line) > 0, "{name} never interrupted: {line}");
    }
    assert!(!irqs.iter().any(|l| l.contains("PCI-MSI")), "{out}");
}

#[test]
fn the_stock_kernel_finds_virtio_pci_devices_and_uses_ecam() {
    let (_, out, disk) = boot(KernelFlavour::Stock, "");
    check_devices_and_io(&out, &disk);
    assert!(
        out.contains("reserved in ACPI motherboard resources"),
        "the kernel must accept the MCFG window: {out}"
    );
    assert!(
        irq_lines(&out).iter().any(|l| l.contains("PCI-MSI")),
        "{out}"
    );
}

#[test]
fn an_unknown_transport_is_a_one_line_error() {
    let r = common::wirt(&[
        "run",
        "--kernel",
        "/nonexistent",
        "--virtio-transport",
        "isa",
    ]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("use mmio or pci"), "{r:?}");
}
