//! Generic REST storage: the one implementation of create/get/list/update/patch/delete that
//! every kind goes through, with upstream's metadata rules (uid, generateName, generation,
//! resourceVersion preconditions, finalizers, graceful deletion) and the strategy's per-kind
//! hooks. Only this module (and watch) touches the datastore.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use distro_store::{Datastore, KeyValue, RangeRequest};
use serde_json::{json, Map, Value};

use crate::admission::Admission;
use crate::error::{Error, FieldError, Result};
use crate::resources::{NameRule, ResourceDef};
use crate::validation;

/// How unknown fields are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped with a warning header.
    Warn,
    /// Rejected with 400.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (upstream's default is Warn since 1.27 for kubectl... the server
    /// default when absent is Warn).
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(Error::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Options common to writes.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything but the write.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// Records managedFields once the new object is final; `None` leaves them as they are
    /// (server-side apply sets them itself).
    pub track: Option<crate::apply::Tracker>,
    /// Create a missing object even where a PUT may not (server-side apply does, as upstream).
    pub force_allow_create: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Warn,
            field_manager: None,
            track: None,
            force_allow_create: false,
        }
    }
}

/// What a write returns: the object and any warnings for the `Warning` header.
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// Warnings (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
    /// True if a new object came into being (201 rather than 200).
    pub created: bool,
}

