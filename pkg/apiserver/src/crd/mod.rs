//! Serving CustomResourceDefinitions, as upstream's apiextensions-apiserver does.
//!
//! One task ([`Crds::start`]) watches CRDs in the datastore and, for each, checks its names
//! against the other CRDs of its group (`NamesAccepted`), registers a [`ResourceDef`] per
//! served version with a [`strategy::CustomStrategy`] (so the generic REST storage, discovery
//! and tables serve it), publishes the versions' schemas in the OpenAPI documents, and then
//! reports `Established`. Deleting a CRD first deletes its custom resources (the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer), then unregisters it. The scale
//! subresource of custom resources is a [`Route`] ([`scale`]).
//!
//! Limits: conversion is upstream's `None` strategy only (webhook conversion is refused at
//! CRD validation time); `x-kubernetes-validations` rules are not evaluated; a custom
//! resource's own finalizers are not waited for past a retry every second.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::kinds::ALL_VERBS;
use crate::openapi::{crd_definition_name, CustomResource, OpenApi, OpenApiService};
use crate::resources::{Registry, ResourceDef};
use crate::rest::{now_rfc3339, DeleteOptions, Storage, WriteOptions};

pub mod jsonpath;
mod scale;
pub mod strategy;
mod validation;

pub use validation::validate_versions;

use strategy::{CustomStrategy, PrinterColumn, ScaleSpec};

/// The finalizer that makes CRD deletion remove the custom resources first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const GROUP: &str = "apiextensions.k8s.io";
const PLURAL: &str = "customresourcedefinitions";

/// What one accepted CRD serves now.
struct Served {
    group: String,
    plural: String,
    /// The CRD spec these defs were built from (rebuilt only when it changes).
    spec: Value,
    accepted: Names,
    defs: Vec<Arc<ResourceDef>>,
    schemas: Vec<Option<Value>>,
    scale: HashMap<String, ScaleSpec>,
    storage_version: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Names {
    plural: String,
    singular: String,
    kind: String,
    list_kind: String,
    short_names: Vec<String>,
    categories: Vec<String>,
}

impl Names {
    fn from_spec(names: &Value) -> Names {
        let s = |k: &str| names[k].as_str().unwrap_or("").to_string();
        let list = |k: &str| -> Vec<String> {
            names[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let kind = s("kind");
        let singular = Some(s("singular"))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| kind.to_lowercase());
        let list_kind = Some(s("listKind"))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| format!("{kind}List"));
        Names {
            plural: s("plural"),
            singular,
            kind,
            list_kind,
            short_names: list("shortNames"),
            categories: list("categories"),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"plural": self.plural, "singular": self.singular, "kind": self.kind, "listKind": self.list_kind});
        if !self.short_names.is_empty() {
            v["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            v["categories"] = json!(self.categories);
        }
        v
    }
}

#[derive(Default)]
struct State {
    served: HashMap<String, Served>,
    /// CRDs whose names conflict: retried when another CRD goes away.
    rejected: HashSet<String>,
}

/// The CRD machinery: keeps the registry and the OpenAPI documents in step with the CRDs in
/// storage, and serves custom resources' scale subresource.
pub struct Crds {
    registry: Arc<Registry>,
    storage: Storage,
    openapi: Arc<OpenApiService>,
    /// The built-in documents every custom set is derived from.
    base: Arc<OpenApi>,
    state: Mutex<State>,
}

impl Crds {
    /// Serves the CRDs in storage now, then follows changes in a task (abort its handle to stop).
    ///
    /// # Errors
    /// Reading the CRDs from the datastore failed.
    pub async fn start(
        storage: Storage,
        registry: Arc<Registry>,
        openapi: Arc<OpenApiService>,
    ) -> Result<(Arc<Crds>, JoinHandle<()>)> {
        let crds = Arc::new(Crds {
            base: openapi.current(),
            registry,
            storage,
            openapi,
            state: Mutex::new(State::default()),
        });
        let rev = crds.sync_all(&mut HashSet::new()).await?;
        let task = tokio::spawn(crds.clone().run(rev));
        Ok((crds, task))
    }

