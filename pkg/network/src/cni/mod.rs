//! The CNI plugin (spec 1.0.0) that containerd runs as `<bin_dir>/distro`.
//!
//! It does the work of the reference `bridge`, `host-local` and `portmap` plugins chained, as
//! k3s' flannel setup does, in one process: [`config`] is what it reads, [`ipam`] hands out
//! addresses, the private `plugin` module does ADD/DEL/CHECK over netlink, and [`types`] is
//! the JSON it writes. [`run`] is the whole program: the binary calls it when `CNI_COMMAND` is
//! set.

pub mod config;
pub mod ipam;
pub mod loopback;
mod netlink;
pub(crate) mod nft;
mod plugin;
pub(crate) mod sysctl;
pub mod types;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

pub use config::{write_conflist, NodeNetwork};

use config::NetConf;
use types::{ErrorReply, VersionReply, SUPPORTED_VERSIONS};

use crate::error::{Error, Result};

/// The `CNI_*` environment of one invocation, parsed and checked.
#[derive(Debug, Clone)]
pub struct Args {
    /// `CNI_COMMAND`: ADD, DEL, CHECK or VERSION.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (optional for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` (`K=V;K=V`), kept for logs; the plugin needs none of its keys.
    pub cni_args: String,
    /// `CNI_PATH`.
    pub path: String,
}

impl Args {
    /// Reads and checks the variables the spec requires for `CNI_COMMAND`, through `get` (the
    /// process environment in production, a table in tests).
    ///
    /// # Errors
    /// [`Error::MissingEnv`] / [`Error::InvalidEnv`] (code 4), as the reference skeleton does.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let command = get("CNI_COMMAND").ok_or(Error::MissingEnv("CNI_COMMAND"))?;
        let mut args = Args {
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            cni_args: get("CNI_ARGS").unwrap_or_default(),
            path: get("CNI_PATH").unwrap_or_default(),
            command,
        };
        match args.command.as_str() {
            "VERSION" => return Ok(args),
            "ADD" | "DEL" | "CHECK" => {}
            other => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    reason: format!("unknown command {other:?} (want ADD, DEL, CHECK or VERSION)"),
                })
            }
        }
        let required: &[(&'static str, &str)] = &[
            ("CNI_CONTAINERID", &args.container_id),
            ("CNI_IFNAME", &args.ifname),
            ("CNI_PATH", &args.path),
        ];
        for (name, value) in required {
            if value.is_empty() {
                return Err(Error::MissingEnv(name));
            }
        }
        if args.command != "DEL" && args.netns.is_none() {
            return Err(Error::MissingEnv("CNI_NETNS"));
        }
        let id = &args.container_id;
        let mut chars = id.chars();
        if !(matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(Error::InvalidEnv {
                name: "CNI_CONTAINERID",
                reason: format!("{id:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"),
            });
        }
        config::valid_ifname(&args.ifname).map_err(|reason| Error::InvalidEnv {
            name: "CNI_IFNAME",
            reason,
        })?;
        args.cni_args = args.cni_args.trim().to_string();
        Ok(args)
    }
}

/// Runs one plugin invocation: environment and stdin in, result or error JSON on stdout.
///
/// Returns the process exit code: 0 on success, 1 with the spec's error JSON otherwise.
pub fn run() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| config::CNI_VERSION.to_string());
    let outcome = read
        .map_err(|e| Error::io("reading the network configuration from", "stdin", e))
        .and_then(|_| Args::from_lookup(|k| std::env::var(k).ok()))
        .and_then(|args| dispatch(&args, &stdin));
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", error_json(&e, &version));
            ExitCode::FAILURE
        }
    }
}

/// The spec's error object for `e`: the short message in `msg`, its causes in `details`.
pub fn error_json(e: &Error, version: &str) -> serde_json::Value {
    let mut details = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        details.push(s.to_string());
        source = s.source();
    }
    serde_json::to_value(ErrorReply {
        cni_version: version.to_string(),
        code: e.cni_code(),
        msg: e.to_string(),
        details: details.join(": "),
    })
    .unwrap_or_default()
}

/// Runs the command; `Some(json)` is what to print on success.
fn dispatch(args: &Args, stdin: &[u8]) -> Result<Option<serde_json::Value>> {
    if args.command == "VERSION" {
        let reply = VersionReply {
            cni_version: config::CNI_VERSION.into(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        };
        return Ok(Some(serde_json::to_value(reply).map_err(Error::Decode)?));
    }
    if loopback::is_loopback(stdin) {
        let version = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| config::CNI_VERSION.to_string());
        return loopback::dispatch(args, &version);
    }
    let conf = NetConf::parse(stdin)?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(Error::IncompatibleVersion {
            config: conf.cni_version,
            supported: SUPPORTED_VERSIONS,
        });
    }
    match args.command.as_str() {
        "ADD" => {
            let result = plugin::add(&conf, args)?;
            Ok(Some(serde_json::to_value(result).map_err(Error::Decode)?))
        }
        "DEL" => plugin::del(&conf, args).map(|()| None),
        "CHECK" => {
            if conf.cni_version.starts_with("0.3.") {
                return Err(Error::IncompatibleVersion {
                    config: conf.cni_version,
                    supported: &["0.4.0", "1.0.0"],
                });
            }
            plugin::check(&conf, args).map(|()| None)
        }
        other => Err(Error::InvalidEnv {
            name: "CNI_COMMAND",
            reason: format!("unknown command {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_requirements_follow_the_skeleton() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        assert!(Args::from_lookup(lookup(&full)).is_ok());
        let no_netns: Vec<_> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert!(matches!(
            Args::from_lookup(lookup(&no_netns)),
            Err(Error::MissingEnv("CNI_NETNS"))
        ));
        let mut del = no_netns.clone();
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(
            Args::from_lookup(lookup(&del)).is_ok(),
            "DEL needs no netns"
        );
        let mut bad_id = full;
        bad_id[1] = ("CNI_CONTAINERID", "../etc");
        assert_eq!(
            Args::from_lookup(lookup(&bad_id)).unwrap_err().cni_code(),
            4
        );
        let mut bad_if = full;
        bad_if[3] = ("CNI_IFNAME", "a/b");
        assert_eq!(
            Args::from_lookup(lookup(&bad_if)).unwrap_err().cni_code(),
            4
        );
        assert!(Args::from_lookup(lookup(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert_eq!(
            Args::from_lookup(lookup(&[("CNI_COMMAND", "NOPE")]))
                .unwrap_err()
                .cni_code(),
            4
        );
    }

    #[test]
    fn error_json_has_code_msg_details() {
        let e = Error::io(
            "reading",
            "/x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let v = error_json(&e, "1.0.0");
        assert_eq!(v["code"], 5);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["msg"].as_str().unwrap().contains("/x"));
        assert!(!v["details"].as_str().unwrap().is_empty());
    }
}
