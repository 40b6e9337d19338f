//! End-to-end on the software engine: the default guest (Debian kernel + busybox) boots to
//! its ready marker and runs user-space work with correct results, on 1 and 2 vCPUs.

mod common;

use std::time::Duration;

use common::{wirt_with_input, Run};
use image::{cmdline_with_script, BuildOptions, DEFAULT_CMDLINE};

const LIMIT: Duration = common::GUEST_LIMIT;

fn boot_with_script(script: &str, cpus: &str) -> Run {
    boot_with_script_and(script, cpus, &[])
}

fn boot_with_script_and(script: &str, cpus: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--cpus", cpus, "--stats"];
    args.extend_from_slice(extra);
    common::boot_default_guest(script, &args)
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
    let r = boot_with_script_and(script, "1", &["--verbose"]);
    assert_eq!(r.status, 0, "the guest must power off cleanly: {r:?}");
    assert!(
        r.stderr.contains("guest ready after"),
        "no boot-timer write: {r:?}"
    );
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
                  grep 'initial apicid' /proc/cpuinfo | tr -d ' \\t' | sort -u\n\
                  (seq 1 20000 | awk '{s+=$1} END {print \"a=\" s}' > /tmp/a) &\n\
                  (seq 1 30000 | awk '{s+=$1} END {print \"b=\" s}' > /tmp/b) &\n\
                  wait; cat /tmp/a /tmp/b\n";
    let r = boot_with_script(script, "2");
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("cpus=2\n"), "{out}");
    // Each vCPU reports its own APIC ID through CPUID (leaf 1 EBX[31:24]).
    assert!(out.contains("initialapicid:0\ninitialapicid:1\n"), "{out}");
    assert!(out.contains("a=200010000\n"), "{out}");
    assert!(out.contains("b=450015000\n"), "{out}");
}