    fn crd_def(&self) -> Result<Arc<ResourceDef>> {
        self.registry
            .get(GROUP, "v1", PLURAL)
            .ok_or_else(|| Error::Internal("the CRD resource is not registered".into()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconciles every CRD in storage and forgets the ones gone; returns the revision read at.
    async fn sync_all(&self, retry: &mut HashSet<String>) -> Result<i64> {
        let def = self.crd_def()?;
        let prefix = def.key_prefix();
        let resp = self
            .storage
            .range(distro_store::RangeRequest {
                start: prefix.clone(),
                end: distro_store::prefix_end(&prefix),
                ..Default::default()
            })
            .await?;
        let names: Vec<String> = resp
            .kvs
            .iter()
            .map(|kv| kv.key[prefix.len()..].to_string())
            .collect();
        let known: Vec<String> = self.lock().served.keys().cloned().collect();
        for gone in known.iter().filter(|k| !names.contains(k)) {
            self.reconcile_logged(gone, retry).await;
        }
        for name in &names {
            self.reconcile_logged(name, retry).await;
        }
        Ok(resp.revision)
    }

    /// Follows CRD changes from revision `after`, retrying unfinished work every second.
    async fn run(self: Arc<Self>, mut after: i64) {
        let Ok(def) = self.crd_def() else { return };
        let prefix = def.key_prefix();
        let mut retry: HashSet<String> = HashSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut events = match self.storage.datastore().watch(&prefix, after).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "watching CRDs failed; relisting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match self.sync_all(&mut retry).await {
                        Ok(rev) => after = rev,
                        Err(e) => tracing::warn!(error = %e, "relisting CRDs failed"),
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    // Cancel safety: `next` on a datastore watch stream loses no event when the
                    // other branch wins.
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            after = ev.kv.mod_revision;
                            let name = ev.kv.key[prefix.len()..].to_string();
                            self.reconcile_logged(&name, &mut retry).await;
                        }
                        Some(Err(_)) | None => break,
                    },
                    _ = tokio::time::sleep(Duration::from_secs(1)), if !retry.is_empty() => {
                        let names: Vec<String> = retry.drain().collect();
                        for name in names {
                            self.reconcile_logged(&name, &mut retry).await;
                        }
                    }
                }
            }
        }
    }

    async fn reconcile_logged(&self, name: &str, retry: &mut HashSet<String>) {
        match self.reconcile(name).await {
            Ok(Some(more)) => retry.extend(more),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(crd = %name, error = %e, "reconciling CRD failed; retrying");
                retry.insert(name.to_string());
            }
        }
    }

    /// Brings one CRD's serving and status in line with its spec. Returns CRDs to look at again
    /// (itself while deletion waits, or ones whose names may now be free).
    async fn reconcile(&self, name: &str) -> Result<Option<Vec<String>>> {
        let def = self.crd_def()?;
        let Some(mut crd) = self.storage.try_get(&def, None, name).await? else {
            return Ok(Some(self.forget(name).await));
        };
        if !crd["metadata"]["deletionTimestamp"].is_null() {
            return self.finalize(&def, &crd).await;
        }
        let has_finalizer = crd["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
        if !has_finalizer {
            crd = self
                .write(&def, name, None, |c| {
                    let mut f = c["metadata"]["finalizers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
                        f.push(json!(CLEANUP_FINALIZER));
                    }
                    c["metadata"]["finalizers"] = json!(f);
                })
                .await?;
        }
        let spec = &crd["spec"];
        let names = Names::from_spec(&spec["names"]);
        let group = spec["group"].as_str().unwrap_or("").to_string();
        let conflict = self.conflict(name, &group, &names);
        let mut again = None;
        match &conflict {
            None => {
                self.serve(name, &crd, &names).await?;
            }
            Some(_) => {
                let was_served = self.lock().served.contains_key(name);
                if was_served {
                    again = Some(self.forget(name).await);
                }
                self.lock().rejected.insert(name.to_string());
            }
        }
        let status = status_of(&crd, &names, conflict.as_ref());
        if status != crd["status"] {
            self.write(&def, name, Some("status"), |c| c["status"] = status.clone())
                .await?;
        }
        Ok(again)
    }

    /// Whether `names` clash with another CRD of `group` already serving, or a built-in.
    /// Returns upstream's condition reason and message.
    fn conflict(&self, name: &str, group: &str, names: &Names) -> Option<(&'static str, String)> {
        let in_use = |s: &str| format!("{s:?} is already in use");
        let state = self.lock();
        for (other, s) in &state.served {
            if other == name || s.group != group {
                continue;
            }
            let o = &s.accepted;
            if names.plural == o.plural || names.plural == o.singular {
                return Some(("PluralConflict", in_use(&names.plural)));
            }
            if names.singular == o.plural || names.singular == o.singular {
                return Some(("SingularConflict", in_use(&names.singular)));
            }
            for sn in &names.short_names {
                if o.short_names.contains(sn) {
                    return Some(("ShortNamesConflict", in_use(sn)));
                }
            }
            if names.kind == o.kind {
                return Some(("KindConflict", in_use(&names.kind)));
            }
            if names.list_kind == o.list_kind {
                return Some(("ListKindConflict", in_use(&names.list_kind)));
            }
        }
        let ours: HashSet<*const ResourceDef> = state
            .served
            .get(name)
            .map(|s| s.defs.iter().map(Arc::as_ptr).collect())
            .unwrap_or_default();
        let custom: HashSet<*const ResourceDef> = state
            .served
            .values()
            .flat_map(|s| s.defs.iter().map(Arc::as_ptr))
            .collect();
        drop(state);
        for (g, versions) in self.registry.groups() {
            if g != group {
                continue;
            }
            for v in versions {
                for d in self.registry.resources(&g, &v) {
                    let p = Arc::as_ptr(&d);
                    if ours.contains(&p) || custom.contains(&p) {
                        continue;
                    }
                    if d.plural == names.plural {
                        return Some(("PluralConflict", in_use(&names.plural)));
                    }
                    if d.kind == names.kind {
                        return Some(("KindConflict", in_use(&names.kind)));
                    }
                }
            }
        }
        None
    }

    /// Registers the CRD's served versions and republishes OpenAPI, if its spec changed.
    async fn serve(&self, name: &str, crd: &Value, names: &Names) -> Result<()> {
        let spec = crd["spec"].clone();
        let group = spec["group"].as_str().unwrap_or("").to_string();
        let old = {
            let mut st = self.lock();
            st.rejected.remove(name);
            if st.served.get(name).is_some_and(|s| s.spec == spec) {
                return Ok(());
            }
            st.served.remove(name)
        };
        let served = build(&spec, names);
        if let Some(old) = &old {
            // Replacing in place keeps the resource answering; only a rename or a dropped
            // version needs the old entries gone first.
            let kept = old.plural == served.plural
                && old
                    .defs
                    .iter()
                    .all(|o| served.defs.iter().any(|n| n.version == o.version));
            if !kept {
                self.registry.remove(&old.group, &old.plural);
            }
        }
        for d in &served.defs {
            self.registry.add(d.clone());
        }
        tracing::info!(crd = %name, versions = served.defs.len(), "serving custom resource");
        self.lock().served.insert(name.to_string(), served);
        self.order_versions(&group);
        self.publish().await;
        Ok(())
    }

    /// Stops serving `name` (gone or renamed into a conflict); returns rejected CRDs to retry.
    async fn forget(&self, name: &str) -> Vec<String> {
        let (gone, retry) = {
            let mut st = self.lock();
            st.rejected.remove(name);
            (
                st.served.remove(name),
                st.rejected.iter().cloned().collect(),
            )
        };
        if let Some(s) = gone {
            self.registry.remove(&s.group, &s.plural);
            self.order_versions(&s.group);
            self.publish().await;
            tracing::info!(crd = %name, "stopped serving custom resource");
            // A CRD removed without its finalizer (never reconciled) leaves its objects behind.
            if let Some(def) = s.defs.first() {
                let _ = self.delete_all(def).await;
            }
        }
        retry
    }

    /// Discovery lists a group's versions by upstream's version priority.
    fn order_versions(&self, group: &str) {
        let st = self.lock();
        let mut versions: Vec<String> = st
            .served
            .values()
            .filter(|s| s.group == group)
            .flat_map(|s| s.defs.iter().map(|d| d.version.clone()))
            .collect();
        drop(st);
        versions.sort_by_key(|v| version_priority(v));
        versions.dedup();
        self.registry.set_version_order(group, versions);
    }

    /// Republishes the OpenAPI documents with every served custom resource.
    async fn publish(&self) {
        let custom: Vec<CustomResource> = {
            let st = self.lock();
            let mut names: Vec<&String> = st.served.keys().collect();
            names.sort();
            names
                .into_iter()
                .flat_map(|n| {
                    let s = &st.served[n];
                    s.defs
                        .iter()
                        .zip(&s.schemas)
                        .map(|(d, schema)| CustomResource {
                            def: d.clone(),
                            schema: schema.clone(),
                        })
                })
                .collect()
        };
        let base = self.base.clone();
        // Building the documents' type index takes milliseconds: off the async workers.
        match tokio::task::spawn_blocking(move || base.with_custom_resources(&custom)).await {
            Ok(api) => self.openapi.set(api),
            Err(e) => tracing::warn!(error = %e, "rebuilding OpenAPI failed"),
        }
    }

    /// Deletion of a CRD: delete its objects, then drop the finalizer (which deletes the CRD).
    async fn finalize(&self, def: &ResourceDef, crd: &Value) -> Result<Option<Vec<String>>> {
        let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
        let terminating = json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress"});
        if !has_condition(&crd["status"], &terminating) {
            let mut status = crd["status"].clone();
            set_condition(&mut status, terminating);
            self.write(def, &name, Some("status"), |c| c["status"] = status.clone())
                .await?;
        }
        let cr_def = self.lock().served.get(&name).and_then(|s| {
            s.defs
                .iter()
                .find(|d| d.version == s.storage_version)
                .cloned()
        });
        let remaining = match cr_def {
            Some(d) => self.delete_all(&d).await?,
            None => self.delete_raw(&crd["spec"]).await?,
        };
        if remaining > 0 {
            return Ok(Some(vec![name]));
        }
        self.write(def, &name, None, |c| {
            if let Some(f) = c["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x != CLEANUP_FINALIZER);
            }
        })
        .await?;
        Ok(None)
    }

    /// Deletes every object of a custom resource through the REST storage (so watchers see
    /// them go and their finalizers hold them); returns how many remain.
    async fn delete_all(&self, def: &ResourceDef) -> Result<usize> {
        let resp = self
            .storage
            .range(distro_store::RangeRequest {
                start: def.key_prefix(),
                end: distro_store::prefix_end(&def.key_prefix()),
                ..Default::default()
            })
            .await?;
        let mut remaining = 0;
        for kv in &resp.kvs {
            let obj = self.storage.decode(def, kv)?;
            let n = obj["metadata"]["name"].as_str().unwrap_or("");
            let ns = obj["metadata"]["namespace"].as_str();
            match self
                .storage
                .delete(def, ns, n, &DeleteOptions::default())
                .await
            {
                Ok((_, true)) | Err(Error::NotFound { .. }) => {}
                Ok((_, false)) => remaining += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(remaining)
    }

    /// Deletes the objects of a CRD that was never served (its names were not accepted).
    async fn delete_raw(&self, spec: &Value) -> Result<usize> {
        let prefix = format!(
            "/registry/{}/{}/",
            spec["group"].as_str().unwrap_or(""),
            spec["names"]["plural"].as_str().unwrap_or("")
        );
        if prefix.contains("//") {
            return Ok(0);
        }
        let resp = self
            .storage
            .range(distro_store::RangeRequest {
                start: prefix.clone(),
                end: distro_store::prefix_end(&prefix),
                ..Default::default()
            })
            .await?;
        for kv in resp.kvs {
            match self.storage.datastore().delete(&kv.key, None).await {
                Ok(_) | Err(distro_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(0)
    }

    /// Read-modify-write of the CRD (or its status), returning the result.
    async fn write(
        &self,
        def: &ResourceDef,
        name: &str,
        subresource: Option<&str>,
        change: impl Fn(&mut Value),
    ) -> Result<Value> {
        let opts = WriteOptions {
            field_manager: Some("distro-apiextensions-controller".into()),
            ..Default::default()
        };
        let w = self
            .storage
            .guaranteed_update(def, None, name, subresource, &opts, |current| {
                let Some(c) = current else {
                    return Err(Error::not_found(def.group_resource(), name));
                };
                let mut next = c.clone();
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                change(&mut next);
                Ok((next, Vec::new()))
            })
            .await?;
        Ok(w.object)
    }
}

/// The resources one CRD spec serves.
fn build(spec: &Value, names: &Names) -> Served {
    let group = spec["group"].as_str().unwrap_or("").to_string();
    let namespaced = spec["scope"] != "Cluster";
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or("")
        .to_string();
    let mut defs = Vec::new();
    let mut schemas = Vec::new();
    let mut scales = HashMap::new();
    for v in versions.iter().filter(|v| v["served"] == true) {
        let version = v["name"].as_str().unwrap_or("").to_string();
        let schema = v["schema"]["openAPIV3Schema"].clone();
        let schema = schema.is_object().then_some(schema);
        let scale = ScaleSpec::from_crd(&v["subresources"]["scale"]);
        let status = v["subresources"]["status"].is_object();
        let mut columns: Vec<PrinterColumn> = v["additionalPrinterColumns"]
            .as_array()
            .map(|c| c.iter().filter_map(PrinterColumn::from_crd).collect())
            .unwrap_or_default();
        if columns.is_empty() {
            columns.push(PrinterColumn::age());
        }
        let selectable = v["selectableFields"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|f| f["jsonPath"].as_str().and_then(jsonpath::JsonPath::parse))
                    .collect()
            })
            .unwrap_or_default();
        let mut subresources = Vec::new();
        if status {
            subresources.push("status");
        }
        if let Some(s) = &scale {
            subresources.push("scale");
            scales.insert(version.clone(), s.clone());
        }
        let strategy = CustomStrategy {
            schema: schema.clone(),
            status,
            scale,
            columns,
            selectable,
            api_version: format!("{group}/{version}"),
            storage_api_version: format!("{group}/{storage_version}"),
        };
        defs.push(Arc::new(ResourceDef {
            group: group.clone(),
            version: version.clone(),
            kind: names.kind.clone(),
            plural: names.plural.clone(),
            singular: names.singular.clone(),
            namespaced,
            short_names: names.short_names.clone(),
            categories: names.categories.clone(),
            verbs: ALL_VERBS.to_vec(),
            subresources,
            definition: crd_definition_name(&group, &version, &names.kind),
            storage: format!("{group}/{}", names.plural),
            virtual_only: false,
            strategy: Arc::new(strategy),
        }));
        schemas.push(schema);
    }
    Served {
        group,
        plural: names.plural.clone(),
        spec: spec.clone(),
        accepted: names.clone(),
        defs,
        schemas,
        scale: scales,
        storage_version,
    }
}

/// The CRD status upstream's controllers converge to.
fn status_of(crd: &Value, names: &Names, conflict: Option<&(&'static str, String)>) -> Value {
    let mut status = crd["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    match conflict {
        None => {
            set_condition(
                &mut status,
                json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"}),
            );
            set_condition(
                &mut status,
                json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}),
            );
            status["acceptedNames"] = names.to_json();
        }
        Some((reason, message)) => {
            set_condition(
                &mut status,
                json!({"type": "NamesAccepted", "status": "False", "reason": reason, "message": message}),
            );
            set_condition(
                &mut status,
                json!({"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted"}),
            );
            if !status["acceptedNames"].is_object() {
                status["acceptedNames"] = json!({"plural": "", "kind": ""});
            }
        }
    }
    let storage = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .map(|v| v["name"].clone());
    let mut stored = status["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(s) = storage {
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    status["storedVersions"] = json!(stored);
    status
}

/// True if `status` has a condition of this type, status, reason and message.
fn has_condition(status: &Value, c: &Value) -> bool {
    status["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|x| {
            ["type", "status", "reason", "message"]
                .iter()
                .all(|k| x[*k] == c[*k])
        })
    })
}

