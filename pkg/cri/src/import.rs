//! Air-gap image import: every OCI image-layout or docker-archive tarball in
//! `<data-dir>/agent/images/` is loaded into containerd (namespace `k8s.io`, where CRI looks),
//! at start and whenever a file appears or changes ([`Importer::run`] polls the directory).
//!
//! # Design
//! containerd 1.6 has no Transfer service, so this does what `ctr images import` does with
//! the content, leases and images services: a tarball is read twice on a blocking thread
//! (first to hash every entry and parse the small JSON documents, then to stream only the
//! blobs containerd lacks), under a lease so containerd's garbage collector cannot take the
//! blobs before an image references them. Blobs carry containerd's `gc.ref` labels so an
//! image keeps its manifests, config and layers alive. Nothing is unpacked here: containerd
//! 1.6's CRI unpacks an image into the snapshotter on first use when its snapshot is missing.
//! Each image gets its tag and its `repo@digest` name, as a CRI pull would create.
//!
//! Imports are remembered in a state file next to containerd's data (file name → size,
//! mtime, sha256 and image names), so unchanged tarballs are skipped without reading them,
//! unless containerd lost their images (e.g. its root was wiped).
//!
//! # Limits
//! - Tarballs may be plain or gzip-compressed; zstd and lz4 (which k3s also accepts) are not.
//! - Docker archives' legacy v1 layouts (no `manifest.json`) are not supported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1 as ctrd;
use containerd_client::types::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataValue;

use crate::{Cri, Error};

/// The containerd namespace CRI uses.
pub const NAMESPACE: &str = "k8s.io";

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// JSON documents above this size are not kept in memory while scanning (manifests and
/// configs are a few KiB).
const MAX_JSON: u64 = 4 << 20;
/// Bytes per content write message.
const CHUNK: usize = 1 << 20;

/// Why one tarball could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the file failed.
    #[error("reading: {0}")]
    Read(#[from] std::io::Error),
    /// Neither `index.json` (OCI layout) nor `manifest.json` (docker archive) is in it.
    #[error("neither an OCI image layout (index.json) nor a docker archive (manifest.json)")]
    Format,
    /// A JSON document is malformed or misses a field.
    #[error("{0}")]
    Invalid(String),
    /// A containerd call failed.
    #[error(transparent)]
    Containerd(#[from] Error),
}

/// One image found in a tarball: its names and the descriptor they point at.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundImage {
    /// Full references (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// The manifest or index the names point at.
    pub target: Descriptor,
}

/// What the first pass over a tarball learned.
#[derive(Debug, Default)]
struct Scan {
    /// sha256 of the whole file.
    file_digest: String,
    /// Path in the tarball → (digest, size, gzip?).
    entries: HashMap<String, (String, i64, bool)>,
    /// Small JSON documents by path.
    json: HashMap<String, Vec<u8>>,
}

/// A tarball's parsed plan: what to upload and which images to name.
#[derive(Debug, Default)]
struct Plan {
    images: Vec<FoundImage>,
    /// Digest → path in the tarball, for blobs to stream from it.
    from_tar: BTreeMap<String, String>,
    /// Blobs generated here (docker archives' manifests), by digest.
    generated: BTreeMap<String, Vec<u8>>,
    /// Digest → containerd GC labels.
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens a tarball, decompressing gzip when its magic says so.
fn open_tar(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.rewind()?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(
            std::io::BufReader::new(f),
        )))
    } else {
        Ok(Box::new(std::io::BufReader::new(f)))
    }
}

fn clean(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./").to_string()
}

