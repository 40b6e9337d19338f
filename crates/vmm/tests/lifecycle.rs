//! A running VM can be paused (no guest progress), resumed (progress again) and stopped,
//! on the software engine (which counts instructions, so progress is measurable).

use std::time::{Duration, Instant};

use vmm::config::{EngineChoice, MemorySize, SerialConfig, VmConfig};
use vmm::outcome::StopReason;
use vmm::{RunOptions, RunningVm, VmState};

fn spin_vm() -> RunningVm {
    let mut cfg = VmConfig::new(test_guests::path("spin64"));
    cfg.engine = EngineChoice::Sw;
    cfg.memory = MemorySize(64 << 20);
    cfg.serial = SerialConfig::Null;
    RunningVm::start(&cfg, &RunOptions::default()).expect("start")
}

fn wait_for_progress(vm: &RunningVm, from: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = vm.stats().instructions;
        if n > from {
            return n;
        }
        assert!(Instant::now() < deadline, "no guest progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pause_freezes_the_guest_and_resume_continues_it() {
    let vm = spin_vm();
    wait_for_progress(&vm, 0);
    vm.pause().expect("pause");
    assert_eq!(vm.state(), VmState::Paused);
    let frozen = vm.stats().instructions;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        vm.stats().instructions,
        frozen,
        "the guest ran while paused"
    );
    vm.resume();
    assert_eq!(vm.state(), VmState::Running);
    wait_for_progress(&vm, frozen);
    vm.stop(StopReason::UserQuit);
    let report = vm.wait();
    assert_eq!(report.reason, StopReason::UserQuit);
    assert!(report.stats.instructions > frozen);
}

#[test]
fn a_paused_vm_can_be_stopped() {
    let vm = spin_vm();
    wait_for_progress(&vm, 0);
    vm.pause().expect("pause");
    vm.stop(StopReason::UserQuit);
    assert!(matches!(vm.state(), VmState::Stopped(StopReason::UserQuit)));
    assert!(vm.pause().is_err(), "a stopped VM cannot be paused");
    let report = vm.wait();
    assert_eq!(report.reason, StopReason::UserQuit);
}
