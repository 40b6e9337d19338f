//! ACPI tables: RSDP, XSDT, FADT, FACS, MADT and a DSDT, built with `acpi_tables`.
//!
//! The platform is "full" ACPI, not hardware-reduced, because wirt has the legacy PC
//! devices Linux expects behind it: the FADT points at the PM1a event/control blocks and
//! PM timer in [`layout`](crate::layout), the SCI is ISA IRQ [`ACPI_SCI_IRQ`], reset is
//! a write of [`RESET_VALUE`] to port [`RESET_CONTROL`], and the boot-architecture flags
//! announce legacy devices and an 8042. There is no SMI command port: the platform is
//! always in ACPI mode, so the PM1 control register must read back with SCI_EN set.
//!
//! The MADT lists one local APIC per vCPU (APIC ID = vCPU id), the IOAPIC (ID = vCPU
//! count, GSI base 0), the override ISA IRQ 0 → GSI 2, the SCI as level-triggered,
//! active-high, and LINT1 as NMI. The DSDT has `\_S5` (SLP_TYP = [`ACPI_S5_SLP_TYP`]),
//! COM1 (PNP0501) and any extra [`DsdtDevice`]s the VMM adds (e.g. virtio-mmio,
//! `LNRO0005`, or a PCI host bridge, see [`PciHostBridge`]). A host bridge also brings an
//! MCFG table for its ECAM window.
//!
//! Layout in [`ACPI_START`]..+[`ACPI_SIZE`]: RSDP first, then the other tables, each
//! 64-byte aligned (the FACS must be).

use crate::layout::{
    pci_intx_gsi, ACPI_PM1A_CNT, ACPI_PM1A_CNT_LEN, ACPI_PM1A_EVT, ACPI_PM1A_EVT_LEN, ACPI_PM_TMR,
    ACPI_PM_TMR_LEN, ACPI_S5_SLP_TYP, ACPI_SCI_IRQ, ACPI_SIZE, ACPI_START, COM1, COM1_IRQ,
    IOAPIC_BASE, LAPIC_BASE, PCI_CONFIG_PORTS, PCI_CONFIG_PORTS_LEN, RESET_CONTROL, RESET_VALUE,
};
use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const OEM_ID: [u8; 6] = *b"WIRT  ";
const OEM_TABLE_ID: [u8; 8] = *b"WIRTVM  ";
const OEM_REVISION: u32 = 1;
const TABLE_ALIGN: u64 = 64;

/// FADT IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042.
pub const IAPC_BOOT_ARCH: u16 = 0x3;
/// MADT flags: PCAT_COMPAT (dual 8259s present).
const MADT_PCAT_COMPAT: u32 = 1;
/// MPS INTI flags: active high, level triggered.
const INTI_LEVEL_HIGH: u16 = 0x000d;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("{0} vCPUs: ACPI tables support 1 to 254")]
    CpuCount(u8),
    #[error("invalid ACPI device name {0:?}: need 4 characters A-Z, 0-9 or _, not starting with a digit")]
    DeviceName(String),
    #[error("invalid ACPI hardware ID {0:?}: need 1 to 8 printable ASCII characters")]
    HardwareId(String),
    #[error("device {name}: invalid resource: {reason}")]
    Resource { name: String, reason: String },
    #[error("the ACPI tables ({0} bytes) do not fit their {ACPI_SIZE}-byte area")]
    TooLarge(u64),
    #[error("writing ACPI tables to guest memory: {0}")]
    GuestWrite(String),
}

/// One resource of a DSDT device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DsdtResource {
    /// A memory range (32-bit descriptor below 4 GiB, 64-bit above).
    Mmio { base: u64, len: u64 },
    /// An I/O port range.
    Io { base: u16, len: u8 },
    /// An interrupt (GSI), edge/level and polarity as given.
    Irq {
        gsi: u32,
        level: bool,
        active_low: bool,
    },
    /// Makes the device a PCI host bridge: its `_CRS` lists the bridge's windows instead of
    /// consumed resources, it gets `_CID`, `_SEG`, `_BBN` and a `_PRT`, and the tables get
    /// an MCFG entry for its ECAM window.
    PciHostBridge(PciHostBridge),
}

