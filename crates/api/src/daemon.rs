//! The daemon's table of VMs and the operations on them. Every operation checks the state
//! machine ([`crate::lifecycle`]) first and validates before it allocates anything, so a
//! request that fails changes nothing. Operations on one VM are serialized by a per-VM
//! lock; the table lock itself is never held across an await.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use vmm::config::{SerialConfig, VmConfig};

use crate::error::ApiError;
use crate::lifecycle::{check, Op, VmState};
use crate::model::{valid_name, BalloonTarget, Event, Stats, VmInfo, VmSpec};
use crate::protocol::{ChildMsg, Request};
use crate::store::{write_atomic, LastRun, Store, StoreError};
use crate::supervisor::{Exit, Launch, SupervisorError, Vmm};

/// The balloon's unit: targets are whole 4 KiB pages.
const BALLOON_PAGE: u64 = 4096;

/// How long `kill` waits for a VMM to end before it kills the process.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The VM table, shared by all request handlers (cheap to clone).
#[derive(Clone)]
pub struct Daemon {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    program: PathBuf,
    vms: Mutex<BTreeMap<String, Entry>>,
    events: broadcast::Sender<Event>,
    /// The daemon is stopping: VMMs that die now were killed by it.
    stopping: AtomicBool,
}

struct Entry {
    spec: VmSpec,
    state: VmState,
    reason: Option<String>,
    exit_status: Option<i32>,
    engine: Option<String>,
    started: Option<Instant>,
    /// Final counters of the last run.
    stats: Option<Stats>,
    vmm: Option<Arc<Vmm>>,
    /// Which start this is; a VMM's exit only applies to its own run.
    run: u64,
    ended_run: u64,
    op: Arc<tokio::sync::Mutex<()>>,
    console_busy: Arc<AtomicBool>,
}

