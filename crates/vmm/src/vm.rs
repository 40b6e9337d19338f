//! `run_vm`: config → guest memory → engine → devices → firmware tables and kernel →
//! vCPU threads → wait for the outcome → stop everything → report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hypervisor::kvm::KvmHypervisor;
use hypervisor::{EngineKind, IoHandler, Vm};
use vm_memory::GuestMemoryMmap;

use crate::config::{EngineChoice, VmConfig};
use crate::console::{Console, Deliver};
use crate::devices::DeviceManager;
use crate::outcome::{Outcome, StopReason};
use crate::stats::VmStats;
use crate::{vcpu, RunOptions, VmmError};

/// What `run_vm` reports when the VM has ended.
#[derive(Debug)]
pub struct RunReport {
    pub reason: StopReason,
    pub stats: VmStats,
    pub engine: EngineKind,
    /// Time from start to the guest's first boot-timer write, if it made one.
    pub ready_after: Option<Duration>,
}

/// Boots the VM described by `cfg` and returns when it has ended.
pub fn run_vm(cfg: &VmConfig, opts: &RunOptions) -> Result<RunReport, VmmError> {
    cfg.validate()?;
    let start = Instant::now();
    let ranges = arch::memory::ram_ranges(cfg.memory.0)?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(VmmError::Memory)?;
    let vm = create_vm(cfg, &mem, opts)?;
    let engine = vm.engine();
    if opts.verbose {
        eprintln!(
            "wirt: engine {engine}, {} vCPU(s), {} RAM",
            cfg.cpus, cfg.memory
        );
    }

    let mut console = Console::open(&cfg.serial)?;
    let devices = Arc::new(DeviceManager::new(
        console.take_output(),
        vm.interrupt_sink(),
        cfg.memory.0,
        start,
    )?);

    let mut kernel = open(&cfg.kernel)?;
    let mut initrd = cfg.initrd.as_ref().map(|p| open(p)).transpose()?;
    let platform = arch::platform::PlatformConfig {
        cpus: cfg.cpus,
        mem_size: cfg.memory.0,
        cmdline: cfg.cmdline.clone(),
        protocol: arch::boot::BootProtocol::Auto,
        dsdt_devices: Vec::new(),
    };
    let boot = arch::platform::setup(
        &mem,
        &platform,
        &mut kernel,
        initrd.as_mut().map(|f| f as &mut dyn arch::boot::ReadSeek),
    )?;
    if opts.verbose {
        eprintln!(
            "wirt: {:?} kernel, {:?} entry at {:#x}",
            boot.format, boot.protocol, boot.entry
        );
    }

    let outcome = Arc::new(Outcome::new());
    let control = devices.control.clone();
    let check_outcome = outcome.clone();
    let check: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Some(ev) = control.requested() {
            check_outcome.report(StopReason::from(ev));
        }
    });

    let mut threads = Vec::new();
    let mut counters = Vec::new();
    for id in 0..u32::from(cfg.cpus) {
        let mut vcpu = vm.create_vcpu(id)?;
        if id == 0 {
            vcpu.set_state(&boot.cpu)?;
        }
        counters.push(vcpu.counters());
        let io: Arc<dyn IoHandler> = devices.clone();
        threads
            .push(vcpu::spawn(vcpu, io, outcome.clone(), check.clone()).map_err(VmmError::Thread)?);
    }

    let input_devices = devices.clone();
    let input_outcome = outcome.clone();
    let deliver: Deliver = Arc::new(move |bytes: &[u8]| {
        input_devices.deliver_serial_input(bytes, &|| input_outcome.is_decided())
    });
    console
        .start_input(deliver, outcome.clone())
        .map_err(VmmError::Thread)?;

    let mut announced_ready = false;
    let reason = loop {
        if let Some(r) = outcome.wait_timeout(Duration::from_millis(50)) {
            break r;
        }
        if opts.verbose && !announced_ready {
            if let Some(t) = devices.control.guest_ready() {
                eprintln!("\r\nwirt: guest ready after {} ms\r", t.as_millis());
                announced_ready = true;
            }
        }
    };

    // Stop: kick every vCPU until its thread has left the run loop.
    for t in threads {
        while !t.handle.is_finished() {
            t.kicker.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = t.handle.join();
    }
    drop(console); // restores the terminal before anything else is printed
    let stats = VmStats::collect(&counters, start.elapsed());
    Ok(RunReport {
        reason,
        stats,
        engine,
        ready_after: devices.control.guest_ready(),
    })
}

fn open(path: &std::path::Path) -> Result<std::fs::File, VmmError> {
    std::fs::File::open(path).map_err(|source| VmmError::Open {
        path: path.into(),
        source,
    })
}

/// Picks and opens the engine. On a PVM host, says so in one line.
fn create_vm(
    cfg: &VmConfig,
    mem: &GuestMemoryMmap,
    opts: &RunOptions,
) -> Result<Box<dyn Vm>, VmmError> {
    let sw = || -> Result<Box<dyn Vm>, VmmError> {
        Ok(Box::new(hypervisor::sw::SwVm::new(mem, cfg.cpus)?))
    };
    match cfg.engine {
        EngineChoice::Sw => sw(),
        EngineChoice::Kvm => {
            let kvm = KvmHypervisor::new()?;
            if kvm.is_pvm() {
                eprintln!("wirt: {}", kvm.description());
            }
            Ok(Box::new(kvm.create_vm(mem, cfg.cpus)?))
        }
        EngineChoice::Auto => match KvmHypervisor::new() {
            Ok(kvm) if !kvm.is_pvm() => Ok(Box::new(kvm.create_vm(mem, cfg.cpus)?)),
            Ok(kvm) => {
                eprintln!("wirt: {}; using the software engine", kvm.description());
                sw()
            }
            Err(e) => {
                if opts.verbose {
                    eprintln!("wirt: {e}; using the software engine");
                }
                sw()
            }
        },
    }
}