#[test]
fn virtio_blk_writes_reach_the_host_file_and_rng_gives_bytes() {
    let dir = std::env::temp_dir().join(format!("wirt-virtio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("raw.img");
    let fs = dir.join("fs.img");
    for p in [&raw, &fs] {
        std::fs::File::create(p).unwrap().set_len(32 << 20).unwrap();
    }
    // Disks are probed asynchronously: wait (bounded) until both block nodes exist.
    let script = "i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
                  set -e\n\
                  echo wirt-disk-marker | dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/dev/null\n\
                  mke2fs -q /dev/vdb\n\
                  mkdir -p /mnt; mount /dev/vdb /mnt\n\
                  echo file-content > /mnt/hello.txt; sync; umount /mnt\n\
                  mount /dev/vdb /mnt; echo read-back=$(cat /mnt/hello.txt)\n\
                  echo serial=$(cat /sys/block/vdb/serial)\n\
                  echo rng=$(head -c 16 /dev/hwrng | hexdump -v -e '/1 \"%02x\"')\n";
    let disk_a = format!("path={}", raw.display());
    // The file-system disk goes through O_DIRECT: its bytes must still reach the file.
    let disk_b = format!("path={},serial=wirt-test,direct=on", fs.display());
    let r = boot_with_script_and(
        script,
        "1",
        &["--disk", &disk_a, "--disk", &disk_b, "--rng"],
    );
    let raw_bytes = std::fs::read(&raw).unwrap();
    let fs_bytes = std::fs::read(&fs).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(image::cmdline::exit_status(&r.stdout), Some(0), "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("read-back=file-content\n"), "{out}");
    assert!(out.contains("serial=wirt-test\n"), "{out}");
    common::assert_rng_line(&out);
    assert_eq!(
        &raw_bytes[2048 * 512..2048 * 512 + 16],
        b"wirt-disk-marker",
        "flushed write on the host"
    );
    assert_eq!(
        &fs_bytes[1080..1082],
        &[0x53, 0xef],
        "ext2 superblock magic on the host"
    );
}

#[test]
fn a_script_piped_into_wirt_run_runs_in_the_default_guest_shell() {
    // Make sure the image exists first, so `wirt run` does not build it inside the test.
    image::build(&BuildOptions::default(), &mut |_| {}).expect("default guest image");
    let script = b"echo piped-$((6 * 7))\nexit 3\n";
    let r = wirt_with_input(&["run", "--engine", "sw"], script, LIMIT);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("piped-42"), "{r:?}");
    assert!(
        !r.stdout.contains("echo piped"),
        "input must not be echoed: {r:?}"
    );
    assert_eq!(image::cmdline::exit_status(&r.stdout), Some(3), "{r:?}");
}

#[test]
fn balloon_target_takes_memory_from_the_guest() {
    let mem_total = |extra: &[&str]| -> u64 {
        let mut args = vec!["--memory", "256M"];
        args.extend_from_slice(extra);
        // The balloon inflates after boot, in steps: report MemTotal once it has held
        // still for half a second.
        let script = "last=0; same=0\n\
                      while [ $same -lt 5 ]; do\n\
                        t=$(grep MemTotal /proc/meminfo)\n\
                        if [ \"$t\" = \"$last\" ]; then same=$((same+1)); else same=0; fi\n\
                        last=$t; sleep 0.1\n\
                      done\n\
                      echo $last\n";
        let r = boot_with_script_and(script, "1", &args);
        assert_eq!(r.status, 0, "{r:?}");
        let out = image::cmdline::script_output(&r.stdout).expect("script output");
        out.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no MemTotal in {out:?}"))
    };
    let without = mem_total(&[]);
    let with = mem_total(&["--balloon", "target=64M"]);
    let taken_kib = without - with;
    assert!(
        (60 * 1024..=68 * 1024).contains(&taken_kib),
        "the balloon took {taken_kib} KiB, expected about 64 MiB"
    );
}

/// Runs `ip` with `args`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the test's network namespace however the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn the_guest_pings_the_host_over_a_tap_in_a_network_namespace() {
    let can_net = std::path::Path::new("/dev/net/tun").exists()
        && std::process::Command::new("ip").arg("-V").output().is_ok()
        && std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
    if !can_net {
        eprintln!("skipped: needs root, /dev/net/tun and iproute2 to make a TAP in a namespace");
        return;
    }
    let img = image::build(&BuildOptions::default(), &mut |_| {}).expect("default guest image");
    let ns = Netns(format!("wirt-test-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    let in_ns = |args: &[&str]| {
        let mut a = vec!["netns", "exec", &ns.0, "ip"];
        a.extend_from_slice(args);
        ip(&a);
    };
    in_ns(&["tuntap", "add", "dev", "wt0", "mode", "tap", "vnet_hdr"]);
    in_ns(&["addr", "add", "10.77.0.1/24", "dev", "wt0"]);
    in_ns(&["link", "set", "wt0", "up"]);
    let script = "ip link set eth0 up; ip addr add 10.77.0.2/24 dev eth0\n\
                  ping -c 2 -W 5 10.77.0.1 >/dev/null && echo ping-ok\n";
    let cmdline = cmdline_with_script(DEFAULT_CMDLINE, script).expect("cmdline");
    let initrd = img.initrd.to_string_lossy().into_owned();
    let kernel = img.kernel.to_string_lossy().into_owned();
    let wirt = env!("CARGO_BIN_EXE_wirt");
    let args = [
        "netns",
        "exec",
        &ns.0,
        wirt,
        "run",
        "--engine",
        "sw",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        &cmdline,
        "--net",
        "tap=wt0",
    ];
    // coreutils' timeout bounds the run: a hang fails the test instead of blocking CI.
    let limit = LIMIT.as_secs().to_string();
    let out = std::process::Command::new("timeout")
        .arg(&limit)
        .arg("ip")
        .args(args)
        .output()
        .expect("run wirt in the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let script_out = image::cmdline::script_output(&stdout).expect("script output");
    assert!(script_out.contains("ping-ok"), "{stdout}");
}

/// Flags Linux derives itself rather than reading from one CPUID bit (from the vendor,
/// family and other bits): allowed in `/proc/cpuinfo` though the model has no such bit.
const LINUX_DERIVED_FLAGS: &[&str] = &[
    "constant_tsc",  // invariant TSC
    "rep_good",      // family 15+ AMD
    "nopl",          // 64-bit CPUs
    "cpuid",         // the CPUID instruction exists
    "extd_apicid",   // AMD family 15+
    "3dnowprefetch", // AMD with long mode
    "vmmcall",       // AMD: hypercalls use VMMCALL
    "xtopology",     // leaf 0xB present
    "tsc_known_freq",
    "tsc_reliable",
    "arat",
    "invpcid_single", // PCID with INVPCID
];

#[test]
fn the_guest_sees_exactly_the_documented_cpu_model() {
    let r = boot_with_script("grep -m1 ^flags /proc/cpuinfo\n", "1");
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    let line = out
        .lines()
        .find(|l| l.starts_with("flags"))
        .expect("flags line");
    let flags: Vec<&str> = line
        .split(':')
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let model = hypervisor::sw::cpuid_model(&[]);
    let announced = arch::cpuid::announced(&model);
    for f in announced.iter().filter(|f| !f.linux.is_empty()) {
        assert!(
            flags.contains(&f.linux),
            "CPUID announces {} but the guest's flags lack {}: {line}",
            f.name,
            f.linux
        );
    }
    for flag in &flags {
        let known = announced.iter().any(|f| f.linux == *flag);
        assert!(
            known || LINUX_DERIVED_FLAGS.contains(flag),
            "the guest shows flag {flag}, which the CPU model (docs/cpuid.md) does not announce: {line}"
        );
    }
}
