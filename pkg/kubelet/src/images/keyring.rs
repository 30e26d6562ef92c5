//! Registry credentials from a pod's `imagePullSecrets`, matched to an image the way
//! upstream's credential keyring (`pkg/credentialprovider`) does.
//!
//! Each entry of a `kubernetes.io/dockerconfigjson` (`{"auths": {...}}`) or
//! `kubernetes.io/dockercfg` (the bare map) Secret is keyed by its registry location with
//! the scheme dropped (`https://reg.example.com/v1/` → `reg.example.com`). An image matches
//! a key when their ports are equal, their host names have as many dot-separated parts and
//! each part matches the key's glob (`*.example.com`), and the key's path is a prefix of the
//! image's repository path. Keys are tried most specific first (reverse lexical order, as
//! upstream). Docker Hub images also match keys for Docker Hub's other names
//! (`index.docker.io`, `registry-1.docker.io`) when no key matched them directly.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use super::reference::{Reference, DOCKER_HUB};

/// Secret type of `~/.docker/config.json` contents, under the key `.dockerconfigjson`.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// Secret type of the legacy `~/.dockercfg` contents, under the key `.dockercfg`.
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// Docker Hub's names other than `docker.io`, whose credentials serve Docker Hub images.
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// One registry login, as CRI's `AuthConfig` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// The key it was found under (for logs).
    pub server: String,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

impl Entry {
    /// `auth` (base64 `user:password`) wins over the separate fields, as upstream's
    /// `DockerConfigEntry` decoding does.
    fn credential(self) -> Credential {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|s| s.split_once(':')) {
            Some((u, p)) if !self.auth.is_empty() => Credential {
                username: u.into(),
                password: p.into(),
                server: String::new(),
            },
            _ => Credential {
                username: self.username,
                password: self.password,
                server: String::new(),
            },
        }
    }
}

/// A location split into host, port and path, without scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    host: String,
    port: String,
    path: String,
}

impl Location {
    fn parse(s: &str) -> Location {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let (hostport, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (hostport, ""),
        };
        Location {
            host: host.to_ascii_lowercase(),
            port: port.into(),
            path: path.into(),
        }
    }

    /// The key upstream files a location's credentials under: `/v1/` and `/v2/` API
    /// prefixes are dropped, and a bare `/` path means the whole registry.
    fn key(s: &str) -> String {
        let loc = Location::parse(s);
        let mut path = loc.path.as_str();
        if path.starts_with("/v1/") || path.starts_with("/v2/") {
            path = &path[3..];
        }
        let host = if loc.port.is_empty() {
            loc.host.clone()
        } else {
            format!("{}:{}", loc.host, loc.port)
        };
        if path.is_empty() || path == "/" {
            host
        } else {
            format!("{host}{path}")
        }
    }

    /// Upstream's `URLsMatch`: same port, same number of host parts each matching the
    /// glob's, and the glob's path a prefix of the target's.
    fn matches(&self, target: &Location) -> bool {
        let (glob_parts, target_parts): (Vec<&str>, Vec<&str>) = (
            self.host.split('.').collect(),
            target.host.split('.').collect(),
        );
        self.port == target.port
            && glob_parts.len() == target_parts.len()
            && target.path.starts_with(&self.path)
            && glob_parts
                .iter()
                .zip(&target_parts)
                .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
    }
}

/// `filepath.Match` for one host part: `*` any run, `?` one character, the rest literal.
fn glob_match(glob: &[u8], s: &[u8]) -> bool {
    match (glob.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&glob[1..], s) || (!s.is_empty() && glob_match(glob, &s[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&glob[1..], &s[1..]),
        (Some(g), Some(c)) if g == c => glob_match(&glob[1..], &s[1..]),
        _ => false,
    }
}

/// The credentials of a pod's pull secrets, indexed by location.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    creds: BTreeMap<String, Vec<Credential>>,
}

impl Keyring {
    /// Reads the dockerconfigjson and dockercfg Secrets among `secrets`; other types and
    /// unparsable contents are skipped (upstream logs and ignores them too).
    pub fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Keyring {
        let mut ring = Keyring::default();
        for s in secrets {
            let data = s.data.as_ref();
            let entries: Option<BTreeMap<String, Entry>> = match s.type_.as_deref() {
                Some(DOCKER_CONFIG_JSON) => data
                    .and_then(|d| d.get(".dockerconfigjson"))
                    .and_then(|b| serde_json::from_slice::<ConfigJson>(&b.0).ok())
                    .map(|c| c.auths),
                Some(DOCKER_CFG) => data
                    .and_then(|d| d.get(".dockercfg"))
                    .and_then(|b| serde_json::from_slice(&b.0).ok()),
                _ => None,
            };
            for (location, entry) in entries.into_iter().flatten() {
                ring.add(&location, entry.credential());
            }
        }
        ring
    }

