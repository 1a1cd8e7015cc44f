//! The release artifacts: `release/build --prebuilt` packages the binaries this test run built
//! (as CI does), and the artifacts are checked as a user meets them. `SHA256SUMS` verifies;
//! each archive unpacks into an empty directory as one top directory with the binary,
//! `README.md`, `LICENSE` and `INSTALL.txt`, owned by 0 and dated `SOURCE_DATE_EPOCH`; the
//! unpacked `canopy-node` passes `selftest` on the CPU path and runs `info` in a clean
//! environment; each `.deb` has the right control fields, the binary in `/usr/bin`, the
//! units of `deploy/systemd/` running it, its user and its settings file, and its extracted
//! binary runs; a second build gives byte-identical artifacts. Also: the scripts pass
//! `shellcheck`, and the release workflow builds every target `release/README.md` lists.
//!
//! Without `sha256sum`, `dpkg-deb` or `shellcheck` those checks say so and pass, unless
//! `CANOPY_REQUIRE_DEPLOY_TOOLS=1` (CI sets it), when they fail.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use canopy_tests::harness::{Program, binary, deploy_tool, on_path, read_text, run_with_timeout};

/// The workspace's version, which every artifact's name carries.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one `release/build` may take: it compresses two binaries of tens of MiB twice
/// (gzip and xz) on a machine shared with other tests.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the artifacts are dated when the repository has no git history to date them by.
const FALLBACK_EPOCH: u64 = 1_700_000_000;

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the repository")
        .to_path_buf()
}