/// A PCI host bridge for segment 0, buses `0..ecam_buses`.
///
/// `_CRS` produces the bus range, all I/O ports except the configuration ports (which it
/// consumes) and the memory window `mmio_base..+mmio_len` for BARs. `_PRT` maps pin P of
/// slot S to GSI [`pci_intx_gsi`]`(S, P)` on bus 0; such hard-wired PCI interrupts are
/// level-triggered and active-low by ACPI's rule (the irqchips ignore polarity, a device
/// asserting its line is "high" to them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PciHostBridge {
    pub ecam_base: u64,
    /// Number of buses the ECAM window covers (1 MiB each), 1..=256.
    pub ecam_buses: u16,
    pub mmio_base: u64,
    pub mmio_len: u64,
}

/// A device to add to `\_SB` in the DSDT.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DsdtDevice {
    /// Four-character ACPI name, e.g. "VR00".
    pub name: String,
    /// `_HID`: a 7-character EISA ID (e.g. "PNP0501") is encoded as one, anything else
    /// (e.g. "LNRO0005") as a string.
    pub hid: String,
    pub uid: u32,
    pub resources: Vec<DsdtResource>,
}

impl DsdtDevice {
    /// A virtio-mmio device as Linux's `virtio_mmio` ACPI driver expects it. Its interrupt
    /// is level-triggered: the transport holds the line while InterruptStatus is non-zero,
    /// and an edge-triggered pin would lose a completion that arrives before the ACK.
    pub fn virtio_mmio(index: u32, base: u64, len: u64, gsi: u32) -> Self {
        DsdtDevice {
            name: format!("V{:03X}", index & 0xfff),
            hid: "LNRO0005".into(),
            uid: index,
            resources: vec![
                DsdtResource::Mmio { base, len },
                DsdtResource::Irq {
                    gsi,
                    level: true,
                    active_low: false,
                },
            ],
        }
    }
}

impl DsdtDevice {
    /// The host bridge `PCI0` (PNP0A08, compatible with PNP0A03) and a motherboard-resource
    /// device (PNP0C02) that reserves its ECAM window, which Linux wants to see before it
    /// trusts the MCFG table.
    pub fn pci_host_bridge(bridge: PciHostBridge) -> [DsdtDevice; 2] {
        [
            DsdtDevice {
                name: "PCI0".into(),
                hid: "PNP0A08".into(),
                uid: 0,
                resources: vec![DsdtResource::PciHostBridge(bridge)],
            },
            DsdtDevice {
                name: "PRES".into(),
                hid: "PNP0C02".into(),
                uid: 0,
                resources: vec![DsdtResource::Mmio {
                    base: bridge.ecam_base,
                    len: u64::from(bridge.ecam_buses) << 20,
                }],
            },
        ]
    }
}

/// The host bridges among `devices`.
fn pci_host_bridges(devices: &[DsdtDevice]) -> impl Iterator<Item = PciHostBridge> + '_ {
    devices
        .iter()
        .flat_map(|d| d.resources.iter())
        .filter_map(|r| match r {
            DsdtResource::PciHostBridge(b) => Some(*b),
            _ => None,
        })
}