impl Entry {
    fn new(spec: VmSpec) -> Entry {
        Entry {
            spec,
            state: VmState::Created,
            reason: None,
            exit_status: None,
            engine: None,
            started: None,
            stats: None,
            vmm: None,
            run: 0,
            ended_run: 0,
            op: Arc::new(tokio::sync::Mutex::new(())),
            console_busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The entry of a stored definition, with how its last run ended if that was recorded.
    fn restored(spec: VmSpec, last: Option<LastRun>) -> Entry {
        let mut e = Entry::new(spec);
        if let Some(l) = last {
            e.state = l.state;
            e.reason = l.reason;
            e.exit_status = l.exit_status;
            e.engine = l.engine;
            e.stats = l.stats;
        }
        e
    }

    /// How this (ended) run ended, for the store.
    fn last_run(&self) -> LastRun {
        LastRun {
            state: self.state,
            reason: self.reason.clone(),
            exit_status: self.exit_status,
            engine: self.engine.clone(),
            stats: self.stats.clone(),
        }
    }

    fn info(&self) -> VmInfo {
        VmInfo {
            name: self.spec.name.clone(),
            state: self.state,
            reason: self.reason.clone(),
            exit_status: self.exit_status,
            config: self.spec.clone(),
            engine: self.engine.clone(),
            vcpus: self.spec.cpus,
            memory_bytes: self.spec.memory.0,
            uptime_ms: self
                .started
                .filter(|_| self.state.is_active())
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
            stats: self.stats.clone(),
            vmm_pid: self.vmm.as_ref().and_then(|v| v.pid()),
            balloon: None,
        }
    }
}

/// Holds a VM's console for one client; frees it when dropped.
pub struct ConsoleLease {
    busy: Arc<AtomicBool>,
    pub socket: PathBuf,
}

impl Drop for ConsoleLease {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The VMM config for `spec`: the spec's fields, the console on a socket in `run_dir`;
/// settings a spec cannot express yet keep `VmConfig::new`'s defaults.
pub fn vm_config(spec: &VmSpec, run_dir: &Path) -> VmConfig {
    VmConfig {
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        cmdline: spec.cmdline.clone(),
        cpus: spec.cpus,
        memory: spec.memory,
        engine: spec.engine,
        serial: SerialConfig::Socket(run_dir.join("console.sock")),
        disks: spec.disks.clone(),
        nets: spec.nets.clone(),
        vsock: spec.vsock.clone(),
        rng: spec.rng,
        balloon: spec.balloon,
        balloon_target: spec.balloon_target,
        virtio_console: spec.virtio_console.clone(),
        virtio_transport: spec.virtio_transport,
        cpu_features: spec.cpu_features.clone(),
        test_device: false,
    }
}

impl Daemon {
    /// Opens the state directory and loads the stored definitions: `created`, or `stopped`
    /// / `failed` with the reason and counters of their last run.
    /// `program` is the `wirt` binary that runs `wirt vmm`.
    pub fn open(state_dir: &Path, program: PathBuf) -> Result<Daemon, StoreError> {
        let store = Store::open(state_dir)?;
        let (specs, problems) = store.load_all()?;
        for p in problems {
            tracing::warn!("skipping a VM definition: {p}");
            eprintln!("wirt: warning: skipping a VM definition: {p}");
        }
        let vms = specs
            .into_iter()
            .map(|s| {
                let last = store.load_last_run(&s.name);
                (s.name.clone(), Entry::restored(s, last))
            })
            .collect();
        let (events, _) = broadcast::channel(256);
        Ok(Daemon {
            shared: Arc::new(Shared {
                store,
                program,
                vms: Mutex::new(vms),
                events,
                stopping: AtomicBool::new(false),
            }),
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.shared.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, vm: &str, state: &str, reason: Option<String>) {
        emit(&self.shared, vm, state, reason);
    }

    /// A receiver of all state changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Validates `spec` and stores it as a new VM in state `created`.
    pub fn create(&self, spec: VmSpec) -> Result<VmInfo, ApiError> {
        if !valid_name(&spec.name) {
            return Err(ApiError::InvalidConfig(format!(
                "bad VM name {:?}: use letters, digits, '_', '.', '-' (starting with a letter or \
                 digit), at most 64 characters",
                spec.name
            )));
        }
        vm_config(&spec, Path::new("/"))
            .validate()
            .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
        let info = {
            let mut vms = self.table();
            if vms.contains_key(&spec.name) {
                return Err(ApiError::Exists(spec.name));
            }
            // Persist while holding the table lock: a concurrent create of the same name
            // must not slip in between the check and the write.
            self.shared
                .store
                .save(&spec)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let entry = Entry::new(spec);
            let info = entry.info();
            vms.insert(info.name.clone(), entry);
            info
        };
        self.emit(&info.name, VmState::Created.as_str(), None);
        Ok(info)
    }

    fn entry_parts(&self, name: &str) -> Result<(Arc<tokio::sync::Mutex<()>>, VmState), ApiError> {
        let vms = self.table();
        let e = vms
            .get(name)
            .ok_or_else(|| ApiError::NotFound(name.into()))?;
        Ok((e.op.clone(), e.state))
    }

    /// Locks VM `name` for an operation and checks that `op` is valid in its state.
    async fn begin(
        &self,
        name: &str,
        op: Op,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
        let (lock, _) = self.entry_parts(name)?;
        let guard = lock.lock_owned().await;
        let (_, state) = self.entry_parts(name)?; // it may have changed or gone meanwhile
        check(name, state, op)?;
        Ok(guard)
    }

    /// Info on one VM, with live counters from its VMM when it runs.
    pub async fn info(&self, name: &str) -> Result<VmInfo, ApiError> {
        let (mut info, vmm) = {
            let vms = self.table();
            let e = vms
                .get(name)
                .ok_or_else(|| ApiError::NotFound(name.into()))?;
            (e.info(), e.vmm.clone())
        };
        if let Some(vmm) = vmm.filter(|_| info.state.is_active()) {
            if let Ok(ChildMsg::Info { stats, balloon }) = vmm.request(Request::Info).await {
                info.stats = Some(stats);
                info.balloon = balloon;
            }
        }
        Ok(info)
    }

    /// All VMs, by name.
    pub async fn list(&self) -> Vec<VmInfo> {
        let names: Vec<String> = self.table().keys().cloned().collect();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Ok(i) = self.info(&n).await {
                out.push(i);
            }
        }
        out
    }

    /// Starts a VMM process for VM `name` and waits until it has booted the VM.
    pub async fn start(&self, name: &str) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Start).await?;
        let spec = self.table().get(name).map(|e| e.spec.clone());
        let spec = spec.ok_or_else(|| ApiError::NotFound(name.into()))?;
        let internal = |e: StoreError| ApiError::Internal(e.to_string());
        let run_dir = self.shared.store.run_dir(name).map_err(internal)?;
        let config = vm_config(&spec, &run_dir);
        let config_path = run_dir.join("config.json");
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| ApiError::Internal(e.to_string()))?;
        write_atomic(&config_path, &json).map_err(internal)?;
        // A run that ends without a record (the daemon itself crashed) must not show an
        // older run's ending after a restart.
        self.shared.store.clear_last_run(name);
        let run = {
            let mut vms = self.table();
            let e = vms
                .get_mut(name)
                .ok_or_else(|| ApiError::NotFound(name.into()))?;
            e.run += 1;
            e.run
        };
        let launch = Launch {
            program: self.shared.program.clone(),
            config: config_path,
            log: run_dir.join("vmm.log"),
        };
        let shared = self.shared.clone();
        let exit_name = name.to_string();
        let on_exit = Box::new(move |exit: Exit| vmm_exited(&shared, &exit_name, run, exit));
        match Vmm::spawn(&launch, on_exit).await {
            Ok((vmm, engine)) => {
                let info = {
                    let mut vms = self.table();
                    let e = vms
                        .get_mut(name)
                        .ok_or_else(|| ApiError::NotFound(name.into()))?;
                    e.engine = Some(engine);
                    if e.ended_run != run {
                        e.state = VmState::Running;
                        e.reason = None;
                        e.exit_status = None;
                        e.stats = None;
                        e.started = Some(Instant::now());
                        e.vmm = Some(vmm);
                    }
                    e.info()
                };
                if info.state == VmState::Running {
                    self.emit(name, "running", None);
                }
                Ok(info)
            }
            Err(SupervisorError::StartFailed(message)) => {
                self.set_failed(name, run, message.clone());
                Err(ApiError::StartFailed {
                    name: name.into(),
                    message,
                })
            }
            Err(e @ SupervisorError::Timeout(_)) => {
                self.set_failed(name, run, e.to_string());
                Err(ApiError::StartFailed {
                    name: name.into(),
                    message: e.to_string(),
                })
            }
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    }

    fn set_failed(&self, name: &str, run: u64, reason: String) {
        let last = {
            let mut vms = self.table();
            let Some(e) = vms.get_mut(name) else { return };
            e.state = VmState::Failed;
            e.reason = Some(reason.clone());
            e.exit_status = None;
            e.ended_run = run;
            e.vmm = None;
            e.last_run()
        };
        record_last_run(&self.shared, name, &last);
        self.emit(name, "failed", Some(reason));
    }

    fn vmm_of(&self, name: &str) -> Result<Arc<Vmm>, ApiError> {
        self.table()
            .get(name)
            .and_then(|e| e.vmm.clone())
            .ok_or_else(|| ApiError::WrongState(format!("VM {name:?} is not running")))
    }

    /// Sends a request that the VMM answers with `Ok`.
    async fn simple(&self, name: &str, req: Request) -> Result<(), ApiError> {
        let vmm = self.vmm_of(name)?;
        match vmm.request(req).await {
            Ok(ChildMsg::Ok) => Ok(()),
            Ok(ChildMsg::Error { message }) => Err(ApiError::VmmUnavailable {
                name: name.into(),
                message,
            }),
            Ok(other) => Err(ApiError::VmmUnavailable {
                name: name.into(),
                message: format!("unexpected answer {other:?}"),
            }),
            Err(SupervisorError::Gone) => Err(ApiError::WrongState(format!(
                "VM {name:?} stopped meanwhile"
            ))),
            Err(e) => Err(ApiError::VmmUnavailable {
                name: name.into(),
                message: e.to_string(),
            }),
        }
    }

    fn set_state(&self, name: &str, from: VmState, to: VmState) -> Result<VmInfo, ApiError> {
        let (info, changed) = {
            let mut vms = self.table();
            let e = vms
                .get_mut(name)
                .ok_or_else(|| ApiError::NotFound(name.into()))?;
            let changed = e.state == from;
            if changed {
                e.state = to;
            }
            (e.info(), changed)
        };
        if changed {
            self.emit(name, to.as_str(), None);
        }
        Ok(info)
    }

    pub async fn pause(&self, name: &str) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Pause).await?;
        self.simple(name, Request::Pause).await?;
        self.set_state(name, VmState::Running, VmState::Paused)
    }

