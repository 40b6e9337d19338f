//! From a configuration entry to a command line: how the suite's README says a VMM runs
//! one test, for wirt and (as the reference) for QEMU.
//!
//! Both get the test kernel as a Multiboot image, an environment file as module 0
//! (`NR_CPUS`, `MEMSIZE`, `TEST_DEVICE`: without it the tests look for QEMU's fw_cfg), the
//! test's arguments as its command line, its vCPU count and memory, the serial port on
//! stdout and the debug-exit port at 0xf4. What a test asks of QEMU beyond that
//! (`qemu_params`) is translated for wirt where wirt has the equivalent and noted
//! otherwise; the test then decides by itself whether it can run (it skips with status
//! 77 when a CPU feature it needs is missing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cfg::{Entry, QemuParams};

/// The suite's default time limit for one test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// Memory when the test does not ask for an amount (QEMU's x86 default in the suite).
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// The VMM that runs the tests.
#[derive(Clone, Debug)]
pub enum Vmm {
    /// `wirt run --engine ENGINE`.
    Wirt { binary: PathBuf, engine: String },
    /// `qemu-system-x86_64 -accel ACCEL`, as the suite's own `x86/run` starts it.
    Qemu { binary: PathBuf, accel: String },
}

impl Vmm {
    /// A short label for reports (`wirt sw`, `qemu tcg`).
    pub fn label(&self) -> String {
        match self {
            Vmm::Wirt { engine, .. } => format!("wirt {engine}"),
            Vmm::Qemu { accel, .. } => format!("qemu {accel}"),
        }
    }

    fn hardware_assisted(&self) -> bool {
        match self {
            Vmm::Wirt { engine, .. } => engine == "kvm",
            Vmm::Qemu { accel, .. } => accel == "kvm",
        }
    }
}

/// One test, ready to start.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Written to a file that becomes the test's module 0 (`args` name that file as
    /// [`ENV_PLACEHOLDER`]).
    pub env_file: String,
    pub timeout: Duration,
    /// What of the test's request could not be given (shown with the result).
    pub notes: Vec<String>,
}

/// Stands in `Invocation::args` for the environment file's path until the runner has
/// written it.
pub const ENV_PLACEHOLDER: &str = "@ENV@";

/// Why a test is not started at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRun(pub String);

/// Whether a `check = path=value` condition holds on this host.
fn check_holds(check: &str) -> bool {
    let Some((path, want)) = check.split_once('=') else {
        return false;
    };
    std::fs::read_to_string(path)
        .map(|v| v.trim() == want)
        .unwrap_or(false)
}

/// The `--cpu` value for wirt from QEMU's `-cpu MODEL,+a,-b`: the feature edits, minus
/// QEMU-only properties (`key=value` such as `host-phys-bits`, `vendor=...`).
fn wirt_cpu_features(p: &QemuParams) -> (Vec<String>, Vec<String>) {
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for f in &p.cpu_features {
        if f.starts_with('+') || f.starts_with('-') {
            keep.push(f.clone());
        } else {
            dropped.push(f.clone());
        }
    }
    (keep, dropped)
}