/// First pass (blocking): hashes the file and every entry, keeps small JSON documents.
fn scan(path: &Path) -> Result<Scan, ImportError> {
    let file = std::fs::File::open(path)?;
    let mut hashing = Hashing {
        inner: std::io::BufReader::new(file),
        hash: Sha256::new(),
    };
    let mut magic = [0u8; 2];
    let mut scan = Scan::default();
    {
        // Peek through a chain so the magic bytes are hashed and still read by the decoder.
        let n = hashing.read(&mut magic)?;
        let head = std::io::Cursor::new(magic[..n].to_vec());
        let reader: Box<dyn Read + '_> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(head.chain(&mut hashing)))
        } else {
            Box::new(head.chain(&mut hashing))
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = clean(&entry.path()?);
            let size = entry.size();
            let mut hash = Sha256::new();
            let mut first = [0u8; 2];
            let mut keep = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if total == 0 && n >= 2 {
                    first.copy_from_slice(&buf[..2]);
                }
                hash.update(&buf[..n]);
                if size <= MAX_JSON {
                    keep.extend_from_slice(&buf[..n]);
                }
                total += n as u64;
            }
            let digest = format!("sha256:{}", hex::encode(hash.finalize()));
            if size <= MAX_JSON && (keep.first() == Some(&b'{') || name.ends_with(".json")) {
                scan.json.insert(name.clone(), keep);
            }
            scan.entries
                .insert(name, (digest, total as i64, first == [0x1f, 0x8b]));
        }
    }
    // The rest of the file (tar padding) counts toward its digest too.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    scan.file_digest = format!("sha256:{}", hex::encode(hashing.hash.finalize()));
    Ok(scan)
}

/// Normalises a reference as Docker does: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(name: &str) -> String {
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), r.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    let last = rest.rsplit('/').next().unwrap_or(&rest);
    let tagged = last.contains(':') || rest.contains('@');
    format!("{first}/{rest}{}", if tagged { "" } else { ":latest" })
}

/// The repository part of a reference (no tag, no digest).
fn repository(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

fn parse_json(scan: &Scan, path: &str) -> Result<Value, ImportError> {
    let bytes = scan
        .json
        .get(path)
        .ok_or_else(|| ImportError::Invalid(format!("{path} missing or too large")))?;
    serde_json::from_slice(bytes).map_err(|e| ImportError::Invalid(format!("{path}: {e}")))
}

fn descriptor(v: &Value) -> Result<Descriptor, ImportError> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Descriptor {
        media_type: s("mediaType").unwrap_or_default(),
        digest: s("digest")
            .ok_or_else(|| ImportError::Invalid(format!("descriptor without digest: {v}")))?,
        size: v.get("size").and_then(Value::as_i64).unwrap_or_default(),
        annotations: v
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Second step (pure): what to upload and which images to create.
fn plan(scan: &Scan) -> Result<Plan, ImportError> {
    let mut plan = Plan::default();
    if scan.json.contains_key("index.json") {
        plan_oci(scan, &mut plan)?;
    } else if scan.json.contains_key("manifest.json") {
        plan_docker(scan, &mut plan)?;
    } else {
        return Err(ImportError::Format);
    }
    Ok(plan)
}

fn plan_oci(scan: &Scan, plan: &mut Plan) -> Result<(), ImportError> {
    // Every blob in the layout is uploaded, after checking it matches its name.
    for (path, (digest, _, _)) in &scan.entries {
        if let Some(rest) = path.strip_prefix("blobs/") {
            let named = rest.replacen('/', ":", 1);
            if &named != digest {
                return Err(ImportError::Invalid(format!(
                    "{path} is corrupt: its content hashes to {digest}"
                )));
            }
            plan.from_tar.insert(digest.clone(), path.clone());
        }
    }
    let index = parse_json(scan, "index.json")?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in &manifests {
        let target = descriptor(m)?;
        let ann = &target.annotations;
        let name = ann.get("io.containerd.image.name").cloned().or_else(|| {
            ann.get("org.opencontainers.image.ref.name")
                .filter(|n| n.contains('/'))
                .cloned()
        });
        let Some(name) = name else {
            tracing::warn!(digest = %target.digest, "image in an OCI layout has no name annotation; skipped");
            continue;
        };
        label_children(scan, &target, plan)?;
        let name = normalize(&name);
        plan.images.push(FoundImage {
            names: vec![name],
            target,
        });
    }
    Ok(())
}

/// Adds the `gc.ref` labels of a manifest or index (and, recursively, its children present
/// in the tarball).
fn label_children(scan: &Scan, desc: &Descriptor, plan: &mut Plan) -> Result<(), ImportError> {
    let path = blob_path(&desc.digest);
    if !scan.entries.contains_key(&path) {
        return Ok(());
    }
    let doc = parse_json(scan, &path)?;
    let media = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(&desc.media_type)
        .to_string();
    let mut labels = BTreeMap::new();
    if media == MEDIA_OCI_INDEX || media == MEDIA_DOCKER_LIST || doc.get("manifests").is_some() {
        for (i, m) in doc
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let child = descriptor(m)?;
            labels.insert(
                format!("containerd.io/gc.ref.content.m.{i}"),
                child.digest.clone(),
            );
            label_children(scan, &child, plan)?;
        }
    } else {
        if let Some(c) = doc.get("config") {
            labels.insert(
                "containerd.io/gc.ref.content.config".into(),
                descriptor(c)?.digest,
            );
        }
        for (i, l) in doc
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                descriptor(l)?.digest,
            );
        }
    }
    plan.labels.insert(desc.digest.clone(), labels);
    Ok(())
}

