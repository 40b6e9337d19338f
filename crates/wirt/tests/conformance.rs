//! The x86 conformance suite (kvm-unit-tests) on the software engine: every x86_64 entry
//! of `unittests.cfg` runs through `wirt run --engine sw` and the outcomes are compared
//! with `crates/conformance/expected/wirt-sw.txt`. A test listed PASS that no longer
//! passes fails this test; the full table is printed either way.
//!
//! The suite is test data outside the repository (`../shared/kvm-unit-tests`, or
//! `$WIRT_KVM_UNIT_TESTS`); where it is absent the test says so and does nothing.

use std::path::PathBuf;

use conformance::{cfg, expect, plan::Vmm};

#[test]
fn kvm_unit_tests_on_the_software_engine_keep_passing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let suite = conformance::default_suite_dir(&root);
    let cfg_path = suite.join("x86/unittests.cfg");
    if !cfg_path.exists() {
        eprintln!(
            "skipped kvm_unit_tests_on_the_software_engine_keep_passing: {} not found \
             (set WIRT_KVM_UNIT_TESTS to a kvm-unit-tests x86_64 build)",
            cfg_path.display()
        );
        return;
    }
    let entries = cfg::load(&cfg_path).expect("the suite's configuration parses");
    let vmm = Vmm::Wirt {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_wirt")),
        engine: "sw".into(),
    };
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-wirt-sw");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results =
        conformance::run_suite(&entries, &suite.join("x86"), &vmm, &logs, jobs, &[], &|r| {
            eprintln!("{}", conformance::line(r))
        });
    let totals: Vec<String> = conformance::totals(&results)
        .iter()
        .map(|(w, n)| format!("{n} {w}"))
        .collect();
    eprintln!("kvm-unit-tests on wirt sw: {}", totals.join(", "));

    let expected_path = root.join("crates/conformance/expected/wirt-sw.txt");
    let text = std::fs::read_to_string(&expected_path).expect("the expected results exist");
    let exp = expect::parse(&text).expect("the expected results parse");
    let c = expect::compare(&exp, &results);
    for name in &c.improvements {
        eprintln!(
            "IMPROVED {name}: passes now; record it in {}",
            expected_path.display()
        );
    }
    assert!(
        c.ok(),
        "conformance regressions (expected PASS): {:?}; expected but not run: {:?}; logs in {}",
        c.regressions,
        c.missing,
        logs.display()
    );
    assert_eq!(results.len(), entries.len(), "every entry has an outcome");
}