    fn add(&mut self, location: &str, mut cred: Credential) {
        let key = Location::key(location);
        cred.server = key.clone();
        self.creds.entry(key).or_default().push(cred);
    }

    /// Whether no credential is known.
    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }

    /// The credentials to try for `image`, most specific location first; empty when none
    /// applies (the pull is anonymous).
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let repo = Reference::parse(image).repository();
        let target = Location::parse(&repo);
        let mut out: Vec<Credential> = self
            .creds
            .iter()
            .rev()
            .filter(|(k, _)| Location::parse(k).matches(&target))
            .flat_map(|(_, c)| c.iter().cloned())
            .collect();
        if out.is_empty() && target.host == DOCKER_HUB && target.port.is_empty() {
            for alias in DOCKER_HUB_ALIASES {
                let alias_target = Location {
                    host: alias.into(),
                    ..target.clone()
                };
                out.extend(
                    self.creds
                        .iter()
                        .rev()
                        .filter(|(k, _)| Location::parse(k).matches(&alias_target))
                        .flat_map(|(_, c)| c.iter().cloned()),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, key: &str, body: serde_json::Value) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(serde_json::to_vec(&body).unwrap()),
            )])),
            ..Default::default()
        }
    }

    fn users(ring: &Keyring, image: &str) -> Vec<String> {
        ring.lookup(image).into_iter().map(|c| c.username).collect()
    }

    #[test]
    fn keys_drop_scheme_and_api_prefixes() {
        for (loc, key) in [
            ("https://index.docker.io/v1/", "index.docker.io"),
            ("http://reg.example.com:5000", "reg.example.com:5000"),
            ("reg.example.com/team/", "reg.example.com/team/"),
            ("https://reg.example.com/v2/team", "reg.example.com/team"),
            ("REG.example.com/", "reg.example.com"),
        ] {
            assert_eq!(Location::key(loc), key, "{loc}");
        }
    }

    #[test]
    fn matches_as_upstream_keyring() {
        let auth = |u: &str| serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw"))});
        let ring = Keyring::from_secrets([
            &secret(
                DOCKER_CONFIG_JSON,
                ".dockerconfigjson",
                serde_json::json!({"auths": {
                    "https://index.docker.io/v1/": auth("hub"),
                    "reg.example.com": {"username": "whole", "password": "pw"},
                    "reg.example.com/team": auth("team"),
                    "*.wild.example.com": auth("wild"),
                    "127.0.0.1:5000": auth("local"),
                }}),
            ),
            &secret(
                DOCKER_CFG,
                ".dockercfg",
                serde_json::json!({"legacy.example.com": auth("legacy")}),
            ),
            &secret("Opaque", "x", serde_json::json!({})),
        ]);
        assert_eq!(users(&ring, "busybox"), ["hub"]);
        assert_eq!(users(&ring, "docker.io/library/busybox:1"), ["hub"]);
        assert_eq!(users(&ring, "reg.example.com/other/app:1"), ["whole"]);
        assert_eq!(
            users(&ring, "reg.example.com/team/app"),
            ["team", "whole"],
            "most specific first"
        );
        assert_eq!(users(&ring, "a.wild.example.com/x"), ["wild"]);
        assert!(
            users(&ring, "a.b.wild.example.com/x").is_empty(),
            "a glob part never spans dots"
        );
        assert_eq!(users(&ring, "127.0.0.1:5000/x"), ["local"]);
        assert!(users(&ring, "127.0.0.1:5001/x").is_empty(), "ports differ");
        assert!(users(&ring, "127.0.0.1/x").is_empty(), "port missing");
        assert_eq!(users(&ring, "legacy.example.com/x"), ["legacy"]);
        assert!(users(&ring, "quay.io/x/y").is_empty());
        let c = &ring.lookup("reg.example.com/team/app")[0];
        assert_eq!(
            (c.password.as_str(), c.server.as_str()),
            ("pw", "reg.example.com/team")
        );
    }

    #[test]
    fn docker_hub_aliases() {
        let ring = Keyring::from_secrets([&secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            serde_json::json!({"auths": {"registry-1.docker.io": {"username": "r1", "password": "p"}}}),
        )]);
        assert_eq!(users(&ring, "nginx:1.25"), ["r1"]);
        assert!(users(&ring, "reg.example.com/nginx").is_empty());
    }
}
