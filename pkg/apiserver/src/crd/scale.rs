//! The scale subresource of custom resources (`autoscaling/v1` `Scale`), read from and
//! written to the paths the CRD names, so `kubectl scale` and autoscalers work on them.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::strategy::ScaleSpec;
use super::Crds;
use crate::authn::UserInfo;
use crate::error::{Error, FieldError, Result};
use crate::handler::{error_response, json_response, Body, Route};
use crate::request::{parse_query, RequestInfo, ResourceRequest};
use crate::resources::ResourceDef;
use crate::rest::{FieldValidation, WriteOptions};

/// How a write turns the current `Scale` into the requested one.
type ScaleChange = Box<dyn Fn(&Value) -> Result<Value> + Send + Sync>;

impl Crds {
    /// The served resource and its scale paths, if `r` addresses a custom resource with scale.
    fn scale_target(&self, r: &ResourceRequest) -> Option<(Arc<ResourceDef>, ScaleSpec)> {
        let st = self.lock();
        st.served.values().find_map(|s| {
            let d = s
                .defs
                .iter()
                .find(|d| d.group == r.group && d.version == r.version && d.plural == r.resource)?;
            Some((d.clone(), s.scale.get(&r.version)?.clone()))
        })
    }

    async fn scale(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
        def: &ResourceDef,
        spec: &ScaleSpec,
    ) -> Result<Response<Body>> {
        let name = r.name.as_deref().unwrap_or_default();
        let ns = if def.namespaced {
            Some(r.namespace.as_deref().ok_or(Error::NoSuchResource)?)
        } else {
            None
        };
        let query = parse_query(req.uri().query());
        let opts = WriteOptions {
            dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
            field_validation: FieldValidation::parse(
                query.get("fieldValidation").map(String::as_str),
            )?,
            field_manager: query.get("fieldManager").cloned(),
            ..WriteOptions::default()
        };
        let change: ScaleChange = match r.verb {
            "get" => {
                let obj = self.storage.get(def, ns, name).await?;
                return Ok(json_response(StatusCode::OK, &to_scale(&obj, spec)));
            }
            "update" => {
                let body: Value = serde_json::from_slice(req.body())
                    .map_err(|e| Error::BadRequest(format!("error decoding JSON body: {e}")))?;
                Box::new(move |_current: &Value| Ok(body.clone()))
            }
            "patch" => {
                let kind = crate::handler::PatchKind::of(req)?;
                let patch: Value = serde_json::from_slice(req.body())
                    .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
                // A Scale has no lists, so a strategic merge is a merge.
                Box::new(move |current: &Value| {
                    kind.apply(
                        current,
                        &patch,
                        &distro_apimachinery::schema::NoSchema,
                        "io.k8s.api.autoscaling.v1.Scale",
                    )
                })
            }
            other => {
                return Err(Error::MethodNotAllowed(format!(
                    "{}/scale does not support {other}",
                    def.group_resource()
                )))
            }
        };
        let w = self
            .storage
            .guaranteed_update(def, ns, name, Some("scale"), &opts, |current| {
                let Some(current) = current else {
                    return Err(Error::not_found(def.group_resource(), name));
                };
                let mut scale = to_scale(current, spec);
                if let Some(m) = scale["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let next_scale = change(&scale)?;
                let replicas = &next_scale["spec"]["replicas"];
                let invalid = |detail: &str| Error::Invalid {
                    kind: "Scale".into(),
                    group: "autoscaling".into(),
                    name: name.to_string(),
                    causes: vec![FieldError::invalid("spec.replicas", replicas, detail)],
                };
                let n = match replicas {
                    Value::Null => 0,
                    v => v.as_i64().ok_or_else(|| invalid("must be an integer"))?,
                };
                if n < 0 {
                    return Err(invalid("must be greater than or equal to 0"));
                }
                let mut obj = current.clone();
                obj["metadata"]["resourceVersion"] =
                    next_scale["metadata"]["resourceVersion"].clone();
                if obj["metadata"]["resourceVersion"].is_null() {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
                spec.spec_replicas
                    .set(&mut obj, json!(n))
                    .map_err(Error::Internal)?;
                scale = obj;
                Ok((scale, Vec::new()))
            })
            .await?;
        Ok(json_response(StatusCode::OK, &to_scale(&w.object, spec)))
    }
}

/// The `Scale` view of a custom resource; missing replicas read as 0, as upstream.
fn to_scale(obj: &Value, spec: &ScaleSpec) -> Value {
    let meta = &obj["metadata"];
    let int = |v: Option<&Value>| v.and_then(Value::as_i64).unwrap_or(0);
    let mut m = json!({"name": meta["name"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
        "creationTimestamp": meta["creationTimestamp"]});
    if let Some(ns) = meta["namespace"].as_str() {
        m["namespace"] = json!(ns);
    }
    let mut status = json!({"replicas": int(spec.status_replicas.get(obj))});
    if let Some(sel) = spec
        .label_selector
        .as_ref()
        .and_then(|p| p.get(obj))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(sel);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m,
        "spec": {"replicas": int(spec.spec_replicas.get(obj))}, "status": status})
}

#[async_trait::async_trait]
impl Route for Crds {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::Resource(r) = info else {
            return None;
        };
        if r.subresource.as_deref() != Some("scale") {
            return None;
        }
        let (def, spec) = self.scale_target(r)?;
        Some(
            self.scale(req, r, &def, &spec)
                .await
                .unwrap_or_else(|e| error_response(&e)),
        )
    }
}
