//! Service account tokens for projected volumes, cached and refreshed as upstream's kubelet
//! token manager (`pkg/kubelet/token`) does.
//!
//! # Design
//! The kubelet supplies a [`TokenSource`] (its TokenRequest call on `serviceaccounts/token`)
//! and a [`Clock`]. A cached token is reused until 80 % of its lifetime has passed or it is
//! 24 h old, whichever comes first; then the next [`TokenManager::token`] asks again. When
//! asking fails but the cached token has not expired yet, the cached one is kept, so a short
//! API outage does not break running pods.
//!
//! # Limits
//! Upstream adds up to 10 s of random jitter to the refresh point; this does not, so tests can
//! pin the exact instant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::Error;

/// Tokens older than this are refreshed whatever their lifetime (upstream `maxTTL`).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the kubelet asks the TokenRequest API for: a token for `service_account` bound to
/// the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenRequestSpec {
    /// The pod's namespace (also the service account's).
    pub namespace: String,
    /// The service account's name (`spec.serviceAccountName`, `default` when empty).
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// The pod's uid, so the token dies with the pod.
    pub pod_uid: String,
    /// `serviceAccountToken.audience`; empty means the API server's own audiences.
    pub audiences: Vec<String>,
    /// Requested lifetime (`serviceAccountToken.expirationSeconds`, default 3600).
    pub expiration_seconds: i64,
}

/// A token as the TokenRequest API returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// `status.expirationTimestamp`.
    pub expiration: SystemTime,
    /// `spec.expirationSeconds` of the response: the lifetime the server actually granted.
    pub expiration_seconds: i64,
}

/// Boxed error a [`TokenSource`] returns; its message ends up on the pod's events.
pub type TokenSourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where tokens come from: the kubelet implements this with a TokenRequest call.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// Requests a new token.
    ///
    /// # Errors
    /// Whatever the API call failed with.
    async fn request(&self, spec: &TokenRequestSpec) -> Result<IssuedToken, TokenSourceError>;
}

/// Wall-clock source, replaceable in tests.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Caches tokens per pod, service account, audience and lifetime; see the module docs.
pub struct TokenManager {
    source: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<TokenRequestSpec, IssuedToken>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager").finish_non_exhaustive()
    }
}

/// Whether `token` must be refreshed at `now` (upstream `requiresRefresh`).
pub fn requires_refresh(token: &IssuedToken, now: SystemTime) -> bool {
    refresh_at(token).is_none_or(|at| now > at)
}

/// The instant after which `token` needs a refresh: 80 % of its lifetime or 24 h after it was
/// issued, whichever is earlier. `None` when the lifetime is unusable (refresh now).
pub fn refresh_at(token: &IssuedToken) -> Option<SystemTime> {
    let lifetime = Duration::from_secs(u64::try_from(token.expiration_seconds).ok()?);
    let issued = token.expiration.checked_sub(lifetime)?;
    let by_ttl = issued.checked_add(MAX_TTL)?;
    let by_fraction = token.expiration.checked_sub(lifetime / 5)?;
    Some(by_ttl.min(by_fraction))
}