    pub async fn resume(&self, name: &str) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Resume).await?;
        self.simple(name, Request::Resume).await?;
        self.set_state(name, VmState::Paused, VmState::Running)
    }

    /// Asks the guest to power off; returns at once (the VM stops when the guest is done).
    pub async fn shutdown(&self, name: &str) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Shutdown).await?;
        self.simple(name, Request::Shutdown).await?;
        // A paused VM is resumed so that its guest can react.
        self.set_state(name, VmState::Paused, VmState::Running)
    }

    /// Asks the guest of a running (or paused) VM to hold `target` of its memory in the
    /// balloon; returns at once (the guest inflates or deflates in its own time).
    pub async fn set_balloon(&self, name: &str, target: BalloonTarget) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Balloon).await?;
        let spec = self.table().get(name).map(|e| e.spec.clone());
        let spec = spec.ok_or_else(|| ApiError::NotFound(name.into()))?;
        if spec.balloon.is_none() {
            return Err(ApiError::WrongState(format!(
                "VM {name:?} has no balloon (define it with one: `--balloon`, or \"balloon\" in \
                 its definition)"
            )));
        }
        let bytes = target.target.0;
        if !bytes.is_multiple_of(BALLOON_PAGE) {
            return Err(ApiError::InvalidConfig(format!(
                "balloon target {bytes} is not a multiple of 4 KiB"
            )));
        }
        if bytes >= spec.memory.0 {
            return Err(ApiError::InvalidConfig(format!(
                "balloon target {} must be less than the VM's memory {}",
                target.target, spec.memory
            )));
        }
        self.simple(
            name,
            Request::Balloon {
                target_bytes: bytes,
            },
        )
        .await?;
        self.info(name).await
    }

    /// Ends the VM now and waits until its VMM has exited.
    pub async fn kill(&self, name: &str) -> Result<VmInfo, ApiError> {
        let _guard = self.begin(name, Op::Kill).await?;
        let vmm = self.vmm_of(name)?;
        if vmm.request(Request::Kill).await.is_err() {
            vmm.force_kill();
        }
        if !self.wait_inactive(name, KILL_GRACE).await {
            vmm.force_kill();
            self.wait_inactive(name, KILL_GRACE).await;
        }
        let info = self.table().get(name).map(Entry::info);
        info.ok_or_else(|| ApiError::NotFound(name.into()))
    }

    async fn wait_inactive(&self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let active = self.table().get(name).is_some_and(|e| e.vmm.is_some());
            if !active {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes a VM that has no VMM running, with its definition and run files.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _guard = self.begin(name, Op::Delete).await?;
        self.shared
            .store
            .remove(name)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.table().remove(name);
        self.emit(name, "deleted", None);
        Ok(())
    }

    /// Reserves the console of a running VM for one client.
    pub fn console(&self, name: &str) -> Result<ConsoleLease, ApiError> {
        let vms = self.table();
        let e = vms
            .get(name)
            .ok_or_else(|| ApiError::NotFound(name.into()))?;
        check(name, e.state, Op::Console)?;
        if e.console_busy.swap(true, Ordering::SeqCst) {
            return Err(ApiError::ConsoleBusy(name.into()));
        }
        Ok(ConsoleLease {
            busy: e.console_busy.clone(),
            socket: self.shared.store_run_dir(name).join("console.sock"),
        })
    }

    /// Kills every VMM and waits (bounded) until all are reaped. Used when the daemon stops.
    pub async fn stop_all(&self) {
        let vmms: Vec<(String, Arc<Vmm>)> = self
            .table()
            .iter()
            .filter_map(|(n, e)| e.vmm.clone().map(|v| (n.clone(), v)))
            .collect();
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (_, v) in &vmms {
            v.force_kill();
        }
        for (n, _) in &vmms {
            self.wait_inactive(n, KILL_GRACE).await;
        }
    }
}

