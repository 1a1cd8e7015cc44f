//! The coordinator's dashboard against real processes: the JSON API and `/metrics` of a
//! coordinator with two volunteer processes (figures checked against the ledger command), the
//! token-guarded actions, and the page itself rendered by headless Chromium on a demo run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_tests::browser;
use canopy_tests::harness::{Program, binary, run_with_timeout};
use canopy_tests::http::{get, get_tls, metric, parse_metrics, post, request};
use canopy_tests::processes::{
    Coordinator, Volunteer, coordinator_cli, coordinator_json, free_port, node_peer_id, poll_until,
    signal, small_project,
};

const TOKEN: &str = "e2e-dashboard-token-0123456789";

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(250);

fn ledger_entries_of(ledger: &serde_json::Value, peer: &str) -> Vec<serde_json::Value> {
    ledger
        .as_array()
        .expect("ledger array")
        .iter()
        .filter(|e| e["peer"] == peer)
        .cloned()
        .collect()
}

/// A coordinator process with two volunteer processes: `/api/rounds` has the losses of a
/// closed round, `/api/peers` the volunteers with what they declared, `/api/contributors`
/// equals `ledger --totals --json` and the sums of `ledger --json`, `/metrics` parses and
/// counts exactly the accepted results of the ledger; the changing actions answer 401
/// without the token and work with it (pause stops leasing, a ban stops the node's work).
#[test]
fn dashboard_api_and_metrics_agree_with_the_ledger_and_actions_need_the_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let http_port = free_port();
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[("rounds", "12")],
        &format!("[dashboard]\nlisten = \"127.0.0.1:{http_port}\"\ntoken = \"{TOKEN}\"\n"),
    );
    let config_s = config.to_string_lossy().to_string();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let (d1, d2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    let (p1, p2) = (node_peer_id(&d1), node_peer_id(&d2));

    let mut coordinator = Coordinator::start(&config);
    assert_eq!(
        coordinator.dashboard.as_deref(),
        Some(format!("http://{http}/").as_str()),
        "the coordinator prints the dashboard's URL"
    );
    let _v1 = Volunteer::start(
        &d1,
        &coordinator.addr,
        &[
            "--name",
            "ada",
            "--organisation",
            "Inria",
            "--country",
            "FR",
        ],
    );
    let _v2 = Volunteer::start(
        &d2,
        &coordinator.addr,
        &["--name", "lin", "--org", "BigScience", "--country", "DE"],
    );

    // The page and the reads are open.
    let page = get(http, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(page.body.contains("id=\"loss-chart\""));
    assert_eq!(
        get(http, "/api/corpus").json(),
        serde_json::json!({"builds": []})
    );
    assert_eq!(get(http, "/nowhere").status, 404);

    // Three rounds: a new volunteer's credit is held until three of its updates were compared
    // with their rounds (probation), and the figures below check credit, not only entries.
    coordinator
        .wait_for(Duration::from_secs(300), |e| e["round"]["round"] == 2)
        .expect("round 2 closes");
    let rounds = get(http, "/api/rounds").json();
    let initial = rounds["initial_eval_loss"].as_f64().expect("initial loss");
    let first = &rounds["rounds"][0];
    assert!(first["closed_ms"].is_u64(), "{rounds}");
    let eval = first["eval_loss"].as_f64().expect("held-out loss");
    let train = first["train_loss"].as_f64().expect("training loss");
    assert!(
        eval.is_finite() && train.is_finite() && initial.is_finite(),
        "{rounds}"
    );

    let peers = get(http, "/api/peers").json();
    for (peer, name, org, country) in [
        (&p1, "ada", "Inria", "FR"),
        (&p2, "lin", "BigScience", "DE"),
    ] {
        let p = peers
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peer"] == peer.as_str())
            .unwrap_or_else(|| panic!("{peer} missing in {peers}"));
        assert_eq!(p["name"], name);
        assert_eq!(p["org"], org);
        assert_eq!(p["country"], country);
        assert_eq!(p["tier"], "volunteer");
        assert_eq!(p["banned"], false);
        assert!(
            p["adapter"].as_str().is_some_and(|a| a.contains("cpu")),
            "{p}"
        );
    }

    // Credit is released only once a volunteer is past probation with a record that points
    // with its rounds; which rounds each volunteer's tasks land in is up to the scheduler, so
    // wait until both have released credit before the figures below compare it (12 rounds
    // leave enough for that and for the actions after it).
    let credited = poll_until(Duration::from_secs(300), POLL, || {
        let contributors = get(http, "/api/contributors").json();
        [&p1, &p2].iter().all(|peer| {
            contributors["volunteers"].as_array().is_some_and(|rows| {
                rows.iter().any(|v| {
                    v["key"] == peer.as_str() && v["tokens"].as_u64().is_some_and(|t| t > 0)
                })
            })
        })
    });
    assert!(
        credited,
        "both volunteers earn released credit: {}",
        get(http, "/api/contributors").json()
    );

    // Changing actions: 401 without the token or with a wrong one.
    for token in [None, Some("wrong-token-wrong-token")] {
        let r = post(http, "/api/pause", token, "");
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(get(http, "/api/status").json()["paused"], false);
    let r = post(http, "/api/pause", Some(TOKEN), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(http, "/api/status").json()["paused"], true);

    // Paused: leases in progress finish, no new ones are granted, the state settles.
    let settled = poll_until(Duration::from_secs(300), POLL, || {
        get(http, "/api/status").json()["leases_active"] == 0
    });
    assert!(settled, "the leases in progress finish while paused");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        get(http, "/api/status").json()["leases_active"],
        0,
        "no lease is granted while paused"
    );

    // Contributors: the same figures as the ledger command, and as the ledger's entries.
    let contributors = get(http, "/api/contributors").json();
    let totals: serde_json::Value = serde_json::from_str(&coordinator_cli(&[
        "ledger", "--totals", "--json", "--config", &config_s,
    ]))
    .expect("ledger --totals --json");
    assert_eq!(
        contributors, totals,
        "the dashboard and `ledger --totals` agree"
    );
    let ledger = coordinator_json("ledger", &config);
    assert_eq!(
        contributors["entries"].as_u64(),
        Some(ledger.as_array().expect("ledger").len() as u64)
    );
    for (dir, peer, org, country) in [(&d1, &p1, "Inria", "FR"), (&d2, &p2, "BigScience", "DE")] {
        let entries = ledger_entries_of(&ledger, peer);
        assert!(!entries.is_empty(), "{peer} did work");
        let row = contributors["volunteers"]
            .as_array()
            .expect("volunteers")
            .iter()
            .find(|v| v["key"] == peer.as_str())
            .unwrap_or_else(|| panic!("{peer} missing in {contributors}"))
            .clone();
        let accepted: Vec<_> = entries.iter().filter(|e| e["accepted"] == true).collect();
        let sum = |list: &[&serde_json::Value], key: &str| -> u64 {
            list.iter().map(|e| e[key].as_u64().expect("number")).sum()
        };
        let all: Vec<&serde_json::Value> = entries.iter().collect();
        assert_eq!(
            row["tokens"].as_u64(),
            Some(sum(&accepted, "tokens")),
            "{row}"
        );
        assert_eq!(
            row["compute_ms"].as_u64(),
            Some(sum(&all, "compute_ms")),
            "{row}"
        );
        assert_eq!(
            row["accepted"].as_u64(),
            Some(accepted.len() as u64),
            "{row}"
        );
        assert_eq!(row["results"].as_u64(), Some(entries.len() as u64), "{row}");
        assert!(row["tokens"].as_u64().unwrap_or(0) > 0);
        // The volunteer sees the same credit with `canopy-node credit`, signed by the
        // coordinator, while its node runs; its status shows it too.
        let mut ask = Command::new(binary(Program::Node).expect("node"));
        ask.arg("--data-dir")
            .arg(dir)
            .args(["credit", &coordinator.addr, "--json"]);
        let out = run_with_timeout(ask, Duration::from_secs(120)).expect("credit");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let credit: serde_json::Value = serde_json::from_slice(&out.stdout).expect("credit json");
        assert_eq!(credit["peer_id"], peer.as_str());
        for key in ["tokens", "accepted", "results", "compute_ms"] {
            assert_eq!(credit["credit"][key], row[key], "{key}: {credit} vs {row}");
        }
        assert_eq!(credit["credit"]["known"], true);
        let status = poll_until(Duration::from_secs(30), POLL, || {
            let mut cmd = Command::new(binary(Program::Node).expect("node"));
            cmd.arg("--data-dir").arg(dir).args(["status", "--json"]);
            let out = run_with_timeout(cmd, Duration::from_secs(30)).expect("status");
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|s| s["status"]["credit"]["known"] == true)
        });
        assert!(status, "the running node's status shows its credit");
        for (group, key) in [("organisations", org), ("countries", country)] {
            let g = contributors[group]
                .as_array()
                .expect("groups")
                .iter()
                .find(|g| g["key"] == *key)
                .unwrap_or_else(|| panic!("{key} missing in {contributors}"));
            assert_eq!(g["tokens"], row["tokens"], "one node per {group} here");
        }
    }

    // /metrics: OpenMetrics text whose accepted counter is the ledger's accepted results.
    let metrics = get(http, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        metrics.headers
    );
    let samples = parse_metrics(&metrics.body);
    let accepted_in_ledger = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| canopy_tests::processes::aggregated_entry(e))
        .count() as f64;
    assert_eq!(
        metric(&samples, "canopy_results_accepted_total")
            - metric(&samples, "canopy_verification_failures_total"),
        accepted_in_ledger,
        "{}",
        metrics.body
    );
    let rounds = get(http, "/api/rounds").json();
    let closed: Vec<&serde_json::Value> = rounds["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter(|r| r["closed_ms"].is_u64())
        .collect();
    assert_eq!(
        metric(&samples, "canopy_rounds_completed"),
        closed.len() as f64
    );
    let last_eval = closed
        .last()
        .and_then(|r| r["eval_loss"].as_f64())
        .expect("loss");
    assert!((metric(&samples, "canopy_eval_loss") - last_eval).abs() < 1e-9);
    assert_eq!(metric(&samples, "canopy_peers{tier=\"volunteer\"}"), 2.0);
    assert_eq!(metric(&samples, "canopy_paused"), 1.0);
    assert!(metric(&samples, "canopy_served_bytes_total") > 0.0);
    assert!(metric(&samples, "canopy_fetched_bytes_total") > 0.0);
    // Named by convention: the build, a round-duration histogram, when the last round closed.
    let build = format!("canopy_build_info{{version=\"{}\"}}", canopy_node::VERSION);
    assert_eq!(metric(&samples, &build), 1.0);
    assert_eq!(
        metric(&samples, "canopy_round_duration_seconds_count"),
        closed.len() as f64
    );
    let last_closed_ms = closed
        .last()
        .and_then(|r| r["closed_ms"].as_u64())
        .expect("closed_ms");
    assert_eq!(
        metric(&samples, "canopy_last_round_closed_timestamp_seconds"),
        last_closed_ms as f64 / 1000.0
    );
    // libp2p's own metrics: the two volunteers' connections to the coordinator.
    let incoming: f64 = samples
        .iter()
        .filter(|(name, _)| name.starts_with("libp2p_swarm_connections_incoming_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(incoming >= 2.0, "{samples:?}");

    // Ban: 401 without the token, 400 for a malformed id, 404 for a node never seen.
    let ban_path = format!("/api/peers/{p1}/ban");
    assert_eq!(post(http, &ban_path, None, "").status, 401);
    let bad = post(http, "/api/peers/not-a-peer-id/ban", Some(TOKEN), "");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a peer id")
    );
    let stranger = node_peer_id(&tmp.path().join("stranger"));
    let r = post(http, &format!("/api/peers/{stranger}/ban"), Some(TOKEN), "");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(http, &ban_path, Some(TOKEN), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let banned_entries = ledger_entries_of(&coordinator_json("ledger", &config), &p1).len();

    // Allowlist: guarded, input checked.
    let allow = |token, body: &str| post(http, "/api/allowlist", token, body);
    let body = format!("{{\"peer\": \"{p2}\", \"tier\": \"datacenter\"}}");
    assert_eq!(allow(None, &body).status, 401);
    let r = allow(Some(TOKEN), "not json");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = allow(
        Some(TOKEN),
        &format!("{{\"peer\": \"{p2}\", \"tier\": \"root\"}}"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap_or("").contains("tier"));
    let r = allow(Some(TOKEN), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let peers = get(http, "/api/peers").json();
    let find = |peer: &str| {
        peers
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peer"] == peer)
            .cloned()
            .expect("peer")
    };
    assert_eq!(find(&p1)["banned"], true);
    assert_eq!(find(&p2)["tier"], "datacenter");

    // Resume: the unbanned node works on, the banned one gets nothing.
    assert_eq!(post(http, "/api/resume", None, "").status, 401);
    assert_eq!(post(http, "/api/resume", Some(TOKEN), "").status, 200);
    assert_eq!(get(http, "/api/status").json()["paused"], false);
    let before = ledger_entries_of(&coordinator_json("ledger", &config), &p2).len();
    let worked = poll_until(Duration::from_secs(300), POLL, || {
        ledger_entries_of(&coordinator_json("ledger", &config), &p2).len() >= before + 2
    });
    assert!(worked, "the node that is not banned works on after resume");
    assert_eq!(
        ledger_entries_of(&coordinator_json("ledger", &config), &p1).len(),
        banned_entries,
        "the banned node got no more work"
    );
    assert!(
        get(http, "/api/status").json()["tasks_total"]
            .as_u64()
            .is_some(),
        "status reports the round's tasks"
    );
    assert!(coordinator.child.try_wait().expect("wait").is_none());
}

/// A coordinator process whose `canopy.toml` (written by `init`, readable by its owner only)
/// sets `dashboard.tls_cert` and `tls_key` (a certificate made for the test) and
/// `dashboard.read_token`: the API answers over HTTPS only; the reads that show volunteers'
/// names and countries need the read token or the actions' token, the others stay open.
#[test]
fn the_dashboard_serves_https_and_keeps_names_behind_the_read_token() {
    const READ: &str = "e2e-read-token-0123456789";
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");
    coordinator_cli(&["init", &project.to_string_lossy()]);
    let mode = std::fs::metadata(project.join("canopy.toml"))
        .expect("canopy.toml")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "canopy.toml mode {mode:o}");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = made.cert.pem();
    std::fs::write(project.join("cert.pem"), &cert_pem).expect("cert.pem");
    std::fs::write(project.join("key.pem"), made.key_pair.serialize_pem()).expect("key.pem");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = small_project(
        &project,
        free_port(),
        &[],
        &format!(
            "[dashboard]\nlisten = \"{http}\"\ntoken = \"{TOKEN}\"\nread_token = \"{READ}\"\n\
             tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"
        ),
    );
    let coordinator = Coordinator::start(&config);
    assert_eq!(
        coordinator.dashboard.as_deref(),
        Some(&*format!("https://{http}/"))
    );
    let _volunteer = Volunteer::start(
        &tmp.path().join("v"),
        &coordinator.addr,
        &["--name", "Ada", "--country", "NZ"],
    );
    let https = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        get_tls(http, "localhost", &cert_pem, path, &headers).expect("an HTTPS answer")
    };
    assert_eq!(https("/api/status", None).status, 200);
    assert_eq!(https("/metrics", None).status, 200);
    for path in ["/api/peers", "/api/contributors"] {
        let refused = https(path, None);
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert_eq!(https(path, Some("not-the-token-0123456789")).status, 401);
        assert_eq!(https(path, Some(TOKEN)).status, 200, "{path}");
    }
    let named = poll_until(Duration::from_secs(120), POLL, || {
        https("/api/peers", Some(READ)).body.contains("\"Ada\"")
    });
    assert!(named, "{}", https("/api/peers", Some(READ)).body);
    // Plain HTTP gets no HTTP answer from the TLS port.
    assert!(request(http, "GET", "/api/status", &[], None).is_err());
}

fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let start = dom[..at].rfind('<').expect("tag start");
    let end = at + dom[at..].find('>').expect("tag end");
    &dom[start..=end]
}

/// The text of the element with `id` up to its first child or end tag.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let tag = element(dom, id);
    let at = dom.find(tag).expect("the tag") + tag.len();
    let len = dom[at..].find('<').expect("end tag");
    &dom[at..at + len]
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let len = tag[at..].find('"').expect("attribute end");
    &tag[at..at + len]
}