/// `_CRS`, `_PRT` and the identification objects of a PCI host bridge.
fn pci_host_bridge_aml(d: &DsdtDevice, b: &PciHostBridge) -> Result<Vec<u8>, AcpiError> {
    let bad = |reason: &str| AcpiError::Resource {
        name: d.name.clone(),
        reason: reason.into(),
    };
    if b.ecam_buses == 0 || b.ecam_buses > 256 {
        return Err(bad("a PCI host bridge needs 1 to 256 buses"));
    }
    let ecam_last = (u64::from(b.ecam_buses) << 20)
        .checked_sub(1)
        .and_then(|l| b.ecam_base.checked_add(l));
    let mmio_last = b
        .mmio_len
        .checked_sub(1)
        .and_then(|l| b.mmio_base.checked_add(l));
    let (Some(_), Some(mmio_last)) = (ecam_last, mmio_last) else {
        return Err(bad("empty or overflowing PCI window"));
    };
    let last_bus = b.ecam_buses - 1;
    let buses = aml::AddressSpace::<u16>::new_bus_number(0, last_bus);
    let cfg_ports = aml::IO::new(PCI_CONFIG_PORTS, PCI_CONFIG_PORTS, 1, PCI_CONFIG_PORTS_LEN);
    let io_low = aml::AddressSpace::<u16>::new_io(0, PCI_CONFIG_PORTS - 1, None);
    let io_high = aml::AddressSpace::<u16>::new_io(
        PCI_CONFIG_PORTS + u16::from(PCI_CONFIG_PORTS_LEN),
        0xffff,
        None,
    );
    let mmio32;
    let mmio64;
    let mmio: &dyn Aml = match (u32::try_from(b.mmio_base), u32::try_from(mmio_last)) {
        (Ok(lo), Ok(hi)) => {
            mmio32 = aml::AddressSpace::<u32>::new_memory(
                aml::AddressSpaceCacheable::NotCacheable,
                true,
                lo,
                hi,
                None,
            );
            &mmio32
        }
        _ => {
            mmio64 = aml::AddressSpace::<u64>::new_memory(
                aml::AddressSpaceCacheable::NotCacheable,
                true,
                b.mmio_base,
                mmio_last,
                None,
            );
            &mmio64
        }
    };
    let crs = aml::ResourceTemplate::new(vec![&buses, &cfg_ports, &io_low, &io_high, mmio]);

    // _PRT: Package { Address (slot << 16 | 0xffff), Pin, Source (0: a GSI), GSI }.
    let mut routes: Vec<[u32; 3]> = Vec::new();
    for slot in 1..32u8 {
        for pin in 0..4u8 {
            routes.push([
                u32::from(slot) << 16 | 0xffff,
                u32::from(pin),
                pci_intx_gsi(slot, pin),
            ]);
        }
    }
    let zero = 0u8;
    let entries: Vec<aml::Package> = routes
        .iter()
        .map(|[addr, pin, gsi]| aml::Package::new(vec![addr, pin, &zero, gsi]))
        .collect();
    let prt = aml::Package::new(entries.iter().map(|p| p as &dyn Aml).collect());

    let hid = aml::EISAName::new(&d.hid);
    let cid = aml::EISAName::new("PNP0A03");
    let name_hid = aml::Name::new("_HID".into(), &hid);
    let name_cid = aml::Name::new("_CID".into(), &cid);
    let name_seg = aml::Name::new("_SEG".into(), &zero);
    let name_bbn = aml::Name::new("_BBN".into(), &zero);
    let name_uid = aml::Name::new("_UID".into(), &d.uid);
    let name_crs = aml::Name::new("_CRS".into(), &crs);
    let name_prt = aml::Name::new("_PRT".into(), &prt);
    let dev = aml::Device::new(
        d.name.as_str().into(),
        vec![
            &name_hid, &name_cid, &name_seg, &name_bbn, &name_uid, &name_crs, &name_prt,
        ],
    );
    let mut out = Vec::new();
    dev.to_aml_bytes(&mut out);
    Ok(out)
}

/// MCFG for the host bridges' ECAM windows, if there are any.
pub fn mcfg(devices: &[DsdtDevice]) -> Option<MCFG> {
    let mut bridges = pci_host_bridges(devices).peekable();
    bridges.peek()?;
    let mut t = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for b in bridges {
        let last_bus = b.ecam_buses.clamp(1, 256) - 1;
        t.add_ecam(b.ecam_base, 0, 0, last_bus as u8);
    }
    Some(t)
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 4
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_eisa_id(hid: &str) -> bool {
    let b = hid.as_bytes();
    b.len() == 7
        && b[..3].iter().all(|c| c.is_ascii_uppercase())
        && b[3..].iter().all(|c| c.is_ascii_hexdigit())
}

fn device_aml(d: &DsdtDevice) -> Result<Vec<u8>, AcpiError> {
    if !valid_name(&d.name) {
        return Err(AcpiError::DeviceName(d.name.clone()));
    }
    if d.hid.is_empty() || d.hid.len() > 8 || !d.hid.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(AcpiError::HardwareId(d.hid.clone()));
    }
    if let Some(b) = pci_host_bridges(std::slice::from_ref(d)).next() {
        if !is_eisa_id(&d.hid) {
            return Err(AcpiError::HardwareId(d.hid.clone()));
        }
        return pci_host_bridge_aml(d, &b);
    }
    let bad = |reason: &str| AcpiError::Resource {
        name: d.name.clone(),
        reason: reason.into(),
    };
    let mut res: Vec<Box<dyn Aml>> = Vec::new();
    for r in &d.resources {
        match *r {
            DsdtResource::Mmio { base, len } => {
                let last = len
                    .checked_sub(1)
                    .and_then(|l| base.checked_add(l))
                    .ok_or_else(|| bad("empty or overflowing memory range"))?;
                match (u32::try_from(base), u32::try_from(len), u32::try_from(last)) {
                    (Ok(b), Ok(l), Ok(_)) => {
                        res.push(Box::new(aml::Memory32Fixed::new(true, b, l)))
                    }
                    _ => res.push(Box::new(aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        base,
                        last,
                        None,
                    ))),
                }
            }
            DsdtResource::Io { base, len } => {
                if len == 0 || base.checked_add(u16::from(len) - 1).is_none() {
                    return Err(bad("empty or overflowing I/O range"));
                }
                res.push(Box::new(aml::IO::new(base, base, 1, len)));
            }
            DsdtResource::Irq {
                gsi,
                level,
                active_low,
            } => res.push(Box::new(aml::Interrupt::new(
                true, !level, active_low, false, gsi,
            ))),
            DsdtResource::PciHostBridge(_) => {}
        }
    }
    let crs_children: Vec<&dyn Aml> = res.iter().map(|b| b.as_ref()).collect();
    let crs = aml::ResourceTemplate::new(crs_children);
    let hid_eisa;
    let hid_str;
    let hid: &dyn Aml = if is_eisa_id(&d.hid) {
        hid_eisa = aml::EISAName::new(&d.hid);
        &hid_eisa
    } else {
        hid_str = d.hid.clone();
        &hid_str
    };
    let name_hid = aml::Name::new("_HID".into(), hid);
    let name_uid = aml::Name::new("_UID".into(), &d.uid);
    let name_crs = aml::Name::new("_CRS".into(), &crs);
    let dev = aml::Device::new(
        d.name.as_str().into(),
        vec![&name_hid, &name_uid, &name_crs],
    );
    let mut out = Vec::new();
    dev.to_aml_bytes(&mut out);
    Ok(out)
}

