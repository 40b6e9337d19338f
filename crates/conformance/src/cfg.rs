//! The suite's `unittests.cfg`: one `[name]` section per test, `key = value` lines below
//! it, `#` comments. Values may be quoted with `'` or `"`; the quotes are not part of the
//! value (the suite's own runner hands them to a shell).

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CfgError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
}

/// One test entry as the configuration states it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The test kernel, relative to the configuration's directory (`apic.flat`).
    pub file: String,
    /// vCPUs (`smp`), 1 when absent.
    pub smp: u32,
    /// The test's own arguments (`test_args`), given to it as its command line.
    pub test_args: String,
    /// What QEMU is told besides (`qemu_params`, older suites: `extra_params`).
    pub qemu_params: String,
    /// `i386` or `x86_64`; absent means both.
    pub arch: Option<String>,
    /// `accel = kvm`: the test needs a hardware-assisted accelerator.
    pub accel: Option<String>,
    /// Time limit in seconds (the suite's default is 90).
    pub timeout: Option<u64>,
    /// `path=value` pairs that must hold on the host (`check`).
    pub check: Vec<String>,
    pub groups: Vec<String>,
}

/// Removes one layer of matching quotes.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Parses a time limit such as `90`, `90s`, `2m`.
fn parse_timeout(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Some(m) = v.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| m * 60);
    }
    v.strip_suffix('s').unwrap_or(v).parse().ok()
}

/// Parses the text of a configuration file.
pub fn parse(text: &str) -> Result<Vec<Entry>, CfgError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push(Entry {
                name: name.trim().to_string(),
                smp: 1,
                ..Default::default()
            });
            continue;
        }
        let syntax = |what: &str| CfgError::Syntax {
            line: i + 1,
            what: what.to_string(),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax("expected `key = value`"))?;
        let e = out
            .last_mut()
            .ok_or_else(|| syntax("key before the first [section]"))?;
        let value = unquote(value);
        match key.trim() {
            "file" => e.file = value.to_string(),
            "smp" => e.smp = value.parse().map_err(|_| syntax("smp is not a number"))?,
            "test_args" => e.test_args = value.to_string(),
            "qemu_params" | "extra_params" => e.qemu_params = value.to_string(),
            "arch" => e.arch = Some(value.to_string()),
            "accel" => e.accel = Some(value.to_string()),
            "timeout" => e.timeout = parse_timeout(value),
            "check" => e.check = value.split_whitespace().map(str::to_string).collect(),
            "groups" => e.groups = value.split_whitespace().map(str::to_string).collect(),
            // Keys this runner has no use for (e.g. `disabled_if`) are kept out of the
            // model rather than rejected: the suite adds keys over time.
            _ => {}
        }
    }
    Ok(out)
}

/// Reads and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Vec<Entry>, CfgError> {
    let text = std::fs::read_to_string(path).map_err(|source| CfgError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// What a `qemu_params` string asks of the machine, in terms a VMM other than QEMU can
/// act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QemuParams {
    /// `-m N[MGg]` in MiB.
    pub memory_mib: Option<u64>,
    /// `-cpu MODEL,+feat,-feat,key=value`: the model and the feature edits.
    pub cpu_model: Option<String>,
    pub cpu_features: Vec<String>,
    /// `-device NAME[,...]` names.
    pub devices: Vec<String>,
    /// `-machine ...` options.
    pub machine: Vec<String>,
    /// `-append ...`: more test arguments (older suites).
    pub append: Option<String>,
    /// Anything else (e.g. `-enable-kvm`), kept to explain a skip.
    pub other: Vec<String>,
}

/// Splits a shell-like word list, honouring single and double quotes.
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses a memory size in QEMU's notation (MiB by default).
fn mib(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mul) = match v.chars().last()? {
        'g' | 'G' => (&v[..v.len() - 1], 1024),
        'm' | 'M' => (&v[..v.len() - 1], 1),
        _ => (v, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mul)
}

impl QemuParams {
    pub fn parse(s: &str) -> QemuParams {
        let w = split_words(s);
        let mut p = QemuParams::default();
        let mut i = 0;
        while i < w.len() {
            let arg = w.get(i + 1).cloned();
            let mut took = true;
            match w[i].as_str() {
                "-m" => p.memory_mib = arg.as_deref().and_then(mib),
                "-cpu" => {
                    let a = arg.unwrap_or_default();
                    let mut parts = a.split(',');
                    p.cpu_model = parts.next().map(str::to_string);
                    p.cpu_features = parts.map(str::to_string).collect();
                }
                "-device" => {
                    let a = arg.unwrap_or_default();
                    p.devices
                        .push(a.split(',').next().unwrap_or_default().to_string());
                }
                "-machine" | "-M" => p.machine.push(arg.unwrap_or_default()),
                "-append" => p.append = arg,
                other => {
                    p.other.push(other.to_string());
                    took = false;
                }
            }
            i += if took { 2 } else { 1 };
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
[x2apic]
file = apic.flat
smp = 2
qemu_params = -cpu qemu64,+x2apic,+tsc-deadline
arch = x86_64
timeout = 30
groups = apic

[vmexit_cpuid]
file = vmexit.flat
test_args = 'cpuid'
groups = vmexit

[sieve]
file = sieve.flat
timeout = 2m
test_args = \"10000000 x\"
";

    #[test]
    fn sections_keys_and_quotes() {
        let e = parse(SAMPLE).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "x2apic");
        assert_eq!(e[0].file, "apic.flat");
        assert_eq!(e[0].smp, 2);
        assert_eq!(e[0].timeout, Some(30));
        assert_eq!(e[0].arch.as_deref(), Some("x86_64"));
        assert_eq!(e[0].groups, vec!["apic"]);
        assert_eq!(e[1].smp, 1, "smp defaults to 1");
        assert_eq!(e[1].test_args, "cpuid");
        assert_eq!(e[2].timeout, Some(120));
        assert_eq!(e[2].test_args, "10000000 x");
    }

    #[test]
    fn a_key_outside_a_section_is_an_error() {
        assert!(matches!(
            parse("file = a.flat\n"),
            Err(CfgError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn qemu_params_are_split_into_what_a_vmm_can_use() {
        let p = QemuParams::parse("-cpu max,+vmx,-pku -m 2048 -device pc-testdev -enable-kvm");
        assert_eq!(p.cpu_model.as_deref(), Some("max"));
        assert_eq!(p.cpu_features, vec!["+vmx", "-pku"]);
        assert_eq!(p.memory_mib, Some(2048));
        assert_eq!(p.devices, vec!["pc-testdev"]);
        assert_eq!(p.other, vec!["-enable-kvm"]);
        assert_eq!(QemuParams::parse("-m 4g").memory_mib, Some(4096));
        assert_eq!(
            QemuParams::parse("-append 'a b' -machine pit=off"),
            QemuParams {
                append: Some("a b".into()),
                machine: vec!["pit=off".into()],
                ..Default::default()
            }
        );
    }
}
