//! Authentication: who is asking. Client certificates (verified by TLS against the cluster CA)
//! and bearer tokens (service-account JWTs); everyone else is anonymous.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// An authenticated user, as upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:admin`, `system:serviceaccount:ns:sa`, `system:node:n1`).
    pub name: String,
    /// Stable id, if any.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (e.g. the service-account token's pod).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The superuser group.
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    /// A user from a client certificate: CN is the name, O entries the groups.
    pub fn from_cert(user: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: user,
            groups,
            ..Default::default()
        }
    }

    /// The user a service account's token stands for.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// True for the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// Member of `system:masters`: allowed everything, as upstream's superuser shortcut.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// `status.userInfo` of reviews.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}