fn plan_docker(scan: &Scan, plan: &mut Plan) -> Result<(), ImportError> {
    let manifest = parse_json(scan, "manifest.json")?;
    for item in manifest.as_array().into_iter().flatten() {
        let config_path = item
            .get("Config")
            .and_then(Value::as_str)
            .ok_or_else(|| ImportError::Invalid("manifest.json: an entry has no Config".into()))?;
        let entry = |p: &str| {
            scan.entries.get(p).cloned().ok_or_else(|| {
                ImportError::Invalid(format!(
                    "manifest.json names {p}, which is not in the archive"
                ))
            })
        };
        let (config_digest, config_size, _) = entry(config_path)?;
        plan.from_tar
            .insert(config_digest.clone(), config_path.to_string());
        let mut layers = Vec::new();
        let mut labels = BTreeMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest.clone(),
        );
        for (i, l) in item
            .get("Layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = l.as_str().ok_or_else(|| {
                ImportError::Invalid("manifest.json: a layer is not a string".into())
            })?;
            let (digest, size, gz) = entry(p)?;
            plan.from_tar.insert(digest.clone(), p.to_string());
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                digest.clone(),
            );
            layers.push(serde_json::json!({
                "mediaType": if gz { MEDIA_OCI_LAYER_GZIP } else { MEDIA_OCI_LAYER },
                "digest": digest,
                "size": size,
            }));
        }
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| ImportError::Invalid(e.to_string()))?;
        let digest = sha256(&bytes);
        let target = Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: bytes.len() as i64,
            annotations: HashMap::new(),
        };
        plan.generated.insert(digest.clone(), bytes);
        plan.labels.insert(digest, labels);
        let names: Vec<String> = item
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(normalize)
            .collect();
        if names.is_empty() {
            tracing::warn!(config = %config_digest, "docker archive image without RepoTags; skipped");
            continue;
        }
        plan.images.push(FoundImage { names, target });
    }
    Ok(())
}

fn request<T>(msg: T, lease: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        MetadataValue::from_static(NAMESPACE),
    );
    if let Some(v) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
        r.metadata_mut().insert("containerd-lease", v);
    }
    r
}

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |source| Error::Rpc { op, source }
}

/// Messages from the blocking tar reader to the async writer.
enum Piece {
    Begin { digest: String, size: i64 },
    Data(Vec<u8>),
    End,
}

