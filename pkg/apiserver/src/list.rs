//! List and watch over the generic storage: selectors, pagination with continue tokens,
//! resourceVersion semantics, and watch event streams with bookmarks and 410 on compaction.

use std::time::Duration;

use base64::Engine;
use distro_apimachinery::fields::FieldSelector;
use distro_apimachinery::labels::Selector;
use distro_store::{prefix_end, Event, EventKind, RangeRequest, Revision};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::request::{query_flag, Query};
use crate::resources::ResourceDef;
use crate::rest::Storage;

/// Parsed list/watch options.
#[derive(Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: Option<Selector>,
    /// `fieldSelector`.
    pub fields: Option<FieldSelector>,
    /// `limit` (0 = all).
    pub limit: usize,
    /// Decoded `continue` token.
    pub continue_token: Option<ContinueToken>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// The caller sends plain JSON: unfiltered pages of kinds served as stored may come back as
    /// stored bytes ([`ListResult::raw`]) instead of parsed objects.
    pub raw: bool,
}

/// The state a paginated list resumes from, as upstream's continue token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinueToken {
    /// The revision the first page was read at.
    pub revision: Revision,
    /// The datastore key to start from.
    pub start: String,
}

impl ContinueToken {
    /// Upstream's format: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"..."}`.
    pub fn encode(&self, prefix: &str) -> String {
        let start = self.start.strip_prefix(prefix).unwrap_or(&self.start);
        let raw = json!({"v": "meta.k8s.io/v1", "rv": self.revision, "start": start});
        base64::engine::general_purpose::URL_SAFE.encode(raw.to_string())
    }

    /// Parses a token for a list under `prefix`.
    ///
    /// # Errors
    /// 400 for a token that does not decode.
    pub fn decode(token: &str, prefix: &str) -> Result<Self> {
        let bad = || Error::BadRequest(format!("continue key is not valid: {token}"));
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(token)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if v["v"] != "meta.k8s.io/v1" {
            return Err(bad());
        }
        let revision = v["rv"].as_i64().ok_or_else(bad)?;
        let start = v["start"].as_str().ok_or_else(bad)?;
        if start.contains("..") || start.starts_with('/') {
            return Err(bad());
        }
        Ok(ContinueToken {
            revision,
            start: format!("{prefix}{start}"),
        })
    }
}