impl TokenManager {
    /// A manager asking `source` for tokens and reading time from `clock`.
    pub fn new(source: Arc<dyn TokenSource>, clock: Arc<dyn Clock>) -> Self {
        Self {
            source,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `spec`, from the cache while it is fresh.
    ///
    /// # Errors
    /// [`Error::Token`] when the source fails and no unexpired cached token exists.
    pub async fn token(&self, spec: &TokenRequestSpec) -> Result<String, Error> {
        let now = self.clock.now();
        let cached = self.lock().get(spec).cloned();
        if let Some(t) = &cached {
            if !requires_refresh(t, now) {
                return Ok(t.token.clone());
            }
        }
        match self.source.request(spec).await {
            Ok(issued) => {
                let token = issued.token.clone();
                self.lock().insert(spec.clone(), issued);
                Ok(token)
            }
            Err(e) => match cached {
                Some(t) if t.expiration > now => {
                    tracing::warn!(
                        namespace = %spec.namespace,
                        service_account = %spec.service_account,
                        error = %e,
                        "couldn't refresh a service account token; keeping the unexpired one"
                    );
                    Ok(t.token)
                }
                _ => Err(Error::Token {
                    namespace: spec.namespace.clone(),
                    service_account: spec.service_account.clone(),
                    source: e,
                }),
            },
        }
    }

    /// The earliest instant a cached token of `pod_uid` needs refreshing, so the kubelet knows
    /// when to update the pod's projected volumes again.
    pub fn next_refresh(&self, pod_uid: &str) -> Option<SystemTime> {
        self.lock()
            .iter()
            .filter(|(k, _)| k.pod_uid == pod_uid)
            .filter_map(|(_, t)| refresh_at(t))
            .min()
    }

    /// Drops the tokens of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != pod_uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenRequestSpec, IssuedToken>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// A clock tests move by hand.
    #[derive(Debug)]
    pub struct ManualClock(pub Mutex<SystemTime>);

    impl ManualClock {
        pub fn advance(&self, d: Duration) {
            let mut t = self.0.lock().unwrap();
            *t += d;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    /// Issues `token-N` tokens valid for the requested lifetime from the clock's now.
    pub struct CountingSource {
        pub clock: Arc<ManualClock>,
        pub issued: AtomicU64,
        pub fail: AtomicBool,
    }

    #[async_trait::async_trait]
    impl TokenSource for CountingSource {
        async fn request(&self, spec: &TokenRequestSpec) -> Result<IssuedToken, TokenSourceError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err("apiserver down".into());
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(IssuedToken {
                token: format!("token-{n}"),
                expiration: self.clock.now() + Duration::from_secs(spec.expiration_seconds as u64),
                expiration_seconds: spec.expiration_seconds,
            })
        }
    }

    pub fn setup() -> (Arc<ManualClock>, Arc<CountingSource>, TokenManager) {
        let clock = Arc::new(ManualClock(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )));
        let source = Arc::new(CountingSource {
            clock: clock.clone(),
            issued: AtomicU64::new(0),
            fail: AtomicBool::new(false),
        });
        let manager = TokenManager::new(source.clone(), clock.clone());
        (clock, source, manager)
    }

    fn spec(seconds: i64) -> TokenRequestSpec {
        TokenRequestSpec {
            namespace: "ns".into(),
            service_account: "default".into(),
            pod_name: "p".into(),
            pod_uid: "uid-1".into(),
            audiences: vec![],
            expiration_seconds: seconds,
        }
    }

    #[tokio::test]
    async fn refreshes_after_eighty_percent() {
        let (clock, source, m) = setup();
        let s = spec(3600);
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        clock.advance(Duration::from_secs(2880)); // exactly 80 %: still fresh
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        clock.advance(Duration::from_secs(1));
        assert_eq!(m.token(&s).await.unwrap(), "token-2");
        assert_eq!(source.issued.load(Ordering::SeqCst), 2);
        // Another audience is another token.
        let mut other = s.clone();
        other.audiences = vec!["vault".into()];
        assert_eq!(m.token(&other).await.unwrap(), "token-3");
    }

    #[tokio::test]
    async fn refreshes_after_a_day_for_long_tokens() {
        let (clock, _source, m) = setup();
        let s = spec(7 * 24 * 3600);
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        let issued = clock.now();
        assert_eq!(m.next_refresh("uid-1"), Some(issued + MAX_TTL));
        clock.advance(MAX_TTL);
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        clock.advance(Duration::from_secs(1));
        assert_eq!(m.token(&s).await.unwrap(), "token-2");
    }

    #[tokio::test]
    async fn keeps_unexpired_token_when_the_source_fails() {
        let (clock, source, m) = setup();
        let s = spec(600);
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        source.fail.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(590));
        assert_eq!(m.token(&s).await.unwrap(), "token-1");
        clock.advance(Duration::from_secs(20));
        let err = m.token(&s).await.unwrap_err().to_string();
        assert!(err.contains("apiserver down"), "{err}");
        m.forget_pod("uid-1");
        assert_eq!(m.next_refresh("uid-1"), None);
    }
}
