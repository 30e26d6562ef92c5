//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) and the managedFields every
//! other write records, on top of [`distro_apimachinery::apply`].
//!
//! Non-apply writes carry a [`Tracker`] in their [`WriteOptions`]; the storage calls it once
//! the new object is final (defaulted, status reset), so the writer owns exactly what changed.
//! Apply merges inside the storage's read-modify-write loop, so conflicts are judged against
//! the object it then writes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use distro_apimachinery::apply::{base_managed_fields, ApplyError, Context, ManagedFields, Reset};
use distro_apimachinery::schema::Schema;
use http::{header, Request};
use serde_json::{Map, Value};

use crate::error::{Error, FieldError, FieldReason, Result};
use crate::request::parse_query;
use crate::resources::ResourceDef;
use crate::rest::{now_rfc3339, FieldValidation, Storage, WriteOptions, Written};

/// upstream's limit on manager names.
const MAX_MANAGER_LEN: usize = 128;

/// Records managedFields (operation Update) for one write.
#[derive(Clone)]
pub struct Tracker {
    schema: Arc<dyn Schema>,
    manager: String,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Sets `new`'s managedFields: the base (see [`base_managed_fields`]) updated with what
    /// this write changed from `old` (`None` on create).
    ///
    /// # Guarantees
    /// Never fails the write: managedFields that cannot be worked out are dropped, as
    /// upstream's `UpdateNoErrors`.
    pub fn record(
        &self,
        def: &ResourceDef,
        old: Option<&Value>,
        new: &mut Value,
        subresource: Option<&str>,
    ) {
        let now = now_rfc3339();
        let api_version = def.api_version();
        let ctx = Context {
            schema: self.schema.as_ref(),
            type_name: &def.definition,
            api_version: &api_version,
            subresource: subresource.unwrap_or(""),
            // The storage has already undone what this endpoint may not change.
            reset: Reset::None,
            now: &now,
        };
        match base_managed_fields(old, new, subresource.is_some()) {
            Ok(base) => {
                let managed = ctx.update(old, new, base, &self.manager);
                set_managed_fields(new, &managed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping undecodable managedFields");
                set_managed_fields(new, &ManagedFields::new());
            }
        }
    }
}

fn set_managed_fields(obj: &mut Value, managed: &ManagedFields) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if managed.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), managed.encode());
    }
}

/// The manager of a non-apply write: `fieldManager`, else the user agent up to its first `/`
/// (`kubectl-client-side-apply`, `kubectl-edit`), printable characters only, at most 128
/// bytes, as upstream.
pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let prefix = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Adds the managedFields tracker to a write's options.
pub fn track(
    mut opts: WriteOptions,
    req: &Request<Bytes>,
    schema: &Arc<dyn Schema>,
) -> WriteOptions {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    opts.track = Some(Tracker {
        schema: schema.clone(),
        manager: manager_name(opts.field_manager.as_deref(), ua),
    });
    opts
}

fn patch_options_invalid(cause: FieldError) -> Error {
    Error::Invalid {
        kind: "PatchOptions.meta.k8s.io".into(),
        group: String::new(),
        name: String::new(),
        causes: vec![cause],
    }
}