impl ListOptions {
    /// Reads options from the query, checking field selectors against what the kind supports.
    pub fn parse(def: &ResourceDef, query: &Query, prefix: &str) -> Result<Self> {
        let mut o = ListOptions::default();
        if let Some(s) = query.get("labelSelector").filter(|s| !s.is_empty()) {
            o.labels = Some(Selector::parse(s).map_err(|e| Error::BadRequest(e.to_string()))?);
        }
        if let Some(s) = query.get("fieldSelector").filter(|s| !s.is_empty()) {
            let sel = FieldSelector::parse(s).map_err(|e| Error::BadRequest(e.to_string()))?;
            for r in sel.requirements() {
                if !field_supported(def, &r.field) {
                    return Err(Error::BadRequest(format!(
                        "\"{}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                        r.field
                    )));
                }
            }
            o.fields = Some(sel);
        }
        if let Some(l) = query.get("limit") {
            o.limit = l
                .parse()
                .map_err(|_| Error::BadRequest(format!("invalid limit: {l}")))?;
        }
        if let Some(c) = query.get("continue").filter(|c| !c.is_empty()) {
            o.continue_token = Some(ContinueToken::decode(c, prefix)?);
        }
        o.resource_version = query
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .cloned();
        o.resource_version_match = query
            .get("resourceVersionMatch")
            .filter(|s| !s.is_empty())
            .cloned();
        if let Some(m) = &o.resource_version_match {
            if !matches!(m.as_str(), "Exact" | "NotOlderThan") {
                return Err(Error::BadRequest(format!(
                    "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
            if o.resource_version.is_none() {
                return Err(Error::BadRequest(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                ));
            }
        }
        if o.continue_token.is_some() && o.resource_version.as_deref().is_some_and(|rv| rv != "0") {
            return Err(Error::BadRequest(
                "specifying resource version is not allowed when using continue".into(),
            ));
        }
        o.bookmarks = query_flag(query, "allowWatchBookmarks");
        o.send_initial_events = query
            .get("sendInitialEvents")
            .map(|v| v == "true" || v == "1");
        if let Some(t) = query.get("timeoutSeconds") {
            let secs: u64 = t
                .parse()
                .map_err(|_| Error::BadRequest(format!("invalid timeoutSeconds: {t}")))?;
            o.timeout = Some(Duration::from_secs(secs));
        }
        Ok(o)
    }

    /// True if `obj` passes both selectors.
    pub fn matches(&self, def: &ResourceDef, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            let empty = serde_json::Map::new();
            if !l.matches(obj["metadata"]["labels"].as_object().unwrap_or(&empty)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(|field| field_value(def, obj, field)) {
                return false;
            }
        }
        true
    }

    fn filtered(&self) -> bool {
        self.labels.is_some() || self.fields.is_some()
    }
}

fn field_supported(def: &ResourceDef, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || def.strategy.field(&json!({}), field).is_some()
}

fn field_value(def: &ResourceDef, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(obj["metadata"]["name"].as_str().unwrap_or("").to_string()),
        "metadata.namespace" => Some(
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
        other => def.strategy.field(obj, other),
    }
}

/// One page of a list.
pub struct ListResult {
    /// Matching objects (empty when [`ListResult::raw`] holds them).
    pub items: Vec<Value>,
    /// The objects as JSON bytes, when [`ListOptions::raw`] asked and the kind allows it.
    pub raw: Option<Vec<bytes::Bytes>>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Items after this page (when known: no selectors).
    pub remaining: Option<i64>,
}

/// Lists objects of `def` in `ns` (all namespaces if `None`).
///
/// # Errors
/// 410 when a continue token's revision was compacted; 504 when waiting for a future revision.
pub async fn list(
    storage: &Storage,
    def: &ResourceDef,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<ListResult> {
    let prefix = def.namespace_prefix(ns);
    let end = prefix_end(&prefix);
    let (mut start, revision) = match &opts.continue_token {
        Some(t) => (t.start.clone(), Some(t.revision)),
        None => (prefix.clone(), read_revision(storage, opts).await?),
    };
    let mut items = Vec::new();
    let mut raw_items = Vec::new();
    let raw = opts.raw && !opts.filtered() && def.strategy.served_as_stored();
    let mut read_at = revision;
    let mut remaining = None;
    loop {
        let want = if opts.limit == 0 {
            0
        } else {
            (opts.limit - items.len() - raw_items.len()).max(if opts.filtered() { 64 } else { 0 })
        };
        let resp = storage
            .range(RangeRequest { start: start.clone(), end: end.clone(), limit: want, revision: read_at })
            .await
            .map_err(|e| match (e, &opts.continue_token) {
                (Error::Store(distro_store::Error::Compacted { .. }), Some(_)) => Error::Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response to get the next page.".into(),
                ),
                (Error::Store(distro_store::Error::Compacted { requested, compact_revision }), None) => {
                    Error::Gone(format!("too old resource version: {requested} ({compact_revision})"))
                }
                (e, _) => e,
            })?;
        read_at = Some(resp.revision);
        let n = resp.kvs.len();
        let mut last_key = None;
        for kv in &resp.kvs {
            last_key = Some(kv.key.clone());
            if raw {
                raw_items.push(storage.decode_raw(def, kv)?);
            } else {
                let obj = storage.decode(def, kv)?;
                if opts.matches(def, &obj) {
                    items.push(obj);
                }
            }
            if opts.limit > 0 && items.len() + raw_items.len() >= opts.limit {
                break;
            }
        }
        let full = opts.limit > 0 && items.len() + raw_items.len() >= opts.limit;
        let examined_all_of_page = last_key.as_ref() == resp.kvs.last().map(|kv| &kv.key);
        let more = resp.more || !examined_all_of_page;
        if full || !more || n == 0 {
            let continue_token = if more && full {
                last_key.map(|k| {
                    ContinueToken {
                        revision: resp.revision,
                        start: format!("{k}\u{0}"),
                    }
                    .encode(&prefix)
                })
            } else {
                None
            };
            if continue_token.is_some() && !opts.filtered() {
                remaining = Some((resp.count - n as i64).max(0));
            }
            return Ok(ListResult {
                items,
                raw: raw.then_some(raw_items),
                revision: resp.revision,
                continue_token,
                remaining,
            });
        }
        start = format!("{}\u{0}", last_key.unwrap_or_default());
    }
}

/// The revision a list without a continue token reads at (`None` = latest).
async fn read_revision(storage: &Storage, opts: &ListOptions) -> Result<Option<Revision>> {
    let Some(rv) = opts.resource_version.as_deref() else {
        return Ok(None);
    };
    if rv == "0" {
        return Ok(None);
    }
    let wanted: Revision = rv
        .parse()
        .map_err(|_| Error::BadRequest(format!("invalid resource version: {rv}")))?;
    match opts.resource_version_match.as_deref() {
        Some("Exact") => Ok(Some(wanted)),
        _ => {
            // NotOlderThan: the latest will do once it has reached `wanted`. Wait for that on a
            // watch of everything (another API server on the same etcd may be ahead of us).
            let store = storage.datastore();
            let current = store.current_revision().await?;
            if current >= wanted {
                return Ok(None);
            }
            let mut events = store.watch("/", current).await?;
            let reached = tokio::time::timeout(Duration::from_secs(3), async {
                while let Some(ev) = events.next().await {
                    if ev.is_ok_and(|e| e.kv.mod_revision >= wanted) {
                        return true;
                    }
                }
                false
            })
            .await;
            if reached == Ok(true) || store.current_revision().await? >= wanted {
                return Ok(None);
            }
            Err(Error::Timeout(format!(
                "Too large resource version: {wanted}, current: {}",
                store.current_revision().await?
            )))
        }
    }
}

/// How a watch renders each object (plain JSON or a Table row).
pub type Render = Box<dyn Fn(&Value) -> Value + Send + Sync>;

/// Bound on queued, not yet written watch events per HTTP watch: a client that stops reading
/// stalls only its own watch, which the datastore then drops as too slow.
const WATCH_BUFFER: usize = 128;

/// Starts a watch and returns the stream of encoded event lines (one JSON object each).
///
/// # Errors
/// Only errors before the stream starts; later failures end the stream with an `ERROR` event.
pub async fn watch(
    storage: Storage,
    def: std::sync::Arc<ResourceDef>,
    ns: Option<String>,
    opts: ListOptions,
    render: Render,
) -> Result<mpsc::Receiver<bytes::Bytes>> {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let prefix = def.namespace_prefix(ns.as_deref());
    let rv = opts.resource_version.clone();
    let initial = match (rv.as_deref(), opts.send_initial_events) {
        (_, Some(v)) => v,
        (None, None) | (Some("0"), None) => true,
        _ => false,
    };
    let mut after: Revision = match rv.as_deref() {
        None | Some("0") => 0,
        Some(s) => s
            .parse()
            .map_err(|_| Error::BadRequest(format!("invalid resource version: {s}")))?,
    };
    let timeout = opts.timeout.unwrap_or_else(|| {
        // Upstream spreads long watches over [30, 60) minutes so clients don't reconnect in step.
        Duration::from_secs(1800 + rand::random::<u64>() % 1800)
    });
    tokio::spawn(async move {
        let send = |v: Value| {
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            bytes::Bytes::from(line)
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        if initial {
            let list_opts = ListOptions {
                labels: opts.labels.clone(),
                fields: opts.fields.clone(),
                resource_version: if after > 0 {
                    Some(after.to_string())
                } else {
                    None
                },
                ..Default::default()
            };
            match list(&storage, &def, ns.as_deref(), &list_opts).await {
                Ok(page) => {
                    after = page.revision;
                    for obj in &page.items {
                        if tx
                            .send(send(json!({"type": "ADDED", "object": render(obj)})))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if opts.send_initial_events == Some(true) && opts.bookmarks {
                        let b = bookmark(&def, after, true);
                        if tx.send(send(b)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(send(json!({"type": "ERROR", "object": e.status()})))
                        .await;
                    return;
                }
            }
        }
        let mut events = match storage.datastore().watch(&prefix, after).await {
            Ok(s) => s,
            Err(distro_store::Error::Compacted {
                requested,
                compact_revision,
            }) => {
                let e = Error::Gone(format!(
                    "too old resource version: {requested} ({compact_revision})"
                ));
                let _ = tx
                    .send(send(json!({"type": "ERROR", "object": e.status()})))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(send(
                        json!({"type": "ERROR", "object": Error::from(e).status()}),
                    ))
                    .await;
                return;
            }
        };
        let mut last = after;
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if opts.bookmarks => {
                    if tx.send(send(bookmark(&def, last, false))).await.is_err() {
                        return;
                    }
                }
                ev = events.next() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(_) => return, // too slow or closed: the client re-watches from `last`.
                    };
                    last = ev.kv.mod_revision;
                    if let Some(kind) = ns_filter(&ev, &def, &storage, &opts) {
                        let (ty, obj) = kind;
                        if tx.send(send(json!({"type": ty, "object": render(&obj)}))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Turns a datastore event into the watch event a client with these selectors sees: a change
/// that makes an object stop matching is a DELETED, one that makes it start matching an ADDED.
fn ns_filter(
    ev: &Event,
    def: &ResourceDef,
    storage: &Storage,
    opts: &ListOptions,
) -> Option<(&'static str, Value)> {
    let obj = storage.decode(def, &ev.kv).ok()?;
    let old = ev
        .prev_kv
        .as_ref()
        .and_then(|kv| storage.decode(def, kv).ok());
    let now_matches = opts.matches(def, &obj);
    let old_matches = old.as_ref().is_some_and(|o| opts.matches(def, o));
    match ev.kind {
        EventKind::Delete => now_matches.then_some(("DELETED", obj)),
        EventKind::Put => match (old.is_some(), old_matches, now_matches) {
            (false, _, true) => Some(("ADDED", obj)),
            (true, true, true) => Some(("MODIFIED", obj)),
            (true, false, true) => Some(("ADDED", obj)),
            (true, true, false) => Some(("DELETED", obj)),
            _ => None,
        },
    }
}

fn bookmark(def: &ResourceDef, rev: Revision, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = ContinueToken {
            revision: 42,
            start: "/registry/pods/default/b\u{0}".into(),
        };
        let s = t.encode("/registry/pods/");
        assert_eq!(ContinueToken::decode(&s, "/registry/pods/").unwrap(), t);
        assert!(ContinueToken::decode("garbage!", "/registry/pods/").is_err());
    }
}
