//! Printing results as a markdown table and writing them as JSON.

use std::path::Path;

use serde::Serialize;

/// One row of the table.
#[derive(Debug, Serialize)]
pub struct RowResult {
    pub name: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    /// Median for wirt, the reference (QEMU or native), and wirt/reference.
    pub wirt: Option<f64>,
    pub reference: Option<f64>,
    pub reference_name: &'static str,
    pub ratio: Option<f64>,
    pub runs: usize,
    /// Why the row has no figures, or a note on how they were taken.
    pub note: String,
}

impl RowResult {
    pub fn skipped(name: &'static str, title: &'static str, why: impl Into<String>) -> Self {
        RowResult {
            name,
            title,
            unit: "",
            wirt: None,
            reference: None,
            reference_name: "",
            ratio: None,
            runs: 0,
            note: why.into(),
        }
    }

    pub fn summary(&self) -> String {
        match (self.wirt, self.reference) {
            (Some(w), Some(r)) => format!(
                "wirt {w:.2} {u}, {} {r:.2} {u}, ratio {:.2}",
                self.reference_name,
                w / r,
                u = self.unit
            ),
            (Some(w), None) => format!("wirt {w:.2} {} ({})", self.unit, self.note),
            _ => format!("not measured: {}", self.note),
        }
    }
}

/// What machine the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub kvm: String,
    pub date: String,
    /// /proc/loadavg's 1, 5 and 15-minute averages when the table was printed (the machine
    /// may be shared: read the figures in that light).
    pub load: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let kvm = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            "PVM (no VT-x/AMD-V)"
        } else if std::path::Path::new("/dev/kvm").exists() {
            "KVM"
        } else {
            "none"
        };
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: command_output("uname", &["-r"]),
            kvm: kvm.into(),
            date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into())
}

pub fn markdown(m: &Machine, rows: &[RowResult]) -> String {
    let mut s = format!(
        "{} ({} cores), Linux {}, KVM: {}, {}, load average {}\n\n",
        m.cpu, m.cores, m.kernel, m.kvm, m.date, m.load
    );
    s.push_str("| benchmark | unit | wirt | reference | wirt / reference | runs | notes |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let reference = match r.reference {
            Some(v) => format!("{v:.2} ({})", r.reference_name),
            None => "—".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.title,
            r.unit,
            fmt(r.wirt),
            reference,
            fmt(r.ratio),
            r.runs,
            r.note
        ));
    }
    s
}

#[derive(Serialize)]
struct Document<'a> {
    machine: &'a Machine,
    results: &'a [RowResult],
}

pub fn write_json(path: &Path, m: &Machine, rows: &[RowResult]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&Document {
            machine: m,
            results: rows,
        })?,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