impl Shared {
    fn store_run_dir(&self, name: &str) -> PathBuf {
        self.store
            .run_dir(name)
            .unwrap_or_else(|_| PathBuf::from("/nonexistent"))
    }
}

fn emit(shared: &Shared, vm: &str, state: &str, reason: Option<String>) {
    // No subscribers is fine.
    let _ = shared.events.send(Event {
        vm: vm.into(),
        state: state.into(),
        reason,
        time_ms: now_ms(),
    });
}

/// Called by the supervisor when run `run` of VM `name` has ended and been reaped.
fn vmm_exited(shared: &Shared, name: &str, run: u64, exit: Exit) {
    let (state, reason, last) = {
        let mut vms = shared.vms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = vms.get_mut(name) else { return };
        if e.run != run {
            return;
        }
        e.ended_run = run;
        e.vmm = None;
        e.started = None;
        match exit.outcome {
            Some(o) => {
                e.state = if o.failed {
                    VmState::Failed
                } else {
                    VmState::Stopped
                };
                e.reason = Some(o.reason);
                e.exit_status = Some(o.exit_status);
                e.stats = Some(o.stats);
            }
            None if shared.stopping.load(Ordering::SeqCst) => {
                e.state = VmState::Stopped;
                e.reason = Some("killed when the daemon stopped".into());
                e.exit_status = None;
            }
            None => {
                let mut reason = format!("the VMM process died ({})", exit.process);
                if let Some(l) = exit.last_log {
                    reason.push_str(": ");
                    reason.push_str(&l);
                }
                e.state = VmState::Failed;
                e.reason = Some(reason);
                e.exit_status = None;
            }
        }
        (e.state, e.reason.clone(), e.last_run())
    };
    record_last_run(shared, name, &last);
    emit(shared, name, state.as_str(), reason);
}

/// Stores how a run ended; a failure to write costs only the record, so it is logged.
fn record_last_run(shared: &Shared, name: &str, last: &LastRun) {
    if let Err(e) = shared.store.save_last_run(name, last) {
        tracing::warn!("cannot record how {name}'s run ended: {e}");
        eprintln!("wirt: warning: cannot record how {name}'s run ended: {e}");
    }
}
