//! The operators' files in `deploy/`: the systemd units pass `systemd-analyze verify`, every
//! flag the units, scripts, manifests and images pass to a binary is one it has, the shell
//! scripts pass `shellcheck`, the alert rules and the Grafana dashboard name only metrics that
//! a real coordinator and node serve, and the container images build where a container
//! runtime runs.
//!
//! Without `systemd-analyze` or `shellcheck` those checks say so and pass, unless
//! `CANOPY_REQUIRE_DEPLOY_TOOLS=1` (CI sets it), when they fail. Where `promtool` is
//! installed it also parses every query and runs the alert rules' unit tests. Without a
//! working `docker` or `podman` the images are not built.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use canopy_tests::harness::{Program, binary, deploy_tool, on_path, read_text, run_with_timeout};
use canopy_tests::http::{parse_metrics, request};
use canopy_tests::processes::{Coordinator, Volunteer, free_port, poll_until, small_project};

/// What the coordinator's `/metrics` serves under `canopy_` (counters with `_total`).
const COORDINATOR_METRICS: &[&str] = &[
    "canopy_build_info",
    "canopy_results_accepted_total",
    "canopy_results_rejected_total",
    "canopy_fetched_bytes_total",
    "canopy_served_bytes_total",
    "canopy_lease_expiries_total",
    "canopy_verification_failures_total",
    "canopy_updates_unchecked_held_total",
    "canopy_updates_unchecked_aggregated_total",
    "canopy_credit_held_total",
    "canopy_credit_released_total",
    "canopy_rounds_completed",
    "canopy_current_round",
    "canopy_round_duration_seconds",
    "canopy_last_round_closed_timestamp_seconds",
    "canopy_train_loss",
    "canopy_eval_loss",
    "canopy_peers",
    "canopy_banned_peers",
    "canopy_active_leases",
    "canopy_paused",
    "canopy_store_bytes",
    "canopy_provider_records",
    "canopy_remote_provider_records",
    "canopy_pending_requests",
];

/// What a node started with `join --metrics` serves under `canopy_`.
const NODE_METRICS: &[&str] = &[
    "canopy_node_build_info",
    "canopy_node_tasks_completed_total",
    "canopy_node_store_bytes",
];

/// Histograms among the above: queries name their `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &["canopy_round_duration_seconds"];

/// Labelled families served only once they have a member: no refusal, no series.
const EMPTY_UNTIL_USED: &[&str] = &["canopy_results_rejected_total"];

/// The libp2p-metrics 0.18 swarm counters the files may name (its `src/swarm.rs`; recorded
/// for every swarm, whatever protocols are enabled).
const LIBP2P_METRICS: &[&str] = &[
    "libp2p_swarm_connections_established_total",
    "libp2p_swarm_connections_incoming_total",
    "libp2p_swarm_dial_attempt_total",
];

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(250);

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the repository")
        .join("deploy")
}

/// The files under `dir` (recursively) whose names end in one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                dirs.push(path);
            } else if suffixes.iter().any(|s| name.ends_with(s)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `command`, panicking when it cannot start or outlives `timeout`.
fn run(command: Command, timeout: Duration) -> Output {
    let shown = format!("{command:?}");
    run_with_timeout(command, timeout).unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// Its standard output and error, for messages.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The metric names in `text`: every word that starts with `canopy_` or `libp2p_`, with a
/// histogram's `_bucket`, `_sum` and `_count` taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("canopy_") || word.starts_with("libp2p_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    word.strip_suffix(suffix)
                        .filter(|base| HISTOGRAMS.contains(base))
                })
                .unwrap_or(word)
                .to_string()
        })
        .collect()
}

/// Every string under a key named `expr` in a Grafana dashboard, and its variables' queries.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The dashboard, parsed.
fn dashboard() -> serde_json::Value {
    let path = deploy_dir().join("grafana").join("canopy.json");
    serde_json::from_str(&read_text(&path)).expect("deploy/grafana/canopy.json is JSON")
}

/// The alert rules' text.
fn alerts() -> String {
    read_text(&deploy_dir().join("prometheus").join("alerts.yml"))
}

/// The metric names the dashboard's queries and the alert rules (queries, descriptions and
/// comments alike) use.
fn referenced_metrics() -> BTreeSet<String> {
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    let mut names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    names.extend(metric_names(&alerts()));
    names
}