/// The fixed platform devices (COM1) plus `extra`.
fn sb_devices(extra: &[DsdtDevice]) -> Vec<DsdtDevice> {
    let mut v = vec![DsdtDevice {
        name: "COM1".into(),
        hid: "PNP0501".into(),
        uid: 0,
        resources: vec![
            DsdtResource::Io { base: COM1, len: 8 },
            DsdtResource::Irq {
                gsi: COM1_IRQ,
                level: false,
                active_low: false,
            },
        ],
    }];
    v.extend_from_slice(extra);
    v
}

/// DSDT AML body: `\_S5` and `\_SB` with the devices.
pub fn dsdt(extra: &[DsdtDevice]) -> Result<Sdt, AcpiError> {
    let mut body = Vec::new();
    let slp = ACPI_S5_SLP_TYP;
    let zero = 0u8;
    let s5_pkg = aml::Package::new(vec![&slp, &slp, &zero, &zero]);
    aml::Name::new("_S5_".into(), &s5_pkg).to_aml_bytes(&mut body);
    let mut devices = Vec::new();
    for d in sb_devices(extra) {
        devices.extend(device_aml(&d)?);
    }
    let raw = RawAml(devices);
    aml::Scope::new("\\_SB_".into(), vec![&raw]).to_aml_bytes(&mut body);
    let mut sdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.append_slice(&body);
    Ok(sdt)
}

/// Already-encoded AML.
struct RawAml(Vec<u8>);
impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// MADT for `cpus` vCPUs.
pub fn madt(cpus: u8) -> Result<Sdt, AcpiError> {
    if cpus == 0 || cpus > 254 {
        return Err(AcpiError::CpuCount(cpus));
    }
    let mut sdt = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.write_u32(36, LAPIC_BASE as u32);
    sdt.write_u32(40, MADT_PCAT_COMPAT);
    let mut entries = Vec::new();
    for id in 0..cpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(cpus, IOAPIC_BASE as u32, 0).to_aml_bytes(&mut entries);
    // Interrupt source overrides: type 2, length 10, bus 0, source, GSI, flags.
    for (source, gsi, flags) in [
        (0u8, 2u32, 0u16),
        (ACPI_SCI_IRQ, u32::from(ACPI_SCI_IRQ), INTI_LEVEL_HIGH),
    ] {
        entries.extend_from_slice(&[2, 10, 0, source]);
        entries.extend_from_slice(&gsi.to_le_bytes());
        entries.extend_from_slice(&flags.to_le_bytes());
    }
    // Local APIC NMI: type 4, length 6, all processors, flags 0, LINT1.
    entries.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt.append_slice(&entries);
    Ok(sdt)
}

fn io_gas(port: u16, len: u8) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        len * 8,
        0,
        AccessSize::Undefined,
        u64::from(port),
    )
}

