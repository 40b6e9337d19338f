//! `run_vm`: config → guest memory → engine → devices → firmware tables and kernel →
//! vCPU threads → wait for the outcome → stop everything → report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hypervisor::kvm::KvmHypervisor;
use hypervisor::{EngineKind, ExitCounters, IoHandler, Vm};
use vm_memory::GuestMemoryMmap;

use crate::config::{EngineChoice, VmConfig};
use crate::console::{Console, Deliver};
use crate::devices::DeviceManager;
use crate::outcome::{Outcome, StopReason};
use crate::pause::PauseGate;
use crate::stats::VmStats;
use crate::virtio_devices::{self, VirtioDevices};
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

/// The lifecycle state of a running VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    /// The outcome is decided; the VM is stopping or has stopped.
    Stopped(StopReason),
}

/// A booted VM: its vCPU threads run until the guest or a caller ends it.
pub struct RunningVm {
    outcome: Arc<Outcome>,
    gate: Arc<PauseGate>,
    threads: Vec<vcpu::VcpuThread>,
    counters: Vec<Arc<ExitCounters>>,
    devices: Arc<DeviceManager>,
    console: Option<Console>,
    /// The virtio back ends (stopped when the VM is dropped).
    virtio: VirtioDevices,
    /// Keeps the engine's VM (and with it guest memory registration) alive.
    _vm: Arc<dyn Vm>,
    engine: EngineKind,
    start: Instant,
    verbose: bool,
}

/// Boots the VM described by `cfg` and returns when it has ended.
pub fn run_vm(cfg: &VmConfig, opts: &RunOptions) -> Result<RunReport, VmmError> {
    Ok(RunningVm::start(cfg, opts)?.wait())
}

impl RunningVm {
    /// Validates `cfg`, builds the VM and starts its vCPUs.
    pub fn start(cfg: &VmConfig, opts: &RunOptions) -> Result<RunningVm, VmmError> {
        cfg.validate()?;
        let start = Instant::now();
        let ranges = arch::memory::ram_ranges(cfg.memory.0)?;
        let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(VmmError::Memory)?);
        let vm: Arc<dyn Vm> = create_vm(cfg, &mem, opts)?.into();
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
        if cfg.test_device {
            devices.add_test_device(vm.interrupt_sink())?;
        }

        let notify_vm = vm.clone();
        let virtio = virtio_devices::attach(
            cfg,
            devices.mmio_bus(),
            mem.clone(),
            vm.interrupt_sink(),
            Arc::new(move |gpa, len| notify_vm.note_guest_write(gpa, len)),
            Some(vm.clone()),
        )?;

        if let (Some(b), Some(target)) = (&virtio.balloon, cfg.balloon_target) {
            b.set_target_pages(balloon_pages(target.0));
        }

