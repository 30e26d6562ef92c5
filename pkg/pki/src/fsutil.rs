//! Small file helpers: atomic writes with modes, optional reads, PEM encoding.
//!
//! Every file this crate writes goes through [`write_atomic`], so a crash never leaves a
//! half-written key or kubeconfig behind and a secret is never readable by others, not even
//! for the moment between create and chmod.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::error::{Error, Result};

/// Mode for directories holding PKI material: only the owner may list them.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode for private keys and other secrets.
pub(crate) const SECRET_FILE_MODE: u32 = 0o600;
/// Mode for certificates, which are public.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;

/// Creates `dir` and its missing parents with `mode` (existing directories are left alone,
/// so we never tighten or loosen what an operator set up).
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Reads a file, returning `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a file that must exist.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `data` to `path` atomically: a temp file in the same directory is created with
/// `mode`, written, fsynced, chmodded (the umask may have narrowed the create mode) and renamed
/// over `path`; then the directory is fsynced so the rename survives a crash. Missing parent
/// directories are created with `dir_mode`.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32, dir_mode: u32) -> Result<()> {
    let parent = path.parent().unwrap_or_else(|| Path::new(""));
    ensure_dir(parent, dir_mode)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{file_name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let wrap = |source: io::Error| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let result = write_tmp(&tmp, data, mode).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&tmp);
        return Err(wrap(e));
    }
    sync_dir(parent);
    Ok(())
}

fn write_tmp(tmp: &PathBuf, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // Some filesystems refuse fsync on directories; the data itself is already synced, so
    // this only narrows the window in which a crash could undo the rename.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "fsync of directory failed");
    }
}

/// Encodes DER as PEM with 64-column lines, as OpenSSL and Go write it.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Returns the DER of the first certificate in `pem`.
pub(crate) fn first_cert_der(pem: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut reader = pem;
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(Error::ParseCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        }),
        None => Err(Error::ParseCertificate {
            what: what.to_string(),
            reason: "no CERTIFICATE block in PEM".to_string(),
        }),
    }
}

/// Returns the PKCS#8 DER of the first private key in `pem`.
pub(crate) fn pkcs8_key_der(pem: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut reader = pem;
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der))) => {
            Ok(der.secret_pkcs8_der().to_vec())
        }
        Ok(Some(_)) => Err(Error::ParseKey {
            what: what.to_string(),
            reason: "not a PKCS#8 (\"PRIVATE KEY\") key".to_string(),
        }),
        Ok(None) => Err(Error::ParseKey {
            what: what.to_string(),
            reason: "no private key block in PEM".to_string(),
        }),
        Err(e) => Err(Error::ParseKey {
            what: what.to_string(),
            reason: e.to_string(),
        }),
    }
}