/// The metric names a `/metrics` text serves: its samples' names, and the names its
/// `# TYPE` lines declare (with `_total` for counters, `_info` for info metrics).
fn served_metrics(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = parse_metrics(text)
        .into_iter()
        .map(|(name, _)| name.split('{').next().unwrap_or("").to_string())
        .flat_map(|name| metric_names(&name))
        .collect();
    for line in text.lines() {
        let mut words = line.strip_prefix("# TYPE ").unwrap_or("").split(' ');
        if let (Some(name), Some(kind)) = (words.next(), words.next()) {
            names.insert(name.to_string());
            match kind {
                "counter" => names.insert(format!("{name}_total")),
                "info" => names.insert(format!("{name}_info")),
                _ => false,
            };
        }
    }
    names
}

/// The `--flags` in the lines of `text` that `select` picks.
fn flags(text: &str, select: impl Fn(&str) -> bool) -> Vec<String> {
    text.lines()
        .filter(|line| select(line.trim()))
        .flat_map(|line| {
            line.split(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '(' | ')' | ',' | '[' | '=')
            })
            .filter_map(|word| word.strip_prefix("--"))
            .filter(|flag| flag.starts_with(|c: char| c.is_ascii_lowercase()))
            .map(|flag| format!("--{flag}"))
            .collect::<Vec<_>>()
        })
        .collect()
}

