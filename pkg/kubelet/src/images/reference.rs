//! Image references normalised as the Docker reference library does (`busybox` →
//! `docker.io/library/busybox:latest`): the keyring matches credentials against the
//! normalised repository, and the image GC recognises the pause image among CRI's repo tags,
//! which containerd always reports normalised.

/// The registry Docker Hub images live on, as containerd names it.
pub const DOCKER_HUB: &str = "docker.io";

/// An image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `registry.example.com:5000`, ...
    pub domain: String,
    /// The repository path under the domain (`library/busybox`).
    pub path: String,
    /// The tag, if any (`latest` is added only by [`Reference::normalized`]).
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `image` as Docker does: the first component is a registry when it contains a
    /// `.` or a `:` or is `localhost`; otherwise the image is on Docker Hub, whose one-part
    /// names live under `library/`. `index.docker.io` is Docker Hub's old name.
    pub fn parse(image: &str) -> Reference {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        let (rest, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        let (domain, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Reference {
            domain,
            path,
            tag,
            digest,
        }
    }

    /// `domain/path`: what the keyring matches credentials against (upstream's
    /// `ParseImageName` repository).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The fully qualified reference (`latest` when neither tag nor digest is given), as
    /// containerd's repo tags and digests show it.
    pub fn normalized(&self) -> String {
        let mut out = self.repository();
        match (&self.tag, &self.digest) {
            (None, None) => out.push_str(":latest"),
            (tag, digest) => {
                if let Some(t) = tag {
                    out.push(':');
                    out.push_str(t);
                }
                if let Some(d) = digest {
                    out.push('@');
                    out.push_str(d);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_as_docker() {
        for (image, repo, full) in [
            (
                "busybox",
                "docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            (
                "rancher/mirrored-pause:3.6",
                "docker.io/rancher/mirrored-pause",
                "docker.io/rancher/mirrored-pause:3.6",
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox",
                "docker.io/library/busybox:1",
            ),
            (
                "127.0.0.1:5000/app/web:v2",
                "127.0.0.1:5000/app/web",
                "127.0.0.1:5000/app/web:v2",
            ),
            ("localhost/x", "localhost/x", "localhost/x:latest"),
            (
                "reg.example.com:443/a/b@sha256:abc",
                "reg.example.com:443/a/b",
                "reg.example.com:443/a/b@sha256:abc",
            ),
        ] {
            let r = Reference::parse(image);
            assert_eq!(r.repository(), repo, "{image}");
            assert_eq!(r.normalized(), full, "{image}");
        }
    }
}