/// FADT pointing at the DSDT and FACS.
pub fn fadt(dsdt_addr: u64, facs_addr: u64) -> acpi_tables::fadt::FADT {
    let b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION).dsdt_64(dsdt_addr);
    // The 32-bit FIRMWARE_CTRL where the FACS is below 4 GiB (it always is), as PC
    // firmware does: some OS loaders (kvm-unit-tests' `s3`) read only that field.
    let b = match u32::try_from(facs_addr) {
        Ok(a) => b.firmware_ctrl_32(a),
        Err(_) => b.firmware_ctrl_64(facs_addr),
    };
    let mut b = b
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // PWR_BUTTON stays clear: a fixed-feature power button exists (PM1 PWRBTN_STS/EN),
        // which is how the VMM asks the guest to shut down. There is no sleep button.
        .flag(Flags::SlpButton)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup);
    b.sci_int = u16::from(ACPI_SCI_IRQ).into();
    b.pm1a_evt_blk = u32::from(ACPI_PM1A_EVT).into();
    b.pm1a_cnt_blk = u32::from(ACPI_PM1A_CNT).into();
    b.pm_tmr_blk = u32::from(ACPI_PM_TMR).into();
    b.pm1_evt_len = ACPI_PM1A_EVT_LEN;
    b.pm1_cnt_len = ACPI_PM1A_CNT_LEN;
    b.pm_tmr_len = ACPI_PM_TMR_LEN;
    b.x_pm1a_evt_blk = io_gas(ACPI_PM1A_EVT, ACPI_PM1A_EVT_LEN);
    b.x_pm1a_cnt_blk = io_gas(ACPI_PM1A_CNT, ACPI_PM1A_CNT_LEN);
    b.x_pm_tmr_blk = io_gas(ACPI_PM_TMR, ACPI_PM_TMR_LEN);
    b.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    b.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(RESET_CONTROL),
    );
    b.reset_value = RESET_VALUE;
    b.finalize()
}

fn bytes_of(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// All tables, laid out from [`ACPI_START`]: (address, bytes) pairs, RSDP first.
pub fn build(cpus: u8, extra: &[DsdtDevice]) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let align = |a: u64| (a + TABLE_ALIGN - 1) & !(TABLE_ALIGN - 1);
    let rsdp_addr = ACPI_START;
    let mut next = align(rsdp_addr + Rsdp::len() as u64);
    let mut place = |len: usize| {
        let at = next;
        next = align(next + len as u64);
        at
    };
    let dsdt = dsdt(extra)?;
    let dsdt_addr = place(dsdt.len());
    let facs = FACS::new();
    let facs_addr = place(FACS::len());
    let fadt = fadt(dsdt_addr, facs_addr);
    let fadt_addr = place(acpi_tables::fadt::FADT::len());
    let madt = madt(cpus)?;
    let madt_addr = place(madt.len());
    let mcfg = mcfg(extra).map(|t| bytes_of(&t));
    let mcfg_addr = mcfg.as_ref().map(|t| place(t.len()));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if let Some(a) = mcfg_addr {
        xsdt.add_entry(a);
    }
    let xsdt_bytes = bytes_of(&xsdt);
    let xsdt_addr = place(xsdt_bytes.len());
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);
    let end = next;
    if end - ACPI_START > ACPI_SIZE {
        return Err(AcpiError::TooLarge(end - ACPI_START));
    }
    let mut tables = vec![
        (rsdp_addr, bytes_of(&rsdp)),
        (xsdt_addr, xsdt_bytes),
        (fadt_addr, bytes_of(&fadt)),
        (facs_addr, bytes_of(&facs)),
        (madt_addr, madt.as_slice().to_vec()),
        (dsdt_addr, dsdt.as_slice().to_vec()),
    ];
    if let (Some(a), Some(t)) = (mcfg_addr, mcfg) {
        tables.push((a, t));
    }
    Ok(tables)
}