/// `bin --help` and `bin <subcommand> --help`: every flag the command takes, global ones too.
fn help(bin: &Path, subcommand: &str) -> String {
    let mut text = String::new();
    for args in [vec!["--help"], vec![subcommand, "--help"]] {
        let mut command = Command::new(bin);
        command.args(&args);
        let output = run(command, Duration::from_secs(60));
        assert!(output.status.success(), "{}", printed(&output));
        text.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    text
}

/// Whether `help` lists `flag` (as a whole word: `--gpus` is not `--gpus-x`).
fn has_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        !help[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Each unit, its `ExecStart` pointed at the binary this test run built (the installed path
/// does not exist here), verified by `systemd-analyze verify` (a template as instance `0`):
/// it must exit 0 and say nothing about the unit (an unknown or misspelt directive is only a
/// warning there).
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = deploy_tool("systemd-analyze") else {
        return;
    };
    let units = files(&deploy_dir().join("systemd"), &[".service"]);
    assert!(units.len() >= 3, "units: {units:?}");
    let node = binary(Program::Node).expect("build canopy-node");
    let coordinator = binary(Program::Coordinator).expect("build canopy-coordinator");
    let tmp = tempfile::tempdir().expect("temp dir");
    for unit in &units {
        let text = read_text(unit);
        let built = text
            .replace("/usr/local/bin/canopy-node", &node.to_string_lossy())
            .replace(
                "/usr/local/bin/canopy-coordinator",
                &coordinator.to_string_lossy(),
            );
        assert_ne!(
            built,
            text,
            "{} runs no /usr/local/bin/canopy-* binary",
            unit.display()
        );
        let name = unit.file_name().expect("a file name");
        std::fs::write(tmp.path().join(name), built).expect("write the unit");
    }
    for unit in &units {
        let name = unit
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a unit name");
        let instance = name.replace("@.service", "@0.service");
        let mut command = Command::new(&analyze);
        command.arg("verify").arg(tmp.path().join(&instance));
        let output = run(command, Duration::from_secs(120));
        let said = printed(&output);
        let stem = name.trim_end_matches(".service").trim_end_matches('@');
        assert!(
            output.status.success() && !said.contains(stem),
            "systemd-analyze verify {instance}:\n{said}"
        );
        eprintln!("systemd-analyze verify {instance}: clean");
    }
}

/// Every flag that the units, the environment file, the Slurm script, the Kubernetes
/// manifests and the images pass to `canopy-node` or `canopy-coordinator` is one of that
/// binary's (the subcommand's or a global one).
#[test]
fn deploy_files_pass_only_flags_the_binaries_have() {
    let node = binary(Program::Node).expect("build canopy-node");
    let coordinator = binary(Program::Coordinator).expect("build canopy-coordinator");
    let node_help = help(&node, "join");
    let coordinator_help = help(&coordinator, "run");
    let dir = deploy_dir();
    let exec_start = |line: &str| line.starts_with("ExecStart=");
    let mut checked = 0;
    let mut check = |file: &str, select: &dyn Fn(&str) -> bool| {
        let text = read_text(&dir.join(file));
        let (bin, listed) = if file.contains("coordinator") {
            ("canopy-coordinator", &coordinator_help)
        } else {
            ("canopy-node", &node_help)
        };
        let used = flags(&text, select);
        assert!(!used.is_empty(), "no flags found in deploy/{file}");
        for flag in used {
            assert!(
                has_flag(listed, &flag),
                "deploy/{file}: {bin} has no {flag}"
            );
            checked += 1;
        }
    };
    check("systemd/canopy-node.service", &exec_start);
    check("systemd/canopy-node@.service", &exec_start);
    check("systemd/canopy-coordinator.service", &exec_start);
    check("systemd/node.env", &|line| {
        line.contains("CANOPY_JOIN_ARGS=")
    });
    check("slurm/canopy-node.sbatch", &|line| {
        line.starts_with("args") || line.contains("\"$node\"")
    });
    check("kubernetes/nodes.yaml", &|line| line.starts_with("- --"));
    check("kubernetes/coordinator.yaml", &|line| {
        line.starts_with("args:")
    });
    check("container/README.md", &|line| line.contains("join /dns4/"));
    check("container/coordinator.Containerfile", &|line| {
        line.starts_with("CMD")
    });
    eprintln!("{checked} flags in deploy/ checked against --help");
}

/// `shellcheck` finds nothing in any script under `deploy/`.
#[test]
fn deploy_scripts_pass_shellcheck() {
    let Some(shellcheck) = deploy_tool("shellcheck") else {
        return;
    };
    let scripts = files(&deploy_dir(), &[".sh", ".sbatch"]);
    assert!(!scripts.is_empty(), "no scripts under deploy/");
    let mut command = Command::new(shellcheck);
    command.args(&scripts);
    let output = run(command, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "shellcheck {scripts:?}:\n{}",
        printed(&output)
    );
    eprintln!("shellcheck: {} scripts clean", scripts.len());
}

/// The dashboard is an importable Grafana dashboard on a `${DS_PROMETHEUS}` input, and it and
/// the alert rules name only metrics Canopy serves. With `promtool`, every dashboard query
/// parses and the rules pass their checks and unit tests.
#[test]
fn dashboard_and_alerts_name_only_canopy_metrics() {
    let dash = dashboard();
    assert_eq!(
        dash["__inputs"][0]["name"], "DS_PROMETHEUS",
        "{}",
        dash["__inputs"]
    );
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        panels.push(panel);
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "panel ids repeat: {title}"
        );
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title} has no query");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{title}: {target}"
                );
            }
        }
    }

    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    let known: BTreeSet<&str> = COORDINATOR_METRICS
        .iter()
        .chain(NODE_METRICS)
        .chain(LIBP2P_METRICS)
        .copied()
        .collect();
    let alerts = alerts();
    for (file, text) in queries
        .iter()
        .map(|q| ("deploy/grafana/canopy.json", q.as_str()))
        .chain([("deploy/prometheus/alerts.yml", alerts.as_str())])
    {
        for name in metric_names(text) {
            assert!(
                known.contains(name.as_str()),
                "{file} names {name}, which Canopy does not serve"
            );
        }
    }
    assert_eq!(
        alerts.matches("- alert: ").count(),
        alerts.matches("expr: ").count(),
        "every alert rule has one expr"
    );
    eprintln!(
        "{} dashboard queries and the alert rules name {} metrics, all served",
        queries.len(),
        referenced_metrics().len()
    );

    let Some(promtool) = on_path(&["promtool"]) else {
        eprintln!("skipping the PromQL checks: `promtool` is not installed");
        return;
    };
    // The dashboard's queries as recording rules, so that promtool parses them.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let promql = queries.iter().filter(|q| !q.starts_with("label_values("));
    for (i, query) in promql.enumerate() {
        let query = query
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$node", ".*");
        let quoted = serde_json::to_string(&query).expect("a JSON string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let rules_file = tmp.path().join("dashboard.rules.yml");
    std::fs::write(&rules_file, rules).expect("write the rules");
    let prometheus = deploy_dir().join("prometheus");
    for args in [
        vec!["check", "rules", rules_file.to_str().expect("a UTF-8 path")],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let mut command = Command::new(&promtool);
        command.args(&args).current_dir(&prometheus);
        let output = run(command, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}",
            printed(&output)
        );
    }
    eprintln!("promtool: the dashboard's queries parse, the alert rules pass their tests");
}