/// Streams the wanted entries of the tarball (blocking), in tar order.
fn stream_entries(
    path: &Path,
    wanted: HashMap<String, String>,
    tx: mpsc::Sender<Piece>,
) -> Result<(), ImportError> {
    let mut archive = tar::Archive::new(open_tar(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = clean(&entry.path()?);
        let Some(digest) = wanted.get(&name) else {
            continue;
        };
        let size = entry.size() as i64;
        if tx
            .blocking_send(Piece::Begin {
                digest: digest.clone(),
                size,
            })
            .is_err()
        {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(&mut entry, &mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if tx.blocking_send(Piece::Data(buf)).is_err() {
                return Ok(());
            }
        }
        if tx.blocking_send(Piece::End).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One blob upload in flight: a request channel and the task draining containerd's replies.
struct Upload {
    tx: mpsc::Sender<ctrd::WriteContentRequest>,
    call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
    digest: String,
    size: i64,
    offset: i64,
}

impl Upload {
    fn start(cri: &Cri, lease: &str, digest: &str, size: i64) -> Upload {
        // Two messages in flight keep the socket busy without buffering a large layer.
        let (tx, rx) = mpsc::channel(2);
        let mut client = cri.containerd().content();
        let req = request(tokio_stream::wrappers::ReceiverStream::new(rx), Some(lease));
        let call = tokio::spawn(async move {
            let mut replies = client.write(req).await?.into_inner();
            while replies.message().await?.is_some() {}
            Ok(())
        });
        Upload {
            tx,
            call,
            digest: digest.to_string(),
            size,
            offset: 0,
        }
    }

    fn message(&self, action: ctrd::WriteAction, data: Vec<u8>) -> ctrd::WriteContentRequest {
        ctrd::WriteContentRequest {
            action: action as i32,
            r#ref: format!("distro-import-{}", self.digest),
            total: self.size,
            expected: self.digest.clone(),
            offset: self.offset,
            data,
            labels: HashMap::new(),
        }
    }

    async fn data(&mut self, data: Vec<u8>) {
        let n = data.len() as i64;
        let m = self.message(ctrd::WriteAction::Write, data);
        // A closed channel means containerd ended the call; `finish` reports why.
        let _ = self.tx.send(m).await;
        self.offset += n;
    }

    async fn finish(self) -> Result<(), Error> {
        let m = self.message(ctrd::WriteAction::Commit, Vec::new());
        let _ = self.tx.send(m).await;
        drop(self.tx);
        match self.call.await {
            Ok(Ok(())) => Ok(()),
            // Someone (an earlier import, a pull) stored it meanwhile.
            Ok(Err(s)) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Ok(Err(s)) => Err(Error::Rpc {
                op: "content Write",
                source: s,
            }),
            Err(e) => Err(Error::Rpc {
                op: "content Write",
                source: tonic::Status::internal(e.to_string()),
            }),
        }
    }
}

async fn blob_exists(cri: &Cri, digest: &str) -> Result<bool, Error> {
    let req = request(
        ctrd::InfoRequest {
            digest: digest.into(),
        },
        None,
    );
    match cri.containerd().content().info(req).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(Error::Rpc {
            op: "content Info",
            source: s,
        }),
    }
}

async fn image_exists(cri: &Cri, name: &str) -> Result<bool, Error> {
    let req = request(ctrd::GetImageRequest { name: name.into() }, None);
    match cri.containerd().images().get(req).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(Error::Rpc {
            op: "images Get",
            source: s,
        }),
    }
}

/// Imports one tarball; returns the images it named.
///
/// # Errors
/// Unreadable or malformed tarballs, and containerd's refusals.
pub async fn import_tarball(
    cri: &Cri,
    path: &Path,
) -> Result<(String, Vec<FoundImage>), ImportError> {
    let p = path.to_path_buf();
    let scan = tokio::task::spawn_blocking(move || scan(&p))
        .await
        .map_err(|e| ImportError::Invalid(format!("scanner task: {e}")))??;
    let plan = plan(&scan)?;

    // A lease holds everything written until the images reference it; it expires by itself
    // if distro dies halfway.
    let lease_id = format!("distro-import-{}", &scan.file_digest[7..19]);
    let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut leases = cri.containerd().leases();
    let create = ctrd::CreateRequest {
        id: lease_id.clone(),
        labels: [("containerd.io/gc.expire".to_string(), expire)]
            .into_iter()
            .collect(),
    };
    match leases.create(request(create, None)).await {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => {
            return Err(Error::Rpc {
                op: "leases Create",
                source: s,
            }
            .into())
        }
    }
    let result = write_all(cri, path, &plan, &lease_id).await;
    let delete = ctrd::DeleteRequest {
        id: lease_id,
        sync: false,
    };
    if let Err(s) = leases.delete(request(delete, None)).await {
        tracing::debug!(error = %s, "deleting the import lease");
    }
    result?;
    Ok((scan.file_digest, plan.images))
}

async fn write_all(cri: &Cri, path: &Path, plan: &Plan, lease: &str) -> Result<(), ImportError> {
    // Blobs containerd lacks, streamed from the tarball.
    let mut wanted = HashMap::new();
    for (digest, tar_path) in &plan.from_tar {
        if !blob_exists(cri, digest).await? {
            wanted.insert(tar_path.clone(), digest.clone());
        }
    }
    if !wanted.is_empty() {
        let (tx, mut rx) = mpsc::channel(4);
        let p = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || stream_entries(&p, wanted, tx));
        let mut upload: Option<Upload> = None;
        let mut failed = None;
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Begin { digest, size } => {
                    upload = Some(Upload::start(cri, lease, &digest, size))
                }
                Piece::Data(d) => {
                    if let Some(u) = upload.as_mut() {
                        u.data(d).await;
                    }
                }
                Piece::End => {
                    if let Some(u) = upload.take() {
                        if let Err(e) = u.finish().await {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        drop(rx);
        reader
            .await
            .map_err(|e| ImportError::Invalid(format!("reader task: {e}")))??;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    // Generated manifests, from memory.
    for (digest, bytes) in &plan.generated {
        if blob_exists(cri, digest).await? {
            continue;
        }
        let mut u = Upload::start(cri, lease, digest, bytes.len() as i64);
        for chunk in bytes.chunks(CHUNK) {
            u.data(chunk.to_vec()).await;
        }
        u.finish().await?;
    }
    // GC labels, so images keep their blobs.
    for (digest, labels) in &plan.labels {
        let info = ctrd::Info {
            digest: digest.clone(),
            labels: labels.clone().into_iter().collect(),
            ..Default::default()
        };
        let mask = prost_types::FieldMask {
            paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
        };
        let req = request(
            ctrd::UpdateRequest {
                info: Some(info),
                update_mask: Some(mask),
            },
            Some(lease),
        );
        cri.containerd()
            .content()
            .update(req)
            .await
            .map_err(rpc("content Update"))?;
    }
    // Image records: each tag, and `repo@digest` as a CRI pull creates.
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    for img in &plan.images {
        let mut names: Vec<String> = img.names.clone();
        for n in &img.names {
            let by_digest = format!("{}@{}", repository(n), img.target.digest);
            if !names.contains(&by_digest) {
                names.push(by_digest);
            }
        }
        for name in names {
            let image = ctrd::Image {
                name: name.clone(),
                labels: [("io.cri-containerd.image".to_string(), "managed".to_string())]
                    .into_iter()
                    .collect(),
                target: Some(img.target.clone()),
                created_at: Some(now),
                updated_at: Some(now),
            };
            let create = ctrd::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            };
            match cri
                .containerd()
                .images()
                .create(request(create, Some(lease)))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    let mask = prost_types::FieldMask {
                        paths: vec!["target".into(), "labels".into()],
                    };
                    let update = ctrd::UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(mask),
                        source_date_epoch: None,
                    };
                    cri.containerd()
                        .images()
                        .update(request(update, Some(lease)))
                        .await
                        .map_err(rpc("images Update"))?;
                }
                Err(s) => {
                    return Err(Error::Rpc {
                        op: "images Create",
                        source: s,
                    }
                    .into())
                }
            }
            tracing::info!(image = %name, digest = %img.target.digest, "imported");
        }
    }
    Ok(())
}

/// What the state file remembers of one tarball.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    size: u64,
    mtime_ns: i128,
    digest: Option<String>,
    names: Vec<String>,
    error: Option<String>,
}