/// The (x, y) points of an SVG path made of M and L commands.
fn path_points(d: &str) -> Vec<(f64, f64)> {
    d.split(['M', 'L'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (x, y) = p
                .split_once(',')
                .unwrap_or_else(|| panic!("bad point {p:?}"));
            (x.trim().parse().expect("x"), y.trim().parse().expect("y"))
        })
        .collect()
}

/// `canopy-coordinator demo --http …` serves a page that headless Chromium renders: the loss
/// chart has a path with real points per series and the contributors table a row per demo
/// volunteer. A screenshot is kept under the target directory.
#[test]
fn the_dashboard_page_renders_a_demo_run_in_headless_chromium() {
    let Some(chromium) = browser::chromium() else {
        assert!(
            !browser::browser_required(),
            "CANOPY_REQUIRE_BROWSER=1 but no chromium is installed"
        );
        eprintln!("skipped: no chromium on PATH (set CANOPY_REQUIRE_BROWSER=1 to fail instead)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let bin = binary(Program::Coordinator).expect("build coordinator");
    let mut child = Command::new(bin)
        .args([
            "demo",
            "--nodes",
            "2",
            "--datacenter",
            "0",
            "--rounds",
            "2",
            "--inner-steps",
            "10",
            "--json",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--dir",
        ])
        .arg(tmp.path().join("demo"))
        .env("CANOPY_ADAPTER", "cpu")
        .env_remove("CANOPY_REQUIRE_ADAPTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = lines.clone();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        }
    });
    let seen = |key: &str| {
        lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find_map(|l| l.get(key).cloned())
    };
    let finished = poll_until(Duration::from_secs(600), POLL, || {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the demo exited before its dashboard was read"
        );
        seen("summary").is_some()
    });
    assert!(finished, "the demo finishes its rounds");
    let url = seen("dashboard").expect("the demo prints the dashboard URL")["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));

    let profile = tempfile::tempdir().expect("profile");
    let dom = browser::dump_dom(&chromium, profile.path(), &url, 5_000);
    for (id, min_points) in [("loss-train", 2), ("loss-eval", 3)] {
        let tag = element(&dom, id);
        let points = path_points(attribute(tag, "d"));
        assert!(
            points.len() >= min_points,
            "#{id} has {} points: {tag}",
            points.len()
        );
        assert_eq!(attribute(tag, "data-points"), points.len().to_string());
        assert!(
            points
                .iter()
                .all(|(x, y)| x.is_finite() && y.is_finite() && *x >= 0.0 && *y >= 0.0),
            "{tag}"
        );
        assert!(
            points.windows(2).all(|w| w[1].0 > w[0].0),
            "rounds go left to right: {tag}"
        );
    }
    let start = dom.find("id=\"contributors\"").expect("#contributors");
    let table = &dom[start..start + dom[start..].find("</table>").expect("table end")];
    assert_eq!(
        table.matches("<tr data-peer=").count(),
        2,
        "one row per demo volunteer: {table}"
    );
    for name in ["volunteer-0", "volunteer-1"] {
        assert!(table.contains(name), "{name} missing in {table}");
    }
    assert!(dom.contains("no corpus build"), "the corpus panel says so");
    // The finished run's samples, one row per prompt, and the loss in bits per byte.
    let section = element(&dom, "samples-section");
    assert!(
        !section.contains("hidden"),
        "the samples are shown: {section}"
    );
    let start = dom.find("id=\"samples\"").expect("#samples");
    let table = &dom[start..start + dom[start..].find("</table>").expect("table end")];
    assert!(
        table.matches("<tr>").count() >= 5,
        "prompts in several languages: {table}"
    );
    assert!(
        table.contains("<b>Everyone has the right to</b>"),
        "{table}"
    );
    assert!(
        element_text(&dom, "eval-loss").contains("bits/byte"),
        "{}",
        element_text(&dom, "eval-loss")
    );
    assert!(
        dom.contains("<span id=\"error\"></span>"),
        "no API error shown: {}",
        element(&dom, "error")
    );

    let png = browser::artifact_dir().join("dashboard-demo.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().expect("profile");
    browser::screenshot(&chromium, profile.path(), &url, 5_000, &png);
    let bytes = std::fs::read(&png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("dashboard screenshot: {}", png.display());

    signal(&child, "TERM");
    let _ = child.wait();
}