/// Its standard output and error, for messages.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` and returns its standard output, panicking unless it succeeds in time.
fn succeed(command: Command, timeout: Duration) -> String {
    let shown = format!("{command:?}");
    let output = run_with_timeout(command, timeout).unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(output.status.success(), "{shown}:\n{}", printed(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `program` in the environment of a fresh account: nothing but `PATH` and `HOME`.
fn clean(program: &Path, home: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home);
    command
}

/// The last commit's time, which `release/build` dates the artifacts by, if there is git
/// history.
fn last_commit_time() -> Option<u64> {
    let mut git = Command::new("git");
    git.args(["log", "-1", "--format=%ct"])
        .current_dir(repo_root());
    let output = run_with_timeout(git, Duration::from_secs(60)).ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    output
        .status
        .success()
        .then(|| text.trim().parse().ok())
        .flatten()
}

/// Runs `release/build --prebuilt DIR --out OUT` (with `SOURCE_DATE_EPOCH` when given, else
/// its default) and returns what it said.
fn release_build(prebuilt: &Path, out: &Path, epoch: Option<u64>, deb: bool) -> String {
    let mut command = Command::new(repo_root().join("release").join("build"));
    command
        .arg("--prebuilt")
        .arg(prebuilt)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("CANOPY_DEB_MAINTAINER");
    if let Some(epoch) = epoch {
        command.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    if !deb {
        command.arg("--no-deb");
    }
    let shown = format!("{command:?}");
    let output =
        run_with_timeout(command, BUILD_TIMEOUT).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let said = printed(&output);
    assert!(output.status.success(), "{shown}:\n{said}");
    said
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Debian's name for this machine's architecture, where `release/build` makes packages.
fn deb_arch() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("amd64"),
        ("linux", "aarch64") => Some("arm64"),
        _ => None,
    }
}

/// The Rust target the artifacts in `out` are named for: the one `canopy-node-VERSION-*`
/// archive's.
fn archive_triple(out: &Path) -> String {
    let prefix = format!("canopy-node-{VERSION}-");
    let triples: Vec<String> = names(out)
        .iter()
        .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(".tar.gz"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        triples.len(),
        1,
        "node archives in {}: {triples:?}",
        out.display()
    );
    let triple = triples[0].clone();
    assert!(
        triple.starts_with(std::env::consts::ARCH) && triple.contains(std::env::consts::OS),
        "{triple} is not this machine's target"
    );
    triple
}

/// `sha256sum -c SHA256SUMS` passes, and `SHA256SUMS` lists exactly the other files.
fn check_checksums(sha256sum: &Path, out: &Path) {
    let mut check = Command::new(sha256sum);
    check.args(["-c", "SHA256SUMS"]).current_dir(out);
    let said = succeed(check, Duration::from_secs(300));
    let listed: BTreeSet<String> = read_text(&out.join("SHA256SUMS"))
        .lines()
        .map(|line| {
            let (hash, name) = line.split_once("  ").expect("`HASH  NAME` lines");
            assert_eq!(hash.len(), 64, "{line}");
            name.to_string()
        })
        .collect();
    let files: BTreeSet<String> = names(out)
        .into_iter()
        .filter(|name| name != "SHA256SUMS")
        .collect();
    assert_eq!(
        listed, files,
        "SHA256SUMS lists other files than {out:?} holds"
    );
    assert_eq!(
        said.lines().filter(|l| l.ends_with(": OK")).count(),
        files.len(),
        "{said}"
    );
    eprintln!("SHA256SUMS: {} artifacts check out", files.len());
}

/// Archive `canopy-NAME-VERSION-TRIPLE.tar.gz` in `out`: a gzip stream without a name or
/// time, entries owned by 0; unpacked into the empty directory `into`, one top directory
/// with the binary (0755), `README.md` and `LICENSE` as in the repository and `INSTALL.txt`
/// (0644), each dated `epoch`. Returns the unpacked binary.
fn check_archive(out: &Path, name: &str, triple: &str, epoch: u64, into: &Path) -> PathBuf {
    let top = format!("{name}-{VERSION}-{triple}");
    let archive = out.join(format!("{top}.tar.gz"));
    let bytes = std::fs::read(&archive).unwrap_or_else(|e| panic!("{archive:?}: {e}"));
    assert_eq!(bytes[..2], [0x1f, 0x8b], "{archive:?} is not gzip");
    assert_eq!(
        bytes[4..8],
        [0, 0, 0, 0],
        "{archive:?} records a time (gzip -n)"
    );

    let mut list = Command::new("tar");
    list.args(["--numeric-owner", "-tvzf"]).arg(&archive);
    let listing = succeed(list, Duration::from_secs(120));
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "{top}: not owned by 0/0: {line}");
        assert!(
            line.contains(&format!(" {top}/")),
            "{top}: outside its top directory: {line}"
        );
    }

    assert!(names(into).is_empty(), "{into:?} is not empty");
    let mut unpack = Command::new("tar");
    unpack.arg("-xzf").arg(&archive).arg("-C").arg(into);
    succeed(unpack, Duration::from_secs(120));
    assert_eq!(
        names(into),
        std::slice::from_ref(&top),
        "{top}: more than one top directory"
    );
    let dir = into.join(&top);
    let mut expected = vec!["INSTALL.txt", "LICENSE", "README.md", name];
    expected.sort();
    assert_eq!(names(&dir), expected, "{top}");
    let root = repo_root();
    for file in ["README.md", "LICENSE"] {
        assert!(
            read_text(&dir.join(file)) == read_text(&root.join(file)),
            "{top}/{file} differs"
        );
    }
    let install = read_text(&dir.join("INSTALL.txt"));
    for word in [name, VERSION, triple, "README.md"] {
        assert!(
            install.contains(word),
            "{top}/INSTALL.txt does not name {word}"
        );
    }
    let dated = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    for file in expected.iter().chain([&"."]) {
        let meta = std::fs::metadata(dir.join(file)).expect("an unpacked file");
        let mode = meta.permissions().mode() & 0o7777;
        let want = if *file == name || *file == "." {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode, want, "{top}/{file}: mode {mode:o}");
        assert_eq!(
            meta.modified().ok(),
            Some(dated),
            "{top}/{file}: not dated {epoch}"
        );
    }
    let bin = dir.join(name);
    // Stripped: no debug info nor symbol table left.
    if let Some(readelf) = on_path(&["readelf"]) {
        let mut sections = Command::new(readelf);
        sections.args(["-S", "-W"]).arg(&bin);
        let sections = succeed(sections, Duration::from_secs(60));
        for section in [" .debug_info ", " .debug_line ", " .symtab "] {
            assert!(!sections.contains(section), "{top}/{name} keeps {section}");
        }
    }
    bin
}

