//! `/etc/distro/registries.yaml` in k3s's format, rendered for containerd 1.6.
//!
//! k3s's file has `mirrors:` (registry host → endpoints, tried in order) and `configs:`
//! (endpoint host → auth and TLS). containerd 1.6 reads mirrors and TLS from a `config_path`
//! directory of `<host>/hosts.toml` files, and credentials only from the CRI plugin's
//! `registry.configs."<host>".auth` table, so both are produced here.
//!
//! # Limits
//! - The `*` wildcard mirror and `rewrite` rules are not rendered (containerd 1.6 has neither
//!   `_default` hosts nor rewrites); they are logged and skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The parsed file.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct Registries {
    /// Registry host (`docker.io`) → its mirrors.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host (`mirror.example:5000`) → auth and TLS.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// One registry's mirrors.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct Mirror {
    /// Endpoint URLs, tried in order before the registry itself.
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Repository rewrites (not supported by containerd 1.6; skipped).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Auth and TLS of one endpoint host.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct RegistryConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// Registry credentials, as in k3s.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct Auth {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// base64 `user:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// An identity token.
    #[serde(default)]
    pub identitytoken: Option<String>,
}

/// TLS settings of an endpoint, as in k3s.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct Tls {
    /// Client certificate.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Client key.
    #[serde(default)]
    pub key_file: Option<String>,
    /// CA bundle.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Skip server certificate verification.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Registries {
    /// Parses the YAML text.
    ///
    /// # Errors
    /// The YAML error, naming line and field.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        serde_yaml::from_str(text)
    }

    /// The `hosts.toml` files: (registry host directory name, file text).
    pub fn hosts_files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (registry, mirror) in &self.mirrors {
            if registry == "*" {
                tracing::warn!("registries.yaml: the \"*\" mirror is not supported with containerd 1.6; skipped");
                continue;
            }
            if !mirror.rewrite.is_empty() {
                tracing::warn!(%registry, "registries.yaml: rewrite is not supported with containerd 1.6; skipped");
            }
            let mut text = format!("server = {}\n", quote(&default_server(registry)));
            for endpoint in &mirror.endpoint {
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("https://{endpoint}")
                };
                text.push_str(&format!("\n[host.{}]\n", quote(&url)));
                text.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
                if let Some(tls) = self
                    .configs
                    .get(&url_host(&url))
                    .and_then(|c| c.tls.as_ref())
                {
                    text.push_str(&tls_lines(tls));
                }
            }
            // TLS of the registry itself, when configured.
            if let Some(tls) = self.configs.get(registry).and_then(|c| c.tls.as_ref()) {
                text.push_str(&format!("\n[host.{}]\n", quote(&default_server(registry))));
                text.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
                text.push_str(&tls_lines(tls));
            }
            out.push((registry.clone(), text));
        }
        // Configs for hosts without mirrors still need their TLS settings.
        for (host, cfg) in &self.configs {
            if self.mirrors.contains_key(host) || host == "*" {
                continue;
            }
            if let Some(tls) = &cfg.tls {
                let mut text = format!("server = {}\n", quote(&default_server(host)));
                text.push_str(&format!("\n[host.{}]\n", quote(&default_server(host))));
                text.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
                text.push_str(&tls_lines(tls));
                out.push((host.clone(), text));
            }
        }
        out
    }

    /// The CRI plugin's `registry.configs` auth tables, as TOML to append to config.toml.
    pub fn auth_toml(&self) -> String {
        let mut out = String::new();
        for (host, cfg) in &self.configs {
            let Some(auth) = &cfg.auth else { continue };
            out.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]\n",
                quote(host)
            ));
            for (k, v) in [
                ("username", &auth.username),
                ("password", &auth.password),
                ("auth", &auth.auth),
                ("identitytoken", &auth.identitytoken),
            ] {
                if let Some(v) = v {
                    out.push_str(&format!("  {k} = {}\n", quote(v)));
                }
            }
        }
        out
    }

    /// Writes every `hosts.toml` under `dir` (replacing what a previous start wrote).
    ///
    /// # Errors
    /// File system errors.
    pub fn write_hosts(&self, dir: &Path) -> std::io::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        for (host, text) in self.hosts_files() {
            // `host:port` directories use the name as is; `/` never appears in a host.
            let d = dir.join(host.replace('/', "_"));
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("hosts.toml"), text)?;
        }
        Ok(())
    }
}

/// The registry's own URL: Docker Hub's API lives on another host than its name.
fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{registry}")
    }
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn tls_lines(tls: &Tls) -> String {
    let mut s = String::new();
    if let Some(ca) = &tls.ca_file {
        s.push_str(&format!("  ca = {}\n", quote(ca)));
    }
    if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
        s.push_str(&format!("  client = [[{}, {}]]\n", quote(c), quote(k)));
    }
    if tls.insecure_skip_verify {
        s.push_str("  skip_verify = true\n");
    }
    s
}

/// A TOML basic string: JSON's escapes are a subset TOML accepts.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example:5000"
      - "registry.local"
configs:
  "mirror.example:5000":
    auth:
      username: xyz
      password: "p\"w"
    tls:
      ca_file: /etc/ca.pem
      insecure_skip_verify: true
"#;

    #[test]
    fn renders_k3s_file() {
        let r = Registries::parse(K3S).unwrap();
        let files = r.hosts_files();
        // docker.io's mirrors, and the mirror host's own TLS for direct pulls from it.
        assert_eq!(files.len(), 2);
        let (host, text) = &files[0];
        assert_eq!(host, "docker.io");
        assert_eq!(files[1].0, "mirror.example:5000");
        assert!(files[1].1.contains("skip_verify = true"), "{}", files[1].1);
        assert!(
            text.starts_with("server = \"https://registry-1.docker.io\"\n"),
            "{text}"
        );
        assert!(text.contains("[host.\"https://mirror.example:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/etc/ca.pem\"\n  skip_verify = true\n"), "{text}");
        assert!(text.contains("[host.\"https://registry.local\"]"), "{text}");
        let auth = r.auth_toml();
        assert!(auth.contains("registry.configs.\"mirror.example:5000\".auth]\n  username = \"xyz\"\n  password = \"p\\\"w\"\n"), "{auth}");
    }

    #[test]
    fn empty_and_bad_files() {
        assert_eq!(Registries::parse("").unwrap(), Registries::default());
        assert!(Registries::parse("mirrors: [1, 2]").is_err());
    }
}
