//! End-to-end against a real `wirt serve`: every path and method of the checked-in OpenAPI
//! document is called, and every answer's status and JSON body must be documented for it
//! (validated against the document's schemas); bad input gets 4xx with a JSON error and
//! the daemon keeps serving; the event stream and the console attach work.

mod daemon_support;

use std::collections::BTreeSet;

use api::client::{Client, ClientError};
use api::openapi::{check_response, check_value, document, documented_routes};
use daemon_support::{long_running_guest, temp_dir, Daemon};
use serde_json::{json, Value};

/// Calls the daemon and checks each answer against the document.
struct Checked {
    client: Client,
    doc: Value,
    covered: BTreeSet<(String, String)>,
}

impl Checked {
    /// A client of the daemon at `socket` that checks answers against the OpenAPI document.
    fn new(socket: &std::path::Path) -> Checked {
        Checked {
            client: Client::new(socket),
            doc: document(),
            covered: BTreeSet::new(),
        }
    }

    /// `template` is the documented path; `path` the concrete one.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let r = self.client.send(method, path, body).await.unwrap();
        if let Err(e) = check_response(&self.doc, method, template, r.status, &r.body) {
            panic!("{e}\nbody: {}", String::from_utf8_lossy(&r.body));
        }
        self.covered.insert((method.into(), template.into()));
        (r.status, r.json())
    }

    async fn expect(
        &mut self,
        method: &str,
        template: &str,
        name: &str,
        status: u16,
        code: Option<&str>,
    ) -> Value {
        let path = template.replace("{name}", name);
        let (s, v) = self.call(method, template, &path, None).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        if let Some(code) = code {
            assert_eq!(v["code"], code, "{method} {path}: {v}");
        }
        v
    }

    async fn create(&mut self, body: Vec<u8>, status: u16, code: Option<&str>) -> Value {
        let (s, v) = self.call("POST", "/v1/vms", "/v1/vms", Some(body)).await;
        assert_eq!(s, status, "{v}");
        if let Some(code) = code {
            assert_eq!(v["code"], code, "{v}");
            assert!(!v["message"].as_str().unwrap().is_empty());
        }
        v
    }
}