/// Sets a condition, keeping its lastTransitionTime unless its status changes.
fn set_condition(status: &mut Value, mut c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else {
        return;
    };
    match list.iter_mut().find(|x| x["type"] == c["type"]) {
        Some(existing) => {
            c["lastTransitionTime"] = if existing["status"] == c["status"] {
                existing["lastTransitionTime"].clone()
            } else {
                json!(now_rfc3339())
            };
            *existing = c;
        }
        None => {
            c["lastTransitionTime"] = json!(now_rfc3339());
            list.push(c);
        }
    }
}

/// Upstream's version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let rest = &rest[digits.len()..];
        if rest.is_empty() {
            return Some((0, -major, 0));
        }
        let (level, n) = if let Some(n) = rest.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = rest.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        let minor: i64 = n.parse().ok()?;
        Some((level, -major, -minor))
    };
    match parse() {
        Some((level, major, minor)) => (level, major, minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_upstream() {
        let mut v = vec![
            "v1alpha1", "foo", "v1", "v2beta1", "v2", "v1beta2", "v1beta1",
        ];
        v.sort_by_key(|x| version_priority(x));
        assert_eq!(
            v,
            vec!["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn status_reports_conditions_and_stored_versions() {
        let crd = json!({"spec": {"names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "storage": true}]}, "status": {"storedVersions": []}});
        let names = Names::from_spec(&crd["spec"]["names"]);
        let s = status_of(&crd, &names, None);
        assert_eq!(s["conditions"][1]["type"], "Established");
        assert_eq!(s["conditions"][1]["status"], "True");
        assert_eq!(s["acceptedNames"]["listKind"], "WidgetList");
        assert_eq!(s["storedVersions"], json!(["v1"]));
        // Unchanged conditions keep their transition time, so a second pass writes nothing.
        let mut again = crd.clone();
        again["status"] = s.clone();
        assert_eq!(status_of(&again, &names, None), s);
        let c = (
            "PluralConflict",
            "\"widgets\" is already in use".to_string(),
        );
        let s = status_of(&crd, &names, Some(&c));
        assert_eq!(s["conditions"][0]["reason"], "PluralConflict");
        assert_eq!(s["conditions"][1]["reason"], "NotAccepted");
    }
}