/// Checks the options of a non-apply PATCH: `force` is for apply only.
///
/// # Errors
/// 422 when `force` is set.
pub fn check_patch_options(req: &Request<Bytes>) -> Result<()> {
    let query = parse_query(req.uri().query());
    if query.get("force").is_some_and(|f| !f.is_empty()) {
        return Err(patch_options_invalid(FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    Ok(())
}

/// `group/version, Kind=kind`, as upstream prints a GroupVersionKind.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// Keeps the parts of `config` that survived typed decoding (`kept`), so unknown fields are
/// dropped without filling in the defaults the typed round trip adds.
fn keep_known(config: &Value, kept: &Value) -> Value {
    match (config, kept) {
        (Value::Object(c), Value::Object(k)) => Value::Object(
            c.iter()
                .filter_map(|(key, v)| Some((key.clone(), keep_known(v, k.get(key)?))))
                .collect::<Map<_, _>>(),
        ),
        (Value::Array(c), Value::Array(k)) if c.len() == k.len() => Value::Array(
            c.iter()
                .zip(k.iter())
                .map(|(a, b)| keep_known(a, b))
                .collect(),
        ),
        (c, _) => c.clone(),
    }
}

/// Serves a server-side apply PATCH.
///
/// # Errors
/// 422 without `fieldManager`; 400 for a body that is not a matching object or sets
/// managedFields; 409 (reason Conflict, causes of type `FieldManagerConflict`) when fields other
/// managers own would change and `force` is not set; the storage's errors otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    storage: &Storage,
    schema: Arc<dyn Schema>,
    def: &Arc<ResourceDef>,
    ns: Option<&str>,
    name: &str,
    subresource: Option<&str>,
    req: &Request<Bytes>,
    opts: &WriteOptions,
) -> Result<Written> {
    let query = parse_query(req.uri().query());
    let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
        return Err(patch_options_invalid(FieldError::required(
            "fieldManager",
            "is required for apply patch",
        )));
    };
    if manager.len() > MAX_MANAGER_LEN {
        return Err(patch_options_invalid(FieldError {
            field: "fieldManager".into(),
            reason: FieldReason::TooLong,
            detail: format!("Too long: may not be more than {MAX_MANAGER_LEN} bytes"),
        }));
    }
    let force = match query.get("force").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "invalid value for force: {other:?}"
            )))
        }
    };
    let config: Value = serde_yaml::from_slice(req.body())
        .map_err(|e| Error::BadRequest(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(Error::BadRequest(
            "error decoding YAML: the applied configuration is not an object".into(),
        ));
    }
    let av = config["apiVersion"].as_str().unwrap_or("");
    let kind = config["kind"].as_str().unwrap_or("");
    if av != def.api_version() || kind != def.kind {
        return Err(Error::BadRequest(format!(
            "invalid object type: {}",
            gvk_string(av, kind)
        )));
    }
    if !config["metadata"]["managedFields"].is_null() {
        return Err(Error::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let (decoded, unknown) = def.strategy.decode(config.clone()).map_err(|e| {
        Error::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        match opts.field_validation {
            FieldValidation::Strict => {
                return Err(Error::BadRequest(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )))
            }
            FieldValidation::Warn => warnings = list,
            FieldValidation::Ignore => {}
        }
    }
    let config = keep_known(&config, &decoded);
    let reset = match subresource {
        Some("status") => Reset::AllButStatus,
        Some(_) => Reset::None,
        None if def.strategy.has_status() => Reset::Status,
        None => Reset::None,
    };
    let write_opts = WriteOptions {
        track: None,
        force_allow_create: true,
        // Unknown fields were reported above, from the body.
        field_validation: FieldValidation::Ignore,
        ..opts.clone()
    };
    let api_version = def.api_version();
    storage
        .guaranteed_update(def, ns, name, subresource, &write_opts, |current| {
            let live = current.map(|c| {
                let mut c = c.clone();
                if let Some(m) = c["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                c
            });
            let managed = ManagedFields::decode(
                live.as_ref()
                    .and_then(|l| l["metadata"].get("managedFields")),
            )
            .map_err(|e| Error::Internal(format!("failed to decode managed fields: {e}")))?;
            let now = now_rfc3339();
            let ctx = Context {
                schema: schema.as_ref(),
                type_name: &def.definition,
                api_version: &api_version,
                subresource: subresource.unwrap_or(""),
                reset,
                now: &now,
            };
            let applied = ctx
                .apply(live.as_ref(), &config, managed, &manager, force)
                .map_err(|e| match e {
                    ApplyError::Conflicts(c) => Error::ApplyConflict {
                        message: c.message(),
                        causes: c
                            .0
                            .iter()
                            .map(|x| {
                                (
                                    distro_apimachinery::apply::path_string(&x.path),
                                    format!("conflict with {}", x.manager),
                                )
                            })
                            .collect(),
                    },
                    ApplyError::Invalid(m) => Error::BadRequest(format!(
                        "failed to create typed patch object ({} /{name}): {m}",
                        gvk_string(&api_version, &def.kind)
                    )),
                })?;
            let mut obj = applied.object;
            set_managed_fields(&mut obj, &applied.managed);
            let (obj, mut w) = storage.admit_body(def, obj, &write_opts)?;
            w.extend(warnings.iter().cloned());
            Ok((obj, w))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_from_user_agent() {
        assert_eq!(
            manager_name(
                None,
                Some("kubectl-client-side-apply/v1.30.0 (linux/amd64) kubernetes/7c48c2b")
            ),
            "kubectl-client-side-apply"
        );
        assert_eq!(manager_name(Some("mine"), Some("kubectl/v1")), "mine");
        assert_eq!(
            manager_name(Some(""), Some("kubectl-edit/v1")),
            "kubectl-edit"
        );
        assert_eq!(manager_name(None, None), "");
        let long = "x".repeat(200);
        assert_eq!(manager_name(None, Some(&long)).len(), 128);
    }

    #[test]
    fn keep_known_drops_unknown_fields_only() {
        let config =
            serde_json::json!({"spec": {"replicas": 2, "bogus": 1}, "metadata": {"name": "a"}});
        let kept =
            serde_json::json!({"spec": {"replicas": 2, "selector": {}}, "metadata": {"name": "a"}});
        assert_eq!(
            keep_known(&config, &kept),
            serde_json::json!({"spec": {"replicas": 2}, "metadata": {"name": "a"}})
        );
        assert_eq!(
            gvk_string("apps/v1", "Deployment"),
            "apps/v1, Kind=Deployment"
        );
        assert_eq!(gvk_string("v1", "Pod"), "/v1, Kind=Pod");
    }
}