/// The unpacked node runs where it was unpacked, in a clean environment: every kernel
/// passes `selftest` on the CPU path, and `info` makes its identity in a fresh data directory.
fn check_unpacked_node(node: &Path, scratch: &Path) {
    let home = scratch.join("home");
    let data = scratch.join("data");
    std::fs::create_dir_all(&home).expect("a home directory");

    let mut selftest = clean(node, &home);
    selftest.arg("selftest").env("CANOPY_ADAPTER", "cpu");
    let said = succeed(selftest, Duration::from_secs(600));
    let summary = said
        .lines()
        .find(|line| line.ends_with(" kernels pass"))
        .unwrap_or_else(|| panic!("selftest printed no summary:\n{said}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    let passed: usize = words[0].parse().expect("a kernel count");
    assert!(
        passed > 0 && words[1] == "of" && words[2] == words[0],
        "selftest: not every kernel passed:\n{said}"
    );
    assert!(said.contains("matmul"), "selftest ran no matmul:\n{said}");

    let mut info = clean(node, &home);
    info.arg("--data-dir").arg(&data).arg("info");
    let said = succeed(info, Duration::from_secs(120));
    let peer_id = said
        .lines()
        .find_map(|line| line.strip_prefix("peer id"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("info printed no peer id:\n{said}"));
    assert!(peer_id.starts_with("12D3KooW"), "peer id {peer_id}");
    assert!(
        said.contains(&data.to_string_lossy().into_owned()),
        "{said}"
    );
    assert!(said.contains(VERSION), "{said}");
    assert!(
        data.join("identity.key").is_file(),
        "info made no identity.key"
    );
    eprintln!("unpacked canopy-node: selftest {summary}, peer id {peer_id}");
}

/// `name --version` in a clean environment says `NAME VERSION`.
fn check_version(bin: &Path, name: &str, home: &Path) {
    let mut version = clean(bin, home);
    version.arg("--version");
    let said = succeed(version, Duration::from_secs(60));
    assert_eq!(
        said.trim(),
        format!("{name} {VERSION}"),
        "{bin:?} --version"
    );
}

/// Package `NAME_VERSION_ARCH.deb` in `out`: its control fields, its files (binary in
/// /usr/bin, the units of deploy/systemd/ running it, its user, its settings as a 0600
/// conffile, its copyright), all owned by root, and its extracted binary runs.
fn check_deb(dpkg_deb: &Path, out: &Path, name: &str, arch: &str, scratch: &Path) {
    let version = VERSION.replace('-', "~");
    let deb = out.join(format!("{name}_{version}_{arch}.deb"));
    let short = name.trim_start_matches("canopy-");

    let mut field = Command::new(dpkg_deb);
    field.arg("--field").arg(&deb);
    let control = succeed(field, Duration::from_secs(60));
    let value = |key: &str| {
        control
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{deb:?} has no {key}:\n{control}"))
            .to_string()
    };
    assert_eq!(value("Package"), name);
    assert_eq!(value("Version"), version);
    assert_eq!(value("Architecture"), arch);
    let maintainer = value("Maintainer");
    assert!(
        maintainer.contains('<') && maintainer.ends_with('>'),
        "{maintainer}"
    );
    assert!(value("Depends").starts_with("libc6"), "{control}");
    assert!(!value("Description").is_empty(), "{control}");
    if name == "canopy-node" {
        assert!(value("Recommends").contains("libvulkan1"), "{control}");
    }

    let mut contents = Command::new(dpkg_deb);
    contents.arg("--contents").arg(&deb);
    let contents = succeed(contents, Duration::from_secs(60));
    for line in contents.lines() {
        assert!(
            line.contains(" root/root "),
            "{deb:?}: not owned by root: {line}"
        );
    }
    let mode_of = |path: &str| {
        contents
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("{deb:?} has no {path}:\n{contents}"))
            .to_string()
    };
    assert_eq!(mode_of(&format!("usr/bin/{name}")), "-rwxr-xr-x");
    assert_eq!(mode_of(&format!("etc/canopy/{short}.env")), "-rw-------");
    for path in [
        format!("usr/lib/sysusers.d/{name}.conf"),
        format!("usr/share/doc/{name}/copyright"),
    ] {
        assert_eq!(mode_of(&path), "-rw-r--r--", "{path}");
    }

    std::fs::create_dir_all(scratch).expect("a scratch directory");
    let root = scratch.join(format!("{name}-root"));
    let mut extract = Command::new(dpkg_deb);
    extract.arg("-x").arg(&deb).arg(&root);
    succeed(extract, Duration::from_secs(120));
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).expect("a home directory");
    check_version(&root.join("usr/bin").join(name), name, &home);

    let sysusers = read_text(&root.join(format!("usr/lib/sysusers.d/{name}.conf")));
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with(&format!("u {name} "))),
        "{sysusers}"
    );
    // Every unit of deploy/systemd/ for this binary, as the repository has it but for
    // ExecStart, which runs the packaged binary.
    let deploy = repo_root().join("deploy").join("systemd");
    let mut units = 0;
    for unit in [format!("{name}.service"), format!("{name}@.service")] {
        let Ok(source) = std::fs::read_to_string(deploy.join(&unit)) else {
            continue;
        };
        let packaged = read_text(&root.join("usr/lib/systemd/system").join(&unit));
        let expected = source.replace(
            &format!("ExecStart=/usr/local/bin/{name} "),
            &format!("ExecStart=/usr/bin/{name} "),
        );
        assert!(
            packaged.ends_with(&expected),
            "{unit} differs from deploy/systemd/{unit}"
        );
        let exec_starts: Vec<&str> = packaged
            .lines()
            .filter(|line| line.starts_with("ExecStart="))
            .collect();
        assert!(!exec_starts.is_empty(), "{unit} has no ExecStart");
        for line in exec_starts {
            assert!(
                line.starts_with(&format!("ExecStart=/usr/bin/{name} ")),
                "{unit}: {line}"
            );
        }
        assert!(
            packaged.contains(&format!("\nUser={name}\n")),
            "{unit}: not User={name}"
        );
        assert!(
            packaged.contains(&format!("/etc/canopy/{short}.env")),
            "{unit}"
        );
        units += 1;
    }
    assert!(units >= 1, "no unit of deploy/systemd/ in {deb:?}");

    let control_dir = scratch.join(format!("{name}-control"));
    let mut control_files = Command::new(dpkg_deb);
    control_files.arg("-e").arg(&deb).arg(&control_dir);
    succeed(control_files, Duration::from_secs(60));
    assert_eq!(
        read_text(&control_dir.join("conffiles")),
        format!("/etc/canopy/{short}.env\n")
    );
    for script in ["postinst", "prerm", "postrm"] {
        let meta = std::fs::metadata(control_dir.join(script)).expect("a maintainer script");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{script}");
    }
    eprintln!("{name}_{version}_{arch}.deb: control fields, files and units ({units}) check out");
}