/// Plans `entry` (from the suite at `suite_dir`) on `vmm`.
pub fn plan(entry: &Entry, suite_dir: &Path, vmm: &Vmm) -> Result<Invocation, NotRun> {
    if entry.arch.as_deref() == Some("i386") {
        return Err(NotRun(
            "32-bit test (arch = i386); this is the x86_64 build".into(),
        ));
    }
    let params = QemuParams::parse(&entry.qemu_params);
    // `accel = kvm` is the configuration's own statement that the test needs KVM (the
    // suite's runner skips it under TCG too). `-enable-kvm` or `-cpu host` in the QEMU
    // parameters are not: under TCG QEMU quietly uses KVM for them where /dev/kvm
    // exists, so such a test runs here and decides for itself.
    if entry.accel.as_deref() == Some("kvm") && !vmm.hardware_assisted() {
        return Err(NotRun("needs KVM (accel = kvm)".into()));
    }
    let kernel = suite_dir.join(&entry.file);
    if !kernel.exists() {
        return Err(NotRun(format!("{} is not in the suite", entry.file)));
    }
    let memory = params.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    let mut test_args = entry.test_args.clone();
    if let Some(a) = &params.append {
        if !test_args.is_empty() {
            test_args.push(' ');
        }
        test_args.push_str(a);
    }
    let env_file = format!("NR_CPUS={}\nMEMSIZE={memory}\nTEST_DEVICE=0\n", entry.smp);
    let timeout = entry
        .timeout
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut notes = Vec::new();
    let kernel = kernel.display().to_string();
    let (program, args) = match vmm {
        Vmm::Wirt { binary, engine } => {
            // The checks name the host KVM module's parameters; they say nothing about
            // a software engine, and wirt's KVM engine is asked the same as QEMU's.
            if engine == "kvm" {
                if let Some(c) = entry.check.iter().find(|c| !check_holds(c)) {
                    return Err(NotRun(format!("host check {c} does not hold")));
                }
            }
            let mut args = vec![
                "run".to_string(),
                "--engine".into(),
                engine.clone(),
                "--kernel".into(),
                kernel,
                "--initrd".into(),
                ENV_PLACEHOLDER.into(),
                "--cpus".into(),
                entry.smp.to_string(),
                "--memory".into(),
                format!("{memory}M"),
                "--serial".into(),
                "stdio".into(),
                // QEMU's side always has pc-testdev (below); the suite's scratch ports,
                // IRQ-line ports and MMIO scratch RAM are wirt's opt-in test device.
                "--test-device".into(),
                // `=` form: arguments such as `-pause_filter_test` start with a dash.
                format!("--cmdline={test_args}"),
            ];
            let (features, dropped) = wirt_cpu_features(&params);
            // Tests of nested virtualization ask for the feature by name; the software
            // engine has no VMX/SVM to offer.
            if engine == "sw" {
                if let Some(f) = features.iter().find(|f| *f == "+vmx" || *f == "+svm") {
                    return Err(NotRun(format!(
                        "needs nested hardware virtualization ({f}), which the software engine does not emulate"
                    )));
                }
            }
            if !features.is_empty() {
                args.push(format!("--cpu-features={}", features.join(",")));
            }
            if let Some(m) = &params.cpu_model {
                if m != "qemu64" && m != "max" {
                    notes.push(format!("CPU model {m} not modelled"));
                }
            }
            for d in dropped {
                notes.push(format!("-cpu property {d} ignored"));
            }
            for o in &params.other {
                notes.push(format!("{o} ignored"));
            }
            for d in &params.devices {
                notes.push(format!("no {d} device"));
            }
            for m in &params.machine {
                notes.push(format!("-machine {m} ignored"));
            }
            (binary.clone(), args)
        }
        Vmm::Qemu { binary, accel } => {
            if let Some(c) = entry.check.iter().find(|c| !check_holds(c)) {
                return Err(NotRun(format!("host check {c} does not hold")));
            }
            let mut args: Vec<String> = [
                "-nodefaults",
                "-device",
                "pc-testdev",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x4",
                "-vnc",
                "none",
                "-serial",
                "stdio",
                "-device",
                "pci-testdev",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend([
                "-machine".into(),
                format!("accel={accel}"),
                "-kernel".into(),
                kernel,
                "-smp".into(),
                entry.smp.to_string(),
                "-initrd".into(),
                ENV_PLACEHOLDER.into(),
                "-m".into(),
                memory.to_string(),
            ]);
            if !test_args.is_empty() {
                args.extend(["-append".into(), test_args]);
            }
            // The rest of the test's QEMU parameters, as the suite passes them.
            let mut w = Vec::new();
            let mut skip_next = false;
            for word in crate::cfg::split_words(&entry.qemu_params) {
                if skip_next {
                    skip_next = false;
                    continue;
                }
                if word == "-m" || word == "-append" {
                    skip_next = true;
                    continue;
                }
                w.push(word);
            }
            args.extend(w);
            (binary.clone(), args)
        }
    };
    Ok(Invocation {
        program,
        args,
        env_file,
        timeout,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> Entry {
        let text = format!("[t]\nfile = dummy.flat\n{extra}");
        crate::cfg::parse(&text).unwrap().remove(0)
    }

    fn suite() -> tempdir::Dir {
        let d = tempdir::Dir::new();
        std::fs::write(d.path().join("dummy.flat"), b"x").unwrap();
        d
    }

    mod tempdir {
        /// A directory removed on drop.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "conformance-plan-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn wirt() -> Vmm {
        Vmm::Wirt {
            binary: "wirt".into(),
            engine: "sw".into(),
        }
    }

    #[test]
    fn wirt_gets_cpus_memory_arguments_and_cpu_features() {
        let d = suite();
        let e = entry("smp = 2\ntest_args = '-foo bar'\nqemu_params = -cpu qemu64,+x2apic,host-phys-bits -m 2g\ntimeout = 30\n");
        let inv = plan(&e, d.path(), &wirt()).unwrap();
        let a = inv.args.join(" ");
        assert!(a.contains("--cpus 2"), "{a}");
        assert!(a.contains("--memory 2048M"), "{a}");
        assert!(a.contains("--cmdline=-foo bar"), "{a}");
        assert!(a.contains("--cpu-features=+x2apic"), "{a}");
        assert!(a.contains("--test-device"), "{a}");
        assert!(a.contains(&format!("--initrd {ENV_PLACEHOLDER}")), "{a}");
        assert_eq!(inv.env_file, "NR_CPUS=2\nMEMSIZE=2048\nTEST_DEVICE=0\n");
        assert_eq!(inv.timeout, Duration::from_secs(30));
        assert_eq!(inv.notes, vec!["-cpu property host-phys-bits ignored"]);
    }

    #[test]
    fn kvm_only_and_32_bit_tests_are_not_run_on_the_software_engine() {
        let d = suite();
        for extra in ["accel = kvm\n", "arch = i386\n"] {
            assert!(plan(&entry(extra), d.path(), &wirt()).is_err(), "{extra}");
        }
        assert!(plan(
            &entry("qemu_params = -enable-kvm -cpu host\n"),
            d.path(),
            &wirt()
        )
        .is_ok());
        assert!(plan(&entry("arch = x86_64\n"), d.path(), &wirt()).is_ok());
    }

    #[test]
    fn a_missing_kernel_is_not_run() {
        let d = suite();
        let mut e = entry("");
        e.file = "absent.flat".into();
        assert!(plan(&e, d.path(), &wirt()).is_err());
    }

    #[test]
    fn qemu_gets_the_suite_devices_and_the_rest_of_its_parameters() {
        let d = suite();
        let e = entry("qemu_params = -cpu max -m 512\n");
        let q = Vmm::Qemu {
            binary: "qemu".into(),
            accel: "tcg".into(),
        };
        let inv = plan(&e, d.path(), &q).unwrap();
        let a = inv.args.join(" ");
        assert!(a.contains("isa-debug-exit,iobase=0xf4"), "{a}");
        assert!(a.contains("-m 512"), "{a}");
        assert!(a.ends_with("-cpu max"), "{a}");
    }
}
