//! End-to-end on the software engine: the default guest (Debian kernel + busybox) boots to
//! its ready marker and runs user-space work with correct results, on 1 and 2 vCPUs.

mod common;

use std::time::Duration;

use common::{wirt_run_for, Run};
use image::{cmdline_with_script, BuildOptions, DEFAULT_CMDLINE};

/// Generous: the software engine is slower than hardware; a hang still ends the test.
const LIMIT: Duration = Duration::from_secs(900);

fn boot_with_script(script: &str, cpus: &str) -> Run {
    let img = image::build(&BuildOptions::default(), &mut |_| {})
        .expect("building the default guest image (needs apt access to Debian's packages)");
    let cmdline = cmdline_with_script(DEFAULT_CMDLINE, script).expect("script fits the cmdline");
    let initrd = img.initrd.to_string_lossy().into_owned();
    wirt_run_for(
        &img.kernel,
        &[
            "--engine",
            "sw",
            "--cpus",
            cpus,
            "--initrd",
            &initrd,
            "--cmdline",
            &cmdline,
            "--stats",
        ],
        LIMIT,
    )
}

/// sha256 of `n` zero bytes, computed on the host for comparison.
fn sha256_of_zeros(n: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vec![0u8; n]);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn boots_to_user_space_and_computes_correctly() {
    let script = "seq 1 1000 | awk '{s+=$1} END {print \"sum=\" s}'\n\
                  i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; echo loop=$i\n\
                  head -c 3000000 /dev/zero | sha256sum\n\
                  exit 7\n";
    let r = boot_with_script(script, "1");
    assert_eq!(r.status, 0, "the guest must power off cleanly: {r:?}");
    let console = &r.stdout;
    assert!(
        image::cmdline::ready_uptime(console).is_some(),
        "no ready marker: {r:?}"
    );
    assert_eq!(image::cmdline::exit_status(console), Some(7), "{r:?}");
    let out = image::cmdline::script_output(console).expect("script output");
    assert!(out.contains("sum=500500\n"), "{out}");
    assert!(out.contains("loop=300\n"), "{out}");
    assert!(out.contains(&sha256_of_zeros(3_000_000)), "{out}");
}

#[test]
fn two_vcpus_come_online_and_share_the_work() {
    let script = "echo cpus=$(grep -c ^processor /proc/cpuinfo)\n\
                  (seq 1 20000 | awk '{s+=$1} END {print \"a=\" s}' > /tmp/a) &\n\
                  (seq 1 30000 | awk '{s+=$1} END {print \"b=\" s}' > /tmp/b) &\n\
                  wait; cat /tmp/a /tmp/b\n";
    let r = boot_with_script(script, "2");
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("cpus=2\n"), "{out}");
    assert!(out.contains("a=200010000\n"), "{out}");
    assert!(out.contains("b=450015000\n"), "{out}");
}