/// The artifacts of `first` and `second` are the same files, byte for byte.
fn assert_identical(first: &Path, second: &Path) {
    let files = names(first);
    assert_eq!(files, names(second), "the two builds made different files");
    for file in &files {
        let (a, b) = (
            std::fs::read(first.join(file)).expect("an artifact"),
            std::fs::read(second.join(file)).expect("an artifact"),
        );
        assert!(
            a == b,
            "{file} differs between two builds of the same binaries"
        );
    }
    eprintln!("a second build: {} artifacts byte-identical", files.len());
}

/// The whole release of the binaries this test run built: checksums, archives unpacked and
/// run, packages inspected and run, and a second build identical to the first.
#[test]
fn release_artifacts_unpack_run_and_rebuild_identically() {
    let Some(sha256sum) = deploy_tool("sha256sum") else {
        return;
    };
    let dpkg_deb = deploy_tool("dpkg-deb");
    let node = binary(Program::Node).expect("build canopy-node");
    let coordinator = binary(Program::Coordinator).expect("build canopy-coordinator");
    let prebuilt = node.parent().expect("the binaries' directory");
    assert_eq!(coordinator.parent(), Some(prebuilt));
    let commit_time = last_commit_time();
    let epoch = commit_time.unwrap_or(FALLBACK_EPOCH);
    let deb = dpkg_deb.is_some() && deb_arch().is_some();

    let tmp = tempfile::tempdir().expect("temp dir");
    let first = tmp.path().join("first");
    // The default SOURCE_DATE_EPOCH (the last commit's time) where there is git history.
    let default_epoch = if commit_time.is_some() {
        None
    } else {
        Some(FALLBACK_EPOCH)
    };
    let said = release_build(prebuilt, &first, default_epoch, deb);
    eprintln!("release/build:\n{said}");
    check_checksums(&sha256sum, &first);
    let triple = archive_triple(&first);
    let expected = if deb { 4 } else { 2 };
    assert_eq!(names(&first).len(), expected + 1, "{:?}", names(&first));

    let unpacked = tmp.path().join("node-archive");
    std::fs::create_dir(&unpacked).expect("an empty directory");
    let unpacked_node = check_archive(&first, "canopy-node", &triple, epoch, &unpacked);
    check_unpacked_node(&unpacked_node, &tmp.path().join("node-run"));

    let unpacked = tmp.path().join("coordinator-archive");
    std::fs::create_dir(&unpacked).expect("an empty directory");
    let unpacked_coordinator =
        check_archive(&first, "canopy-coordinator", &triple, epoch, &unpacked);
    check_version(&unpacked_coordinator, "canopy-coordinator", tmp.path());

    if let (Some(dpkg_deb), Some(arch)) = (&dpkg_deb, deb_arch()) {
        for name in ["canopy-node", "canopy-coordinator"] {
            check_deb(dpkg_deb, &first, name, arch, &tmp.path().join("debs"));
        }
    }

    let second = tmp.path().join("second");
    release_build(prebuilt, &second, Some(epoch), deb);
    assert_identical(&first, &second);
}