/// Imports the tarballs of a directory and remembers what it did.
#[derive(Debug, Clone)]
pub struct Importer {
    cri: Cri,
    dir: PathBuf,
    state_file: PathBuf,
}

/// The outcome of one pass over the directory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pass {
    /// Image names imported in this pass.
    pub imported: Vec<String>,
    /// Files skipped as already imported (or unchanged since they failed).
    pub skipped: usize,
    /// Files that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

impl Importer {
    /// An importer of `dir` (`<data-dir>/agent/images`), remembering imports in `state_file`
    /// (kept beside containerd's root, so both go together).
    pub fn new(cri: Cri, dir: PathBuf, state_file: PathBuf) -> Importer {
        Importer {
            cri,
            dir,
            state_file,
        }
    }

    fn load(&self) -> BTreeMap<String, Record> {
        std::fs::read(&self.state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, state: &BTreeMap<String, Record>) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: self.state_file.clone(),
            source,
        };
        let tmp = self.state_file.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.state_file).map_err(io)
    }

    /// One pass: imports new or changed tarballs, skips the rest.
    ///
    /// # Errors
    /// The directory or the state file cannot be read or written; a containerd error while
    /// checking what exists. Broken tarballs are reported in [`Pass::failed`], not here.
    pub async fn pass(&self) -> Result<Pass, Error> {
        let mut state = self.load();
        let mut out = Pass::default();
        let mut files = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let Ok(meta) = e.metadata() else { continue };
                    if name.starts_with('.') || !meta.is_file() {
                        continue;
                    }
                    files.push((name, e.path(), meta));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(Error::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changed = false;
        for (name, path, meta) in files {
            let (size, mtime) = (meta.len(), mtime_ns(&meta));
            if let Some(r) = state.get(&name) {
                if r.size == size && r.mtime_ns == mtime {
                    let mut present = r.error.is_none();
                    for n in &r.names {
                        present = present && image_exists(&self.cri, n).await?;
                    }
                    if present || r.error.is_some() {
                        out.skipped += 1;
                        continue;
                    }
                }
            }
            changed = true;
            match import_tarball(&self.cri, &path).await {
                Ok((digest, images)) => {
                    let names: Vec<String> = images.iter().flat_map(|i| i.names.clone()).collect();
                    out.imported.extend(names.iter().cloned());
                    state.insert(
                        name,
                        Record {
                            size,
                            mtime_ns: mtime,
                            digest: Some(digest),
                            names,
                            error: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "image import failed");
                    out.failed.push((path, e.to_string()));
                    state.insert(
                        name,
                        Record {
                            size,
                            mtime_ns: mtime,
                            digest: None,
                            names: vec![],
                            error: Some(e.to_string()),
                        },
                    );
                }
            }
        }
        // Forget files that are gone, so a file put back is imported again.
        let before = state.len();
        let present: HashSet<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        state.retain(|k, _| present.contains(k));
        if changed || state.len() != before {
            self.save(&state)?;
        }
        Ok(out)
    }

    /// Imports at once, then every `every` (a cheap directory listing) until `stop` turns
    /// true, so tarballs copied in later are picked up.
    ///
    /// # Cancel safety
    /// Runs until stopped; meant to be spawned as a task owned by the agent.
    pub async fn run(self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut delay = every;
        loop {
            match self.pass().await {
                Ok(p) if !p.imported.is_empty() || !p.failed.is_empty() => {
                    tracing::info!(
                        imported = p.imported.len(),
                        failed = p.failed.len(),
                        "air-gap images"
                    );
                    delay = every;
                }
                Ok(_) => delay = every,
                Err(e) => {
                    // containerd restarting, most likely: back off, capped.
                    delay = (delay * 2).min(every * 8);
                    tracing::warn!(error = %e, retry_in = ?delay, "air-gap image import");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            normalize("rancher/mirrored-pause:3.6"),
            "docker.io/rancher/mirrored-pause:3.6"
        );
        assert_eq!(
            normalize("distro.test/busybox:latest"),
            "distro.test/busybox:latest"
        );
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(repository("localhost:5000/x:1"), "localhost:5000/x");
        assert_eq!(
            repository("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
    }

    fn tarball(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("img.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn docker_archive_becomes_an_oci_manifest_with_gc_labels() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = b"not really a tar, but hashed as one";
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["busybox:latest"],"Layers":["l1/layer.tar"]}]"#;
        let path = tarball(
            dir.path(),
            &[
                ("abc.json", config),
                ("l1/layer.tar", layer),
                ("manifest.json", manifest),
            ],
        );
        let plan = plan(&scan(&path).unwrap()).unwrap();
        assert_eq!(plan.images.len(), 1);
        assert_eq!(
            plan.images[0].names,
            vec!["docker.io/library/busybox:latest"]
        );
        let target = &plan.images[0].target;
        assert_eq!(target.media_type, MEDIA_OCI_MANIFEST);
        let doc: Value = serde_json::from_slice(&plan.generated[&target.digest]).unwrap();
        assert_eq!(doc["config"]["digest"], sha256(config));
        assert_eq!(doc["layers"][0]["digest"], sha256(layer));
        assert_eq!(doc["layers"][0]["mediaType"], MEDIA_OCI_LAYER);
        assert_eq!(
            plan.labels[&target.digest]["containerd.io/gc.ref.content.l.0"],
            sha256(layer)
        );
        assert_eq!(plan.from_tar[&sha256(config)], "abc.json");
    }

    #[test]
    fn corrupt_oci_blob_and_unknown_format_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = tarball(
            dir.path(),
            &[
                ("index.json", b"{\"manifests\":[]}"),
                ("blobs/sha256/00", b"x"),
            ],
        );
        assert!(matches!(
            plan(&scan(&path).unwrap()),
            Err(ImportError::Invalid(_))
        ));
        let path = tarball(dir.path(), &[("hello.txt", b"hi")]);
        assert!(matches!(
            plan(&scan(&path).unwrap()),
            Err(ImportError::Format)
        ));
    }
}