/// Transforms values on their way to and from the datastore (encryption at rest of Secrets).
pub trait Transformer: Send + Sync {
    /// Called before a write.
    ///
    /// # Errors
    /// The value cannot be transformed (nothing is stored then).
    fn before_write(
        &self,
        def: &ResourceDef,
        data: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, String>;
    /// Called after a read.
    ///
    /// # Errors
    /// Undecryptable data.
    fn after_read(&self, def: &ResourceDef, data: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// The generic storage, shared by every handler.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Datastore>,
    transformer: Option<Arc<dyn Transformer>>,
    admission: Vec<Arc<dyn Admission>>,
}

/// How many times an unconditional update retries after losing a race.
const MAX_UPDATE_RETRIES: usize = 16;

impl Storage {
    /// Storage over `store`, with an optional at-rest transformer.
    pub fn new(store: Arc<dyn Datastore>, transformer: Option<Arc<dyn Transformer>>) -> Self {
        Storage {
            store,
            transformer,
            admission: Vec::new(),
        }
    }

    /// Adds an admission step (allocators) run on every create, update and delete.
    pub fn with_admission(mut self, a: Arc<dyn Admission>) -> Self {
        self.admission.push(a);
        self
    }

    async fn admit_create(&self, def: &ResourceDef, obj: &mut Value, dry_run: bool) -> Result<()> {
        for (i, a) in self.admission.iter().enumerate() {
            if let Err(e) = a.create(&self.store, def, obj, dry_run).await {
                if !dry_run {
                    for done in &self.admission[..i] {
                        done.aborted(&self.store, def, obj, None).await;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn admit_update(
        &self,
        def: &ResourceDef,
        obj: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<()> {
        for (i, a) in self.admission.iter().enumerate() {
            if let Err(e) = a.update(&self.store, def, obj, old, dry_run).await {
                if !dry_run {
                    for done in &self.admission[..i] {
                        done.aborted(&self.store, def, obj, Some(old)).await;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The admitted write of `obj` (replacing `old`) did not happen.
    async fn aborted(&self, def: &ResourceDef, obj: &Value, old: Option<&Value>) {
        for a in &self.admission {
            a.aborted(&self.store, def, obj, old).await;
        }
    }

    /// `old` was replaced by `new`, or deleted.
    async fn committed(&self, def: &ResourceDef, old: &Value, new: Option<&Value>) {
        for a in &self.admission {
            a.committed(&self.store, def, old, new).await;
        }
    }

    /// The datastore, for watches.
    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    /// Serializes an object for the datastore (without its resourceVersion, which is the key's
    /// revision).
    pub fn encode(&self, def: &ResourceDef, obj: &Value) -> Result<Bytes> {
        let mut obj = obj.clone();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        def.strategy.to_storage(&mut obj);
        let data = serde_json::to_vec(&obj).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Bytes::from(match &self.transformer {
            Some(t) => t.before_write(def, data).map_err(Error::Internal)?,
            None => data,
        }))
    }

    /// Parses a stored value and stamps its resourceVersion.
    pub fn decode(&self, def: &ResourceDef, kv: &KeyValue) -> Result<Value> {
        let mut obj: Value = match &self.transformer {
            Some(t) => {
                let plain = t.after_read(def, &kv.value).map_err(Error::Internal)?;
                serde_json::from_slice(&plain)
            }
            None => serde_json::from_slice(&kv.value),
        }
        .map_err(|e| Error::Internal(format!("corrupt object at {}: {e}", kv.key)))?;
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        }
        def.strategy.on_read(&mut obj);
        Ok(obj)
    }

    /// A stored object as the JSON bytes a client gets (its resourceVersion spliced into
    /// `metadata`), without parsing it: for kinds whose strategy is
    /// [`crate::resources::Strategy::served_as_stored`].
    pub fn decode_raw(&self, def: &ResourceDef, kv: &KeyValue) -> Result<Bytes> {
        let plain = match &self.transformer {
            Some(t) => Bytes::from(t.after_read(def, &kv.value).map_err(Error::Internal)?),
            None => kv.value.clone(),
        };
        match with_resource_version(&plain, kv.mod_revision) {
            Some(b) => Ok(Bytes::from(b)),
            None => {
                let obj = self.decode(def, kv)?;
                Ok(Bytes::from(
                    serde_json::to_vec(&obj).map_err(|e| Error::Internal(e.to_string()))?,
                ))
            }
        }
    }

    /// Reads one object.
    ///
    /// # Errors
    /// 404 if absent.
    pub async fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value> {
        match self.store.get(&def.key(ns, name)).await? {
            Some(kv) => self.decode(def, &kv),
            None => Err(Error::not_found(def.group_resource(), name)),
        }
    }

    /// Reads one object, `None` if absent.
    pub async fn try_get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        match self.store.get(&def.key(ns, name)).await? {
            Some(kv) => Ok(Some(self.decode(def, &kv)?)),
            None => Ok(None),
        }
    }

    /// Raw range read, for list.
    pub async fn range(&self, req: RangeRequest) -> Result<distro_store::RangeResponse> {
        Ok(self.store.range(req).await?)
    }

    /// Decodes, defaults and validates a body for create or update, applying `fieldValidation`.
    /// Returns the object and warnings.
    pub fn admit_body(
        &self,
        def: &ResourceDef,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>)> {
        let Value::Object(_) = body else {
            return Err(Error::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        };
        check_type(def, &body)?;
        let (mut obj, unknown) = def.strategy.decode(body).map_err(|e| {
            Error::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                def.kind, def.version, def.kind
            ))
        })?;
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match opts.field_validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(Error::BadRequest(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        Ok((obj, warnings))
    }

    /// Creates an object. `ns` is the namespace from the URL.
    ///
    /// # Errors
    /// 400 for malformed bodies, 422 for invalid objects, 409 if it exists, 404/403 for a missing or
    /// terminating namespace.
    pub async fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let (mut obj, warnings) = self.admit_body(def, body, opts)?;
        set_namespace(def, &mut obj, ns)?;
        let generate = obj["metadata"]["name"].as_str().unwrap_or("").is_empty()
            && !obj["metadata"]["generateName"]
                .as_str()
                .unwrap_or("")
                .is_empty();
        if let Some(ns) = ns.filter(|_| def.namespaced) {
            self.check_namespace_open(ns).await?;
        }
        let body = obj;
        let mut attempts = 0;
        loop {
            // The name is final before the kind's preparation runs (a Job's labels use it).
            let mut obj = body.clone();
            if generate {
                let base = obj["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                obj["metadata"]["name"] = json!(validation::generate_name(&base));
            }
            prepare_create(def, &mut obj);
            if let Some(t) = &opts.track {
                t.record(def, None, &mut obj, None);
            }
            validate(def, &obj, None)?;
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            self.admit_create(def, &mut obj, opts.dry_run).await?;
            if opts.dry_run {
                if self.try_get(def, ns, &name).await?.is_some() {
                    return Err(Error::AlreadyExists {
                        resource: def.group_resource(),
                        name,
                    });
                }
                return Ok(Written {
                    object: obj,
                    warnings,
                    created: true,
                });
            }
            let key = def.key(ns, &name);
            let r = match self.encode(def, &obj) {
                Ok(bytes) => self.store.create(&key, bytes).await.map_err(Error::from),
                Err(e) => Err(e),
            };
            let e = match r {
                Ok(kv) => {
                    set_rv(&mut obj, kv.mod_revision);
                    return Ok(Written {
                        object: obj,
                        warnings,
                        created: true,
                    });
                }
                Err(e) => e,
            };
            self.aborted(def, &obj, None).await;
            match e {
                Error::Store(distro_store::Error::AlreadyExists { .. })
                    if generate && attempts < 8 =>
                {
                    attempts += 1
                }
                Error::Store(distro_store::Error::AlreadyExists { .. }) => {
                    return Err(Error::AlreadyExists {
                        resource: def.group_resource(),
                        name,
                    })
                }
                e => return Err(e),
            }
        }
    }

    /// Refuses new content in missing or terminating namespaces, as upstream's NamespaceLifecycle
    /// admission.
    async fn check_namespace_open(&self, ns: &str) -> Result<()> {
        match self
            .store
            .get(&format!("/registry/namespaces/{ns}"))
            .await?
        {
            None => Err(Error::not_found("namespaces", ns)),
            Some(kv) => {
                let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                if v["status"]["phase"] == "Terminating"
                    || !v["metadata"]["deletionTimestamp"].is_null()
                {
                    Err(Error::Forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Read-modify-write with optimistic concurrency, as upstream's `GuaranteedUpdate`.
    ///
    /// `mutate` gets the current object (`None` if absent) and returns the new one. If the new
    /// object carries a resourceVersion, it must match (409 otherwise); if not, the update retries on
    /// races. An update that changes nothing writes nothing.
    pub async fn guaranteed_update<F>(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mut mutate: F,
    ) -> Result<Written>
    where
        F: FnMut(Option<&Value>) -> Result<(Value, Vec<String>)>,
    {
        let key = def.key(ns, name);
        for _ in 0..MAX_UPDATE_RETRIES {
            let current_kv = self.store.get(&key).await?;
            let current = current_kv
                .as_ref()
                .map(|kv| self.decode(def, kv))
                .transpose()?;
            let (mut obj, warnings) = mutate(current.as_ref())?;
            check_name(def, &obj, name)?;
            set_namespace(def, &mut obj, ns)?;
            let Some(old) = current else {
                if !(def.strategy.allow_create_on_update() || opts.force_allow_create)
                    || subresource.is_some()
                {
                    return Err(Error::not_found(def.group_resource(), name));
                }
                if !obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty()
                {
                    return Err(Error::not_found(def.group_resource(), name));
                }
                if let Some(ns) = ns.filter(|_| def.namespaced) {
                    self.check_namespace_open(ns).await?;
                }
                prepare_create(def, &mut obj);
                if let Some(t) = &opts.track {
                    t.record(def, None, &mut obj, None);
                }
                validate(def, &obj, None)?;
                self.admit_create(def, &mut obj, opts.dry_run).await?;
                if opts.dry_run {
                    return Ok(Written {
                        object: obj,
                        warnings,
                        created: true,
                    });
                }
                let r = match self.encode(def, &obj) {
                    Ok(bytes) => self.store.create(&key, bytes).await.map_err(Error::from),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(kv) => {
                        set_rv(&mut obj, kv.mod_revision);
                        return Ok(Written {
                            object: obj,
                            warnings,
                            created: true,
                        });
                    }
                    Err(e) => {
                        self.aborted(def, &obj, None).await;
                        match e {
                            Error::Store(distro_store::Error::AlreadyExists { .. }) => continue,
                            e => return Err(e),
                        }
                    }
                }
            };
            let current_rev = current_kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let asked_rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !asked_rv.is_empty() && asked_rv != current_rev.to_string() {
                return Err(conflict(def, name));
            }
            // A uid in the new object is a precondition, as upstream's
            // defaultUpdatedObjectInfo: an update meant for a deleted-and-recreated namesake fails.
            let asked_uid = obj["metadata"]["uid"].as_str().unwrap_or("");
            let actual_uid = old["metadata"]["uid"].as_str().unwrap_or("");
            if !asked_uid.is_empty() && asked_uid != actual_uid {
                return Err(Error::Conflict {
                    resource: def.group_resource(),
                    name: name.into(),
                    detail: format!("Precondition failed: UID in precondition: {asked_uid}, UID in object meta: {actual_uid}"),
                });
            }
            prepare_update(def, &mut obj, &old, subresource);
            if let Some(t) = &opts.track {
                t.record(def, Some(&old), &mut obj, subresource);
            }
            validate(def, &obj, Some(&old))?;
            self.admit_update(def, &mut obj, &old, opts.dry_run).await?;
            // Nothing changed: upstream skips the write and keeps the resourceVersion.
            if same_object(&obj, &old) {
                return Ok(Written {
                    object: old,
                    warnings,
                    created: false,
                });
            }
            // Namespaces also wait for their own `spec.finalizers` (upstream's
            // ShouldDeleteNamespaceDuringUpdate): the namespace controller's finalize call
            // empties the last one, and that update deletes the namespace.
            let is_namespace = def.plural == "namespaces" && def.group.is_empty();
            let finalized = !obj["metadata"]["deletionTimestamp"].is_null()
                && obj["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty())
                && (!is_namespace
                    || obj["spec"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty()));
            if opts.dry_run {
                return Ok(Written {
                    object: obj,
                    warnings,
                    created: false,
                });
            }
            if finalized {
                // The last finalizer is gone from an object being deleted: delete it now.
                let r = self.store.delete(&key, Some(current_rev)).await;
                let outcome = cas_outcome(def, name, r, asked_rv.is_empty());
                let Ok(Some(rev)) = outcome else {
                    self.aborted(def, &obj, Some(&old)).await;
                    outcome?;
                    continue;
                };
                self.committed(def, &old, None).await;
                set_rv(&mut obj, rev);
                return Ok(Written {
                    object: obj,
                    warnings,
                    created: false,
                });
            }
            let r = self
                .store
                .update(&key, self.encode(def, &obj)?, current_rev)
                .await;
            let outcome = cas_outcome(def, name, r, asked_rv.is_empty());
            let Ok(Some(rev)) = outcome else {
                self.aborted(def, &obj, Some(&old)).await;
                outcome?;
                continue;
            };
            self.committed(def, &old, Some(&obj)).await;
            set_rv(&mut obj, rev);
            return Ok(Written {
                object: obj,
                warnings,
                created: false,
            });
        }
        Err(conflict(def, name))
    }

    /// Deletes an object, honouring preconditions, finalizers, propagation and pods' grace period.
    /// Returns the object (its last state, or its state while deletion is pending) and whether it
    /// is gone.
    pub async fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool)> {
        let key = def.key(ns, name);
        for _ in 0..MAX_UPDATE_RETRIES {
            let Some(kv) = self.store.get(&key).await? else {
                return Err(Error::not_found(def.group_resource(), name));
            };
            let mut obj = self.decode(def, &kv)?;
            if let Some(uid) = &opts.precondition_uid {
                let actual = obj["metadata"]["uid"].as_str().unwrap_or("");
                if actual != uid {
                    return Err(Error::Conflict {
                        resource: def.group_resource(),
                        name: name.into(),
                        detail: format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                    });
                }
            }
            if let Some(rv) = &opts.precondition_rv {
                if *rv != kv.mod_revision.to_string() {
                    return Err(Error::Conflict {
                        resource: def.group_resource(),
                        name: name.into(),
                        detail: format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    });
                }
            }
            let before = obj.clone();
            let mut pending = false;
            let meta = &mut obj["metadata"];
            let mut finalizers: Vec<Value> =
                meta["finalizers"].as_array().cloned().unwrap_or_default();
            let add = |f: &mut Vec<Value>, name: &str| {
                if !f.iter().any(|x| x == name) {
                    f.push(json!(name));
                }
            };
            match opts.propagation.as_deref() {
                Some("Orphan") => add(&mut finalizers, "orphan"),
                Some("Foreground") => add(&mut finalizers, "foregroundDeletion"),
                _ => {}
            }
            let now = now_rfc3339();
            if !finalizers.is_empty() {
                meta["finalizers"] = json!(finalizers);
                if meta["deletionTimestamp"].is_null() {
                    meta["deletionTimestamp"] = json!(now);
                    meta["deletionGracePeriodSeconds"] = json!(0);
                }
                pending = true;
            }
            // Namespaces go through their own finalizer (spec.finalizers) and the namespace controller.
            if def.plural == "namespaces" && def.group.is_empty() {
                let spec_finalizers = obj["spec"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if spec_finalizers || pending {
                    if obj["metadata"]["deletionTimestamp"].is_null() {
                        obj["metadata"]["deletionTimestamp"] = json!(now);
                        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    }
                    obj["status"]["phase"] = json!("Terminating");
                    pending = true;
                }
            }
            // Pods on a node get their grace period: the kubelet stops them, then deletes with 0.
            if def.plural == "pods" && def.group.is_empty() && !pending {
                let grace = opts
                    .grace_period
                    .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                let scheduled = obj["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty());
                let finished = matches!(
                    obj["status"]["phase"].as_str(),
                    Some("Succeeded") | Some("Failed")
                );
                if scheduled && !finished && grace > 0 {
                    let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
                    if current.is_none_or(|c| grace < c) {
                        let at = Utc::now() + chrono::Duration::seconds(grace);
                        obj["metadata"]["deletionTimestamp"] =
                            json!(at.to_rfc3339_opts(SecondsFormat::Secs, true));
                        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    }
                    pending = true;
                }
            }
            if opts.dry_run {
                return Ok((obj, !pending));
            }
            if pending {
                if same_object(&obj, &before) {
                    return Ok((obj, false));
                }
                let r = self
                    .store
                    .update(&key, self.encode(def, &obj)?, kv.mod_revision)
                    .await;
                // A lost race re-reads: the next round answers 404 if the object is gone.
                let Some(rev) = cas_outcome(def, name, r, true)? else {
                    continue;
                };
                set_rv(&mut obj, rev);
                return Ok((obj, false));
            }
            let r = self.store.delete(&key, Some(kv.mod_revision)).await;
            let Some(rev) = cas_outcome(def, name, r, true)? else {
                continue;
            };
            self.committed(def, &obj, None).await;
            set_rv(&mut obj, rev);
            return Ok((obj, true));
        }
        Err(conflict(def, name))
    }
}

/// Options of a delete (`DeleteOptions` body and query).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`: Orphan, Background, Foreground.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads options from the body (if any) and query; query wins as upstream.
    pub fn parse(body: Option<&Value>, query: &crate::request::Query) -> Result<Self> {
        let mut o = DeleteOptions::default();
        if let Some(b) = body {
            o.grace_period = b["gracePeriodSeconds"].as_i64();
            o.propagation = b["propagationPolicy"].as_str().map(String::from);
            if o.propagation.is_none() {
                match b["orphanDependents"].as_bool() {
                    Some(true) => o.propagation = Some("Orphan".into()),
                    Some(false) => o.propagation = Some("Background".into()),
                    None => {}
                }
            }
            o.precondition_uid = b["preconditions"]["uid"].as_str().map(String::from);
            o.precondition_rv = b["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from);
            o.dry_run = b["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        }
        if let Some(g) = query.get("gracePeriodSeconds") {
            o.grace_period = Some(
                g.parse()
                    .map_err(|_| Error::BadRequest(format!("invalid gracePeriodSeconds: {g}")))?,
            );
        }
        if let Some(p) = query.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        if let Some(p) = &o.propagation {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(Error::BadRequest(format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        }
        if query.get("dryRun").is_some_and(|d| d == "All") {
            o.dry_run = true;
        }
        Ok(o)
    }
}

/// The outcome of a compare-and-swap write inside a retry loop: `Some(revision)` when written,
/// `None` when the race was lost and `retry` allows another round; otherwise the 409 or 404
/// the client sees.
fn cas_outcome(
    def: &ResourceDef,
    name: &str,
    result: std::result::Result<KeyValue, distro_store::Error>,
    retry: bool,
) -> Result<Option<i64>> {
    match result {
        Ok(kv) => Ok(Some(kv.mod_revision)),
        Err(distro_store::Error::Conflict { .. } | distro_store::Error::NotFound { .. })
            if retry =>
        {
            Ok(None)
        }
        Err(distro_store::Error::Conflict { .. }) => Err(conflict(def, name)),
        Err(distro_store::Error::NotFound { .. }) => {
            Err(Error::not_found(def.group_resource(), name))
        }
        Err(e) => Err(e.into()),
    }
}

fn conflict(def: &ResourceDef, name: &str) -> Error {
    Error::Conflict {
        resource: def.group_resource(),
        name: name.into(),
        detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// RFC 3339 UTC, seconds precision, as Kubernetes timestamps.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Inserts `"resourceVersion":"<rev>"` first into the top-level `metadata` object of a JSON
/// object, scanning only its structure. `None` if there is no top-level `metadata` object.
fn with_resource_version(json: &[u8], rev: i64) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"metadata\"";
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && json.get(start..=i) == Some(KEY) {
                    let mut j = i + 1;
                    while json.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if json.get(j) != Some(&b':') {
                        return None;
                    }
                    j += 1;
                    while json.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if json.get(j) != Some(&b'{') {
                        return None;
                    }
                    let mut k = j + 1;
                    while json.get(k).is_some_and(u8::is_ascii_whitespace) {
                        k += 1;
                    }
                    let empty = json.get(k) == Some(&b'}');
                    let field = format!(
                        "\"resourceVersion\":\"{rev}\"{}",
                        if empty { "" } else { "," }
                    );
                    let mut out = Vec::with_capacity(json.len() + field.len());
                    out.extend_from_slice(&json[..=j]);
                    out.extend_from_slice(field.as_bytes());
                    out.extend_from_slice(&json[j + 1..]);
                    return Some(out);
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        i += 1;
    }
    None
}

fn set_rv(obj: &mut Value, rev: i64) {
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
}

/// Checks that the body's apiVersion/kind (if given) match the endpoint.
fn check_type(def: &ResourceDef, body: &Value) -> Result<()> {
    if let Some(kind) = body["kind"].as_str().filter(|k| !k.is_empty()) {
        if kind != def.kind {
            return Err(Error::BadRequest(format!(
                "the kind of the object ({kind}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    if let Some(av) = body["apiVersion"].as_str().filter(|v| !v.is_empty()) {
        if av != def.api_version() {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                def.api_version()
            )));
        }
    }
    Ok(())
}

fn check_name(def: &ResourceDef, obj: &Value, name: &str) -> Result<()> {
    let body_name = obj["metadata"]["name"].as_str().unwrap_or("");
    if body_name.is_empty() {
        return Err(Error::BadRequest("name is required".into()));
    }
    if body_name != name {
        let _ = def;
        return Err(Error::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

fn set_namespace(def: &ResourceDef, obj: &mut Value, ns: Option<&str>) -> Result<()> {
    let meta = &mut obj["metadata"];
    if def.namespaced {
        let Some(ns) = ns else {
            return Err(Error::BadRequest(
                "a namespace is required for namespaced resources".into(),
            ));
        };
        if let Some(body_ns) = meta["namespace"].as_str().filter(|s| !s.is_empty()) {
            if body_ns != ns {
                return Err(Error::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        meta["namespace"] = json!(ns);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

/// System metadata of a new object, then the kind's reset and defaults.
fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    // The uid first: some kinds derive fields from it (a Job's selector).
    {
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    }
    def.strategy.prepare_for_create(obj);
    def.strategy.default(obj);
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(k);
    }
    if def.strategy.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    drop_empty_meta(meta);
}

/// Empty `finalizers`, `ownerReferences`, `labels` and `annotations` are dropped, as Go's
/// `omitempty` does upstream: a patch that removes the last finalizer leaves none, not `[]`.
fn drop_empty_meta(meta: &mut Map<String, Value>) {
    meta.retain(|k, v| {
        let empty = match v {
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        !(empty
            && matches!(
                k.as_str(),
                "finalizers" | "ownerReferences" | "labels" | "annotations"
            ))
    });
}

/// Carries what an update may not change over from the old object.
fn prepare_update(def: &ResourceDef, obj: &mut Value, old: &Value, subresource: Option<&str>) {
    let status_update = subresource == Some("status");
    if status_update {
        // Status writes change status (and nothing else).
        let status = obj.get("status").cloned();
        let mut next = old.clone();
        match status {
            Some(s) => next["status"] = s,
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        next["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
        *obj = next;
    } else if subresource == Some("ephemeralcontainers") {
        // Upstream's ephemeralcontainers strategy: only spec.ephemeralContainers changes.
        let ephemeral = obj["spec"]["ephemeralContainers"].clone();
        let mut next = old.clone();
        next["spec"]["ephemeralContainers"] = ephemeral;
        next["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
        *obj = next;
    } else if def.strategy.has_status() {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if !status_update {
        def.strategy.prepare_for_update(obj, old);
        def.strategy.default(obj);
    }
    let old_meta = &old["metadata"];
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    if let Some(ns) = old_meta.get("namespace") {
        meta.insert("namespace".into(), ns.clone());
    }
    drop_empty_meta(meta);
    if def.strategy.tracks_generation() && !status_update && spec_changed(obj, old) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        obj["metadata"]["generation"] = json!(g);
    }
}

/// Everything but metadata and status differs.
fn spec_changed(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(a) != strip(b)
}

/// Equal but for resourceVersion and managedFields timestamps.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// Metadata checks common to every kind, then the kind's own.
fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Result<()> {
    let mut errs = validate_meta(def, obj);
    errs.extend(match old {
        Some(old) => def.strategy.validate_update(obj, old),
        None => def.strategy.validate(obj),
    });
    if errs.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        kind: def.kind.clone(),
        group: def.group.clone(),
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
        causes: errs,
    })
}

fn validate_meta(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let meta = &obj["metadata"];
    let mut errs = Vec::new();
    let name = meta["name"].as_str().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let msgs = match def.strategy.name_rule() {
            NameRule::Subdomain => validation::dns1123_subdomain(name),
            NameRule::Label => validation::dns1123_label(name),
            NameRule::Dns1035 => validation::dns1035_label(name),
            NameRule::PathSegment => validation::path_segment_name(name),
        };
        for m in msgs {
            errs.push(FieldError::invalid("metadata.name", &json!(name), m));
        }
    }
    if def.namespaced && meta["namespace"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    errs.extend(validation::labels(&meta["labels"], "metadata.labels"));
    errs.extend(validation::annotations(
        &meta["annotations"],
        "metadata.annotations",
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spliced(json: &str) -> Option<Value> {
        with_resource_version(json.as_bytes(), 42)
            .map(|b| serde_json::from_slice(&b).expect("valid JSON"))
    }

    #[test]
    fn resource_version_goes_into_top_level_metadata_only() {
        let v = spliced(r#"{"kind":"X","metadata":{"name":"a"},"data":{"k":"v"}}"#).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        // A nested `metadata` (pod templates) that comes first is skipped.
        let v =
            spliced(r#"{"spec":{"template":{"metadata":{"labels":{}}}},"metadata":{"name":"d"}}"#)
                .unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert!(v["spec"]["template"]["metadata"]["resourceVersion"].is_null());
        // Strings that look like keys, with escaped quotes, are skipped.
        let v = spliced(r#"{"data":{"x":"\"metadata\":{"},"metadata":{}}"#).unwrap();
        assert_eq!(v["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(v["data"]["x"], "\"metadata\":{");
        assert!(spliced(r#"{"kind":"X"}"#).is_none());
        assert!(spliced(r#"{"metadata":null}"#).is_none());
    }
}