/// `shellcheck` finds nothing in `release/build` and the packages' maintainer scripts.
#[test]
fn release_scripts_pass_shellcheck() {
    let Some(shellcheck) = deploy_tool("shellcheck") else {
        return;
    };
    let release = repo_root().join("release");
    let mut scripts = vec![release.join("build")];
    scripts.extend(
        ["postinst", "prerm", "postrm"]
            .iter()
            .map(|s| release.join("debian").join(s)),
    );
    let mut command = Command::new(shellcheck);
    command.args(&scripts);
    succeed(command, Duration::from_secs(120));
    eprintln!("shellcheck: {} release scripts clean", scripts.len());
}

/// The release workflow's matrix builds exactly the targets of `release/README.md`'s table,
/// each of which `release/build` knows how to package.
#[test]
fn release_workflow_builds_every_documented_target() {
    let root = repo_root();
    let readme = read_text(&root.join("release").join("README.md"));
    let table = readme
        .split("## Targets")
        .nth(1)
        .expect("release/README.md has a Targets section");
    let documented: BTreeSet<&str> = table
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .collect();
    let workflow = read_text(&root.join(".github").join("workflows").join("release.yml"));
    let built: BTreeSet<&str> = workflow
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- target: "))
        .map(str::trim)
        .collect();
    let supported = BTreeSet::from([
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
        "x86_64-pc-windows-msvc",
    ]);
    assert_eq!(documented, supported, "release/README.md's targets");
    assert_eq!(built, supported, ".github/workflows/release.yml's matrix");
    assert!(
        workflow.contains("release/build --target"),
        "the workflow runs release/build"
    );
    assert!(
        workflow.contains("tags: [\"v*\"]"),
        "the workflow runs on v* tags"
    );
}