fn spec(name: &str, kernel: &std::path::Path) -> Value {
    json!({"name": name, "kernel": kernel, "engine": "sw", "memory": "64M"})
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

const VM_OPS: [&str; 5] = ["start", "pause", "resume", "shutdown", "kill"];

#[test]
fn every_documented_path_answers_as_documented_and_bad_input_is_refused() {
    let dir = temp_dir("openapi");
    let d = Daemon::start(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Checked::new(&d.socket);
        let spin = long_running_guest();

        let served = c.expect("GET", "/openapi.json", "", 200, None).await;
        assert_eq!(
            served,
            document(),
            "the served document is the checked-in one"
        );
        let v = c.expect("GET", "/v1/vms", "", 200, None).await;
        assert_eq!(v, json!({"vms": []}));

        // Bad input: each a 4xx with a JSON error.
        c.create(b"{\"name\": ".to_vec(), 400, Some("malformed_json"))
            .await;
        c.create(b"not json".to_vec(), 400, Some("malformed_json"))
            .await;
        c.create(Vec::new(), 400, Some("malformed_json")).await;
        c.create(vec![b' '; 100 * 1024], 413, Some("body_too_large"))
            .await;
        let mut wrong = spec("w", &spin);
        wrong["cpus"] = json!("two");
        c.create(bytes(&wrong), 422, Some("invalid_request")).await;
        c.create(bytes(&json!([1, 2])), 422, Some("invalid_request"))
            .await;
        let mut unknown = spec("w", &spin);
        unknown["colour"] = json!("blue");
        c.create(bytes(&unknown), 422, Some("invalid_request"))
            .await;
        c.create(bytes(&json!({"name": "w"})), 422, Some("invalid_request"))
            .await;
        let mut size = spec("w", &spin);
        size["memory"] = json!("12Q");
        c.create(bytes(&size), 422, Some("invalid_request")).await;
        size["memory"] = json!("1M");
        c.create(bytes(&size), 422, Some("invalid_config")).await;
        size["memory"] = json!(4097 * 4096 + 1);
        c.create(bytes(&size), 422, Some("invalid_config")).await;
        let mut cpus = spec("w", &spin);
        cpus["cpus"] = json!(0);
        c.create(bytes(&cpus), 422, Some("invalid_config")).await;
        let missing = spec("w", std::path::Path::new("/nonexistent/vmlinux"));
        let v = c.create(bytes(&missing), 422, Some("invalid_config")).await;
        assert!(v["message"].as_str().unwrap().contains("kernel"), "{v}");
        c.create(bytes(&spec("../evil", &spin)), 422, Some("invalid_config"))
            .await;
        // None of that created anything.
        let v = c.expect("GET", "/v1/vms", "", 200, None).await;
        assert_eq!(v, json!({"vms": []}));
        assert_eq!(
            std::fs::read_dir(d.state_dir.join("vms")).unwrap().count(),
            0
        );

        // Unknown VM: 404 on every per-VM path.
        c.expect("GET", "/v1/vms/{name}", "nope", 404, Some("vm_not_found"))
            .await;
        c.expect(
            "DELETE",
            "/v1/vms/{name}",
            "nope",
            404,
            Some("vm_not_found"),
        )
        .await;
        for op in VM_OPS {
            let t = format!("/v1/vms/{{name}}/{op}");
            c.expect("POST", &t, "nope", 404, Some("vm_not_found"))
                .await;
        }
        c.expect(
            "GET",
            "/v1/vms/{name}/console",
            "nope",
            404,
            Some("vm_not_found"),
        )
        .await;

        // The balloon of an unknown VM (its other answers: tests/daemon_balloon.rs).
        let (s, v) = c
            .call(
                "PUT",
                "/v1/vms/{name}/balloon",
                "/v1/vms/nope/balloon",
                Some(bytes(&json!({"target": "16M"}))),
            )
            .await;
        assert_eq!((s, v["code"].as_str()), (404, Some("vm_not_found")), "{v}");

        // A VM; a second of the same name is a conflict.
        let v = c.create(bytes(&spec("vm1", &spin)), 201, None).await;
        assert_eq!(v["state"], "created");
        c.create(bytes(&spec("vm1", &spin)), 409, Some("vm_exists"))
            .await;

        // Operations in the wrong state.
        for op in ["pause", "resume", "shutdown", "kill"] {
            let t = format!("/v1/vms/{{name}}/{op}");
            c.expect("POST", &t, "vm1", 409, Some("wrong_state")).await;
        }
        c.expect(
            "GET",
            "/v1/vms/{name}/console",
            "vm1",
            409,
            Some("wrong_state"),
        )
        .await;

        // The event stream, opened before the VM starts.
        let r = c.client.stream("/v1/events").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        check_response(&c.doc, "GET", "/v1/events", 200, b"").unwrap();
        c.covered.insert(("GET".into(), "/v1/events".into()));
        drop(r);
        let mut events = c.client.events().await.unwrap();

        let v = c
            .expect("POST", "/v1/vms/{name}/start", "vm1", 200, None)
            .await;
        assert_eq!(v["state"], "running", "{v}");
        c.expect(
            "POST",
            "/v1/vms/{name}/start",
            "vm1",
            409,
            Some("wrong_state"),
        )
        .await;
        let v = c.expect("GET", "/v1/vms/{name}", "vm1", 200, None).await;
        assert_eq!(v["engine"], "sw");
        c.expect("DELETE", "/v1/vms/{name}", "vm1", 409, Some("wrong_state"))
            .await;

        // The console: a plain GET is told to upgrade; an upgrade gets the byte stream;
        // a second client is refused while the first is attached.
        c.expect(
            "GET",
            "/v1/vms/{name}/console",
            "vm1",
            426,
            Some("upgrade_required"),
        )
        .await;
        let console = c.client.attach_console("vm1").await.unwrap();
        check_response(&c.doc, "GET", "/v1/vms/{name}/console", 101, b"").unwrap();
        match c.client.attach_console("vm1").await {
            Err(ClientError::Api {
                status: 409, code, ..
            }) => assert_eq!(code, "console_busy"),
            Err(e) => panic!("second attach: {e}"),
            Ok(_) => panic!("a second console client was let in"),
        }
        drop(console);
        // Detaching frees the console for the next client.
        let mut console = None;
        for _ in 0..100 {
            if let Ok(io) = c.client.attach_console("vm1").await {
                console = Some(io);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut console = console.expect("the console was not freed after a detach");

        let v = c
            .expect("POST", "/v1/vms/{name}/pause", "vm1", 200, None)
            .await;
        assert_eq!(v["state"], "paused");
        let v = c
            .expect("POST", "/v1/vms/{name}/resume", "vm1", 200, None)
            .await;
        assert_eq!(v["state"], "running");
        let v = c
            .expect("POST", "/v1/vms/{name}/shutdown", "vm1", 202, None)
            .await;
        assert_eq!(v["state"], "running", "the guest decides when it is done");
        let v = c
            .expect("POST", "/v1/vms/{name}/kill", "vm1", 200, None)
            .await;
        assert_eq!(v["state"], "stopped", "{v}");

        // The console stream ends with the VM.
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match console.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the console stream did not end with the VM");

        // The events seen: created is before the stream; then running, paused, running,
        // stopped — each a valid Event.
        let event_schema = json!({"$ref": "#/components/schemas/Event"});
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("stopped") {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
                .await
                .expect("no event")
                .unwrap()
                .expect("the event stream ended");
            check_value(
                &c.doc,
                &event_schema,
                &serde_json::to_value(&ev).unwrap(),
                "event",
            )
            .unwrap();
            assert_eq!(ev.vm, "vm1");
            seen.push(ev.state);
        }
        assert_eq!(seen, ["running", "paused", "running", "stopped"]);

        // A kernel the VMM cannot load: created fine, start fails with 422, VM failed.
        let junk = dir.join("junk-kernel");
        std::fs::write(&junk, b"this is not a kernel").unwrap();
        c.create(bytes(&spec("junk", &junk)), 201, None).await;
        let v = c
            .expect(
                "POST",
                "/v1/vms/{name}/start",
                "junk",
                422,
                Some("start_failed"),
            )
            .await;
        assert!(!v["message"].as_str().unwrap().is_empty());
        let v = c.expect("GET", "/v1/vms/{name}", "junk", 200, None).await;
        assert_eq!(v["state"], "failed", "{v}");
        assert!(v["reason"].is_string(), "{v}");

        // Not routes at all.
        let r = c.client.send("GET", "/v2/things", None).await.unwrap();
        assert_eq!(
            (r.status, r.json()["code"].clone()),
            (404, json!("no_route"))
        );
        let r = c.client.send("PUT", "/v1/vms", None).await.unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.json()["code"], "method_not_allowed");

        for name in ["vm1", "junk"] {
            c.expect("DELETE", "/v1/vms/{name}", name, 204, None).await;
            c.expect("GET", "/v1/vms/{name}", name, 404, None).await;
        }
        let v = c.expect("GET", "/v1/vms", "", 200, None).await;
        assert_eq!(v, json!({"vms": []}), "the daemon still serves");

        let all: BTreeSet<(String, String)> = documented_routes(&c.doc).into_iter().collect();
        let missed: Vec<_> = all.difference(&c.covered).collect();
        assert!(
            missed.is_empty(),
            "documented but not exercised: {missed:?}"
        );
    });
    d.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn devices_round_trip_and_bad_devices_are_refused_before_anything_is_stored() {
    let dir = temp_dir("devices");
    let d = Daemon::start(&dir);
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let spin = long_running_guest();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Checked::new(&d.socket);

        // Refused, with nothing stored: a disk that does not exist, 8 devices, a balloon
        // target that is not below memory, a target without a balloon, an unknown disk
        // format.
        let mut missing = spec("m", &spin);
        missing["disks"] = json!([{"path": "/nonexistent/disk.img"}]);
        let v = c.create(bytes(&missing), 422, Some("invalid_config")).await;
        assert!(v["message"].as_str().unwrap().contains("disk image"), "{v}");
        let mut eight = spec("m", &spin);
        eight["rng"] = json!(true);
        eight["nets"] = json!((0..7)
            .map(|i| json!({"tap": format!("t{i}")}))
            .collect::<Vec<_>>());
        let v = c.create(bytes(&eight), 422, Some("invalid_config")).await;
        assert!(v["message"].as_str().unwrap().contains("at most 7"), "{v}");
        let mut target = spec("m", &spin);
        target["balloon"] = json!({"deflate_on_oom": false, "free_page_reporting": false});
        target["balloon_target"] = json!("64M");
        c.create(bytes(&target), 422, Some("invalid_config")).await;
        let mut lone = spec("m", &spin);
        lone["balloon_target"] = json!("16M");
        c.create(bytes(&lone), 422, Some("invalid_config")).await;
        let mut format = spec("m", &spin);
        format["disks"] = json!([{"path": disk, "format": "vmdk"}]);
        c.create(bytes(&format), 422, Some("invalid_request")).await;
        let mut direct = spec("m", &spin);
        direct["disks"] = json!([{"path": disk, "format": "qcow2", "direct": true}]);
        c.create(bytes(&direct), 422, Some("invalid_config")).await;
        let v = c.expect("GET", "/v1/vms", "", 200, None).await;
        assert_eq!(v, json!({"vms": []}));
        assert_eq!(
            std::fs::read_dir(d.state_dir.join("vms")).unwrap().count(),
            0
        );

        // Accepted: the devices come back in `info`, in the documented shape.
        let mut good = spec("dev", &spin);
        good["disks"] = json!([{"path": disk, "readonly": true, "serial": "abc"}]);
        good["rng"] = json!(true);
        good["vsock"] = json!({"cid": 5, "socket": dir.join("v.sock")});
        good["balloon"] = json!({"deflate_on_oom": true, "free_page_reporting": false});
        good["balloon_target"] = json!("16M");
        c.create(bytes(&good), 201, None).await;
        let v = c.expect("GET", "/v1/vms/{name}", "dev", 200, None).await;
        let cfg = &v["config"];
        assert_eq!(
            cfg["disks"],
            json!([{"path": disk, "readonly": true, "serial": "abc", "format": "raw", "direct": false}])
        );
        assert_eq!(cfg["rng"], true);
        assert_eq!(cfg["nets"], json!([]));
        assert_eq!(cfg["vsock"]["cid"], 5);
        assert_eq!(cfg["balloon"]["deflate_on_oom"], true);
        assert_eq!(cfg["balloon_target"], 16 << 20);
    });

    // The CLI takes `wirt run`'s device flags.
    let disk_flag = format!("path={},readonly=on", disk.display());
    let mut args = vec!["create".to_string(), "cli".into()];
    args.extend(daemon_support::create_args(&spin));
    args.extend(["--disk", &disk_flag, "--rng", "--balloon", "target=16M"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    d.vm_ok(&argv);
    let v = d.vm_ok(&["info", "cli"]);
    assert_eq!(v["config"]["disks"][0]["path"], json!(disk));
    assert_eq!(v["config"]["disks"][0]["readonly"], true);
    assert_eq!(v["config"]["rng"], true);
    assert_eq!(
        v["config"]["balloon"],
        json!({"deflate_on_oom": false, "free_page_reporting": false})
    );
    assert_eq!(v["config"]["balloon_target"], 16 << 20);
    let mut bad = argv.clone();
    bad[1] = "cli2";
    let bad_disk = "path=/nonexistent/disk.img";
    let i = bad.iter().position(|a| *a == disk_flag).unwrap();
    bad[i] = bad_disk;
    let (status, _) = d.vm(&bad);
    assert_eq!(status, 3, "a missing disk is a rejected request");
    let (status, _) = d.vm(&["info", "cli2"]);
    assert_eq!(status, 4, "nothing was stored");
    d.stop();
}