/// A coordinator with its dashboard and a node with `--metrics`: every `canopy_` metric of the
/// lists above, and every metric the dashboard and alert rules name, is in the `/metrics` of
/// the process that serves it.
#[test]
fn metrics_named_in_deploy_files_are_served() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let http_port = free_port();
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[("rounds", "50")],
        &format!("[dashboard]\nlisten = \"127.0.0.1:{http_port}\"\n"),
    );
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let node_http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let coordinator = Coordinator::start(&config);
    let _node = Volunteer::start(
        &tmp.path().join("node"),
        &coordinator.addr,
        &["--metrics", &node_http.to_string()],
    );
    let scrape = |addr: SocketAddr| -> Option<BTreeSet<String>> {
        let response = request(addr, "GET", "/metrics", &[], None).ok()?;
        (response.status == 200).then(|| served_metrics(&response.body))
    };
    // Labelled families appear with their first member: wait for the node to be a peer.
    let mut served = BTreeSet::new();
    let seen = poll_until(Duration::from_secs(120), POLL, || {
        served = scrape(http).unwrap_or_default();
        served.contains("canopy_peers")
            && served.contains("libp2p_swarm_connections_incoming_total")
    });
    assert!(
        seen,
        "the coordinator's /metrics never showed the node: {served:?}"
    );
    let mut node_served = BTreeSet::new();
    let seen = poll_until(Duration::from_secs(120), POLL, || {
        node_served = scrape(node_http).unwrap_or_default();
        !node_served.is_empty()
    });
    assert!(seen, "the node's --metrics never answered on {node_http}");

    let referenced = referenced_metrics();
    let expected = COORDINATOR_METRICS.iter().map(|n| n.to_string()).chain(
        referenced
            .iter()
            .filter(|n| !n.starts_with("canopy_node_"))
            .cloned(),
    );
    for name in expected {
        assert!(
            served.contains(&name) || EMPTY_UNTIL_USED.contains(&name.as_str()),
            "the coordinator's /metrics lacks {name}: {served:?}"
        );
    }
    let node_expected = NODE_METRICS.iter().map(|n| n.to_string()).chain(
        referenced
            .iter()
            .filter(|n| n.starts_with("canopy_node_"))
            .cloned(),
    );
    for name in node_expected {
        assert!(
            node_served.contains(&name),
            "the node's /metrics lacks {name}: {node_served:?}"
        );
    }
    assert!(
        node_served.iter().any(|n| n.starts_with("libp2p_swarm_")),
        "the node's /metrics has no libp2p metrics: {node_served:?}"
    );
    eprintln!(
        "{} metrics named in deploy/ are served ({} by the coordinator, {} by the node)",
        referenced.len(),
        served.len(),
        node_served.len()
    );
}

/// `docker` or `podman`, if one is installed and its daemon (or service) answers.
fn container_runtime() -> Option<PathBuf> {
    ["docker", "podman"].iter().find_map(|name| {
        let bin = on_path(&[name])?;
        let mut command = Command::new(&bin);
        command.arg("info");
        let works = run_with_timeout(command, Duration::from_secs(60))
            .is_ok_and(|output| output.status.success());
        works.then_some(bin)
    })
}

/// Both images build from the repository root, and run as their unprivileged user: the node
/// writes its identity to its volume, the coordinator prints its version.
#[test]
fn container_images_build_where_a_runtime_runs() {
    let Some(runtime) = container_runtime() else {
        eprintln!("no container runtime: images not built");
        return;
    };
    let root = deploy_dir()
        .parent()
        .expect("the repository root")
        .to_path_buf();
    for (file, tag, args) in [
        (
            "node.Containerfile",
            "canopy-node:deploy-test",
            vec!["info", "--json"],
        ),
        (
            "coordinator.Containerfile",
            "canopy-coordinator:deploy-test",
            vec!["--version"],
        ),
    ] {
        eprintln!("building {tag} from deploy/container/{file} (a release build: minutes)");
        let mut build = Command::new(&runtime);
        build
            .arg("build")
            .arg("-f")
            .arg(root.join("deploy").join("container").join(file))
            .args(["-t", tag])
            .arg(&root);
        let output = run(build, Duration::from_secs(3600));
        assert!(
            output.status.success(),
            "building {file}:\n{}",
            printed(&output)
        );
        let mut image = Command::new(&runtime);
        image.args(["run", "--rm", tag]).args(&args);
        let output = run(image, Duration::from_secs(300));
        let said = printed(&output);
        assert!(output.status.success(), "{tag} {args:?}:\n{said}");
        assert!(
            said.contains(env!("CARGO_PKG_VERSION")),
            "{tag} {args:?} does not name version {}:\n{said}",
            env!("CARGO_PKG_VERSION")
        );
        let mut remove = Command::new(&runtime);
        remove.args(["image", "rm", tag]);
        let _ = run_with_timeout(remove, Duration::from_secs(120));
    }
}