        let mut kernel = open(&cfg.kernel)?;
        let mut initrd = cfg.initrd.as_ref().map(|p| open(p)).transpose()?;
        let platform = arch::platform::PlatformConfig {
            cpus: cfg.cpus,
            mem_size: cfg.memory.0,
            cmdline: cfg.cmdline.clone(),
            kernel_name: Some(cfg.kernel.display().to_string()),
            protocol: arch::boot::BootProtocol::Auto,
            dsdt_devices: virtio.dsdt.clone(),
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
        let gate = Arc::new(PauseGate::new());
        let control = devices.control.clone();
        let check_outcome = outcome.clone();
        let check: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(ev) = control.requested() {
                check_outcome.report(StopReason::from(ev));
            }
        });

        let mut vcpus = Vec::new();
        for id in 0..u32::from(cfg.cpus) {
            let mut vcpu = vm.create_vcpu(id)?;
            if id == 0 {
                vcpu.set_state(&boot.cpu)?;
            }
            vcpus.push(vcpu);
        }
        let counters = vcpus.iter().map(|v| v.counters()).collect();
        let mut threads = Vec::new();
        for vcpu in vcpus {
            let io: Arc<dyn IoHandler> = devices.clone();
            let t = vcpu::spawn(vcpu, io, outcome.clone(), gate.clone(), check.clone());
            threads.push(t.map_err(VmmError::Thread)?);
        }

        let input_devices = devices.clone();
        let input_outcome = outcome.clone();
        let hold = opts.hold_input_until_ready;
        let deliver: Deliver = Arc::new(move |bytes: &[u8]| {
            while hold
                && input_devices.control.guest_ready().is_none()
                && !input_outcome.is_decided()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            input_devices.deliver_serial_input(bytes, &|| input_outcome.is_decided())
        });
        console
            .start_input(deliver, outcome.clone(), opts.eof_byte)
            .map_err(VmmError::Thread)?;

        Ok(RunningVm {
            outcome,
            gate,
            threads,
            counters,
            devices,
            console: Some(console),
            virtio,
            _vm: vm,
            engine,
            start,
            verbose: opts.verbose,
        })
    }

    /// The balloon's controls, if the VM has a balloon.
    pub fn balloon(&self) -> Option<&virtio::balloon::BalloonHandle> {
        self.virtio.balloon.as_ref()
    }

    /// Asks the guest to hold `bytes` (rounded down to whole 4 KiB pages) in the balloon;
    /// the guest inflates or deflates in its own time. False if the VM has no balloon.
    pub fn set_balloon_target(&self, bytes: u64) -> bool {
        match &self.virtio.balloon {
            Some(b) => {
                b.set_target_pages(balloon_pages(bytes));
                true
            }
            None => false,
        }
    }

    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    pub fn state(&self) -> VmState {
        if let Some(r) = self.outcome.wait_timeout(Duration::ZERO) {
            VmState::Stopped(r)
        } else if self.gate.is_closed() {
            VmState::Paused
        } else {
            VmState::Running
        }
    }

    /// Exit counters and instructions so far.
    pub fn stats(&self) -> VmStats {
        VmStats {
            ready: self.ready_after(),
            ..VmStats::collect(&self.counters, self.start.elapsed())
        }
    }

    /// Time from start to the guest's first boot-timer write, if it made one yet.
    pub fn ready_after(&self) -> Option<Duration> {
        self.devices.control.guest_ready()
    }

    /// Stops every vCPU between instructions; returns once all are parked.
    pub fn pause(&self) -> Result<(), VmmError> {
        if self.outcome.is_decided() {
            return Err(VmmError::NotRunning);
        }
        self.gate.close();
        let n = self.threads.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.gate.wait_parked(n, Duration::from_millis(5)) {
            if self.outcome.is_decided() {
                return Err(VmmError::NotRunning);
            }
            if Instant::now() > deadline {
                self.gate.open();
                return Err(VmmError::PauseTimeout);
            }
            self.kick_all();
        }
        Ok(())
    }

    pub fn resume(&self) {
        self.gate.open();
    }

    /// Asks the guest to shut down (ACPI power button); it powers off when it is done.
    pub fn request_shutdown(&self) {
        self.gate.open();
        self.devices.pm1_event.press_power_button();
    }

    /// Ends the VM now with `reason` (a hard stop: the guest is not asked).
    pub fn stop(&self, reason: StopReason) {
        self.outcome.report(reason);
    }

    /// Waits for the outcome, stops all vCPU threads and reports.
    pub fn wait(mut self) -> RunReport {
        let mut announced_ready = false;
        let reason = loop {
            if let Some(r) = self.outcome.wait_timeout(Duration::from_millis(50)) {
                break r;
            }
            if self.verbose && !announced_ready {
                if let Some(t) = self.devices.control.guest_ready() {
                    eprintln!("\r\nwirt: guest ready after {} ms\r", t.as_millis());
                    announced_ready = true;
                }
            }
        };
        self.stop_threads();
        drop(self.console.take()); // restores the terminal before anything else is printed
        RunReport {
            reason,
            stats: VmStats::collect(&self.counters, self.start.elapsed()),
            engine: self.engine,
            ready_after: self.devices.control.guest_ready(),
        }
    }

    /// Lets every vCPU thread leave its loop (the outcome must be decided) and joins it.
    fn stop_threads(&mut self) {
        self.gate.release();
        for t in std::mem::take(&mut self.threads) {
            while !t.handle.is_finished() {
                t.kicker.kick();
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = t.handle.join();
        }
    }

    fn kick_all(&self) {
        for t in &self.threads {
            t.kicker.kick();
        }
    }
}

/// A VM dropped without [`RunningVm::wait`] (an error path in the caller) is stopped, so
/// no vCPU thread outlives its handle.
impl Drop for RunningVm {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.outcome
                .report(StopReason::Failed("the VM handle was dropped".into()));
            self.stop_threads();
        }
    }
}

/// `bytes` as a number of 4 KiB balloon pages (virtio-balloon's unit, whatever the guest's
/// page size), saturating at the field's limit.
fn balloon_pages(bytes: u64) -> u32 {
    u32::try_from(bytes >> 12).unwrap_or(u32::MAX)
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
        Ok(Box::new(hypervisor::sw::SwVm::new(
            mem,
            cfg.cpus,
            &cfg.cpu_features,
        )?))
    };
    match cfg.engine {
        EngineChoice::Sw => sw(),
        EngineChoice::Kvm => {
            let kvm = KvmHypervisor::new()?;
            if kvm.is_pvm() {
                eprintln!("wirt: {}", kvm.description());
            }
            let mut vm = kvm.create_vm(mem, cfg.cpus)?;
            vm.set_cpu_features(&cfg.cpu_features)?;
            Ok(Box::new(vm))
        }
        EngineChoice::Auto => match KvmHypervisor::new() {
            Ok(kvm) if !kvm.is_pvm() => {
                let mut vm = kvm.create_vm(mem, cfg.cpus)?;
                vm.set_cpu_features(&cfg.cpu_features)?;
                Ok(Box::new(vm))
            }
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
