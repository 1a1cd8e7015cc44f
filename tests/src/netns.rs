//! A home-network lab in Linux network namespaces, for NAT tests: a "public" segment (a bridge
//! at 10.99.0.1/24, where the coordinator runs) and two homes, each a host behind its own
//! router namespace that masquerades with iptables and drops what its home did not ask for, as a
//! home router does. Built by the test
//! that needs it (as root) and torn down when it drops.
//!
//! ```text
//!   home 0: 192.168.1.2 ── router 0 (192.168.1.1 | 10.99.0.2) ──┐
//!                                                                ├── public: 10.99.0.1
//!   home 1: 192.168.2.2 ── router 1 (192.168.2.1 | 10.99.0.3) ──┘
//! ```

use std::process::Command;

/// The public segment's address, where the coordinator listens.
pub const PUBLIC_ADDR: &str = "10.99.0.1";

/// How a home router maps a host's outgoing connections to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per host port, whoever the far end is (most home routers): a direct
    /// connection can be punched through.
    EndpointIndependent,
    /// A fresh random public port per connection (a symmetric NAT): hole punching fails and
    /// peers must go through a relay.
    PortDependent,
}

/// Why the lab cannot be built here.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Not root, or a tool is missing.
    #[error("network namespaces need root and `ip` and `iptables`: {0}")]
    Unavailable(String),
    /// A setup command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// The namespaces of one lab; deleted (with their links and rules) on drop.
pub struct NatLab {
    prefix: String,
    namespaces: Vec<String>,
}

fn run(args: &[&str]) -> Result<(), LabError> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| LabError::Unavailable(format!("{}: {e}", args[0])))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Whether this machine can build a lab (root, `ip`, `iptables`); why not, if it cannot.
pub fn available() -> Result<(), LabError> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| LabError::Unavailable(format!("id: {e}")))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err(LabError::Unavailable("not running as root".into()));
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(LabError::Unavailable(format!("`{tool}` is not installed")));
        }
    }
    Ok(())
}

impl NatLab {
    /// Builds the lab; `mappings` are the two home routers' NAT behaviours. `tag` keeps the
    /// namespace names of labs built side by side apart.
    pub fn new(tag: &str, mappings: [Mapping; 2]) -> Result<Self, LabError> {
        available()?;
        let prefix = format!("cn{}{tag}", std::process::id() % 100_000);
        let mut lab = Self {
            prefix,
            namespaces: Vec::new(),
        };
        let public = lab.add_namespace("pub")?;
        run(&["ip", "-n", &public, "link", "add", "br0", "type", "bridge"])?;
        run(&[
            "ip",
            "-n",
            &public,
            "addr",
            "add",
            &format!("{PUBLIC_ADDR}/24"),
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", &public, "link", "set", "br0", "up"])?;
        for (i, mapping) in mappings.into_iter().enumerate() {
            lab.add_home(&public, i, mapping)?;
        }
        Ok(lab)
    }

    fn add_namespace(&mut self, name: &str) -> Result<String, LabError> {
        let ns = format!("{}{name}", self.prefix);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn add_home(&mut self, public: &str, i: usize, mapping: Mapping) -> Result<(), LabError> {
        let router = self.add_namespace(&format!("r{i}"))?;
        let host = self.add_namespace(&format!("h{i}"))?;
        let port = format!("to{i}");
        let wan = format!("10.99.0.{}/24", i + 2);
        let lan_net = i + 1;
        // The router's public side, on the public bridge.
        run(&[
            "ip", "link", "add", "wan", "netns", &router, "type", "veth", "peer", "name", &port,
            "netns", public,
        ])?;
        run(&["ip", "-n", public, "link", "set", &port, "master", "br0"])?;
        run(&["ip", "-n", public, "link", "set", &port, "up"])?;
        run(&["ip", "-n", &router, "addr", "add", &wan, "dev", "wan"])?;
        run(&["ip", "-n", &router, "link", "set", "wan", "up"])?;
        // The home network: the router's private side and the host.
        run(&[
            "ip", "link", "add", "lan", "netns", &router, "type", "veth", "peer", "name", "eth0",
            "netns", &host,
        ])?;
        let gateway = format!("192.168.{lan_net}.1");
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "lan",
        ])?;
        run(&["ip", "-n", &router, "link", "set", "lan", "up"])?;
        run(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            &format!("192.168.{lan_net}.2/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &host, "link", "set", "eth0", "up"])?;
        run(&[
            "ip", "-n", &host, "route", "add", "default", "via", &gateway,
        ])?;
        // Forwarding, masquerade, and nothing in from outside that the home did not start.
        let exec = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", router.as_str()];
            full.extend_from_slice(args);
            run(&full)
        };
        exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let mut masquerade = vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if mapping == Mapping::PortDependent {
            masquerade.push("--random-fully");
        }
        exec(&masquerade)?;
        exec(&[
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            "wan",
            "-o",
            "lan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ])?;
        exec(&[
            "iptables", "-A", "FORWARD", "-i", "wan", "-o", "lan", "-j", "DROP",
        ])?;
        // Unsolicited packets to the router itself are dropped silently, as home routers do
        // (a reset would end a hole punch whose first packet arrives before the other's).
        exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "wan",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ])?;
        exec(&["iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP"])
    }

    /// The public segment's namespace.
    pub fn public(&self) -> &str {
        &self.namespaces[0]
    }

    /// Home `i`'s host namespace (0 or 1).
    pub fn home(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        command
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("tearing down the NAT lab: {e}");
            }
        }
    }
}
