//! The service account controller: every active namespace has a `default` ServiceAccount,
//! recreated if deleted, as upstream's (`pkg/controller/serviceaccount`). Terminating
//! namespaces are left alone, or the namespace controller could never empty them.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::{already_exists, namespace_closed, terminating, Backoff, Clients, Error};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_NAME: &str = "default";

struct Ctx {
    client: Client,
    accounts: Store<ServiceAccount>,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let namespaces = clients.informers.get::<Namespace>();
    let accounts = clients.informers.get::<ServiceAccount>();
    let ctx = Arc::new(Ctx {
        client: clients.writer("service-account-controller"),
        accounts: accounts.store(),
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
        .watches_shared_stream(accounts.subscribe(), |sa: Arc<ServiceAccount>| {
            (sa.name_any() == DEFAULT_NAME)
                .then(|| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
                .flatten()
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive("serviceaccount", results).await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::<ServiceAccount>::new(DEFAULT_NAME).within(&name);
    if ctx.accounts.get(&key).is_some() {
        ctx.backoff.succeeded(&name);
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_NAME.into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::debug!(namespace = %name, "created ServiceAccount default"),
        // The cache was behind, or the namespace closed meanwhile: nothing to do.
        Err(e) if already_exists(&e) || namespace_closed(&e) => {}
        Err(e) => {
            return Err(Error::api(format!(
                "creating ServiceAccount default in {name}"
            ))(e))
        }
    }
    ctx.backoff.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::requeue_with_backoff(&ctx.backoff, &ns)
}