/// Writes all tables; returns the RSDP address (for the zero page or PVH start info).
pub fn write(mem: &GuestMemoryMmap, cpus: u8, extra: &[DsdtDevice]) -> Result<u64, AcpiError> {
    let tables = build(cpus, extra)?;
    for (addr, bytes) in &tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|e| AcpiError::GuestWrite(e.to_string()))?;
    }
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pci_tests {
    use super::*;
    use crate::layout::{PCI_ECAM_BUSES, PCI_ECAM_START, PCI_MMIO_SIZE, PCI_MMIO_START};

    fn bridge() -> PciHostBridge {
        PciHostBridge {
            ecam_base: PCI_ECAM_START,
            ecam_buses: PCI_ECAM_BUSES,
            mmio_base: PCI_MMIO_START,
            mmio_len: PCI_MMIO_SIZE,
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn by_signature<'a>(tables: &'a [(u64, Vec<u8>)], sig: &[u8; 4]) -> Option<&'a [u8]> {
        tables
            .iter()
            .find(|(_, t)| &t[0..4] == sig)
            .map(|(_, t)| t.as_slice())
    }

    #[test]
    fn a_host_bridge_brings_pci0_and_an_mcfg_table() {
        let tables = build(1, &DsdtDevice::pci_host_bridge(bridge())).unwrap();
        let mcfg = by_signature(&tables, b"MCFG").expect("MCFG");
        assert_eq!(mcfg.len(), 44 + 16);
        assert_eq!(mcfg.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&mcfg[44..52], &PCI_ECAM_START.to_le_bytes());
        assert_eq!(&mcfg[52..56], &[0, 0, 0, 0], "segment 0, buses 0..0");
        // The XSDT points at it.
        let (mcfg_addr, _) = tables.iter().find(|(_, t)| &t[0..4] == b"MCFG").unwrap();
        let xsdt = by_signature(&tables, b"XSDT").unwrap();
        assert!(xsdt[36..].chunks(8).any(|c| c == mcfg_addr.to_le_bytes()));
        let dsdt = by_signature(&tables, b"DSDT").unwrap();
        assert!(find(dsdt, b"PCI0").is_some());
        assert!(find(dsdt, b"_PRT").is_some());
        assert!(find(dsdt, b"_BBN").is_some());
        assert!(find(dsdt, b"PRES").is_some());
        // Slot 1 INTA# → GSI 17 (DWord 0x0001ffff, pin Zero, source Zero, 0x11).
        assert!(find(
            dsdt,
            &[0x0c, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x11]
        )
        .is_some());
    }

    #[test]
    fn without_a_bridge_there_is_no_mcfg() {
        let tables = build(1, &[]).unwrap();
        assert!(by_signature(&tables, b"MCFG").is_none());
        assert_eq!(by_signature(&tables, b"XSDT").unwrap().len(), 36 + 16);
    }

    #[test]
    fn bad_bridges_are_errors() {
        let mut b = bridge();
        b.ecam_buses = 0;
        assert!(matches!(
            dsdt(&DsdtDevice::pci_host_bridge(b)),
            Err(AcpiError::Resource { .. })
        ));
        let mut b = bridge();
        b.mmio_len = 0;
        assert!(dsdt(&DsdtDevice::pci_host_bridge(b)).is_err());
        let mut d = DsdtDevice::pci_host_bridge(bridge())[0].clone();
        d.hid = "NOT-EISA".into();
        assert!(matches!(dsdt(&[d]), Err(AcpiError::HardwareId(_))));
    }

    /// ACPICA's disassembler reads the DSDT and MCFG back without complaint, and sees the
    /// bridge's resources. Skipped where `iasl` (acpica-tools) is not installed.
    #[test]
    fn iasl_decompiles_the_pci_tables() {
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            println!("skipped: iasl not installed (apt-get install acpica-tools)");
            return;
        }
        let tables = build(2, &DsdtDevice::pci_host_bridge(bridge())).unwrap();
        let dir = std::env::temp_dir().join(format!("wirt-acpi-pci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut out = String::new();
        for sig in [b"DSDT", b"MCFG"] {
            let name = String::from_utf8_lossy(sig).to_lowercase();
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, by_signature(&tables, sig).unwrap()).unwrap();
            let r = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&r.stdout).into_owned()
                + &String::from_utf8_lossy(&r.stderr);
            assert!(r.status.success(), "{log}");
            assert!(!log.contains("Error"), "{log}");
            out += &std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        for want in [
            "EisaId (\"PNP0A08\")",
            "EisaId (\"PNP0A03\")",
            "EisaId (\"PNP0C02\")",
            "WordBusNumber",
            "0x0CF8",
            "0xC0000000",
            "0xCFFFFFFF",
            "0x0001FFFF",
            "0x001FFFFF",
            "Base Address : 00000000E0000000",
        ] {
            assert!(out.contains(want), "{want} missing in\n{out}");
        }
    }
}
