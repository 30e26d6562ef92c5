//! Content negotiation: which representation a client's `Accept` header asks for, and which
//! body types we read. We speak JSON only and never advertise protobuf, so clients that prefer
//! protobuf fall back to JSON (a protobuf body gets 415).

/// One media range of an `Accept` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased.
    pub essence: String,
    /// Parameters (`as`, `g`, `v`, `q`, …).
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an `Accept` header into its media ranges, in order.
pub fn parse_accept(header: Option<&str>) -> Vec<MediaType> {
    let Some(h) = header else { return Vec::new() };
    h.split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let essence = pieces.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = pieces
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some(MediaType { essence, params })
        })
        .collect()
}

/// What the response should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Plain JSON.
    Json,
    /// A `meta.k8s.io` Table (version `v1` or `v1beta1`).
    Table(String),
    /// `PartialObjectMetadata(List)`.
    Metadata(String),
    /// Aggregated discovery (`v2` or `v2beta1`).
    AggregatedDiscovery(String),
    /// Nothing we can produce.
    Unacceptable,
}

fn is_json(essence: &str) -> bool {
    matches!(
        essence,
        "application/json" | "application/*" | "*/*" | "application/yaml"
    )
}

/// Picks the first acceptable representation from `Accept`.
pub fn negotiate(accept: Option<&str>) -> Want {
    let types = parse_accept(accept);
    if types.is_empty() {
        return Want::Json;
    }
    for t in &types {
        if !is_json(&t.essence) {
            continue;
        }
        match (t.param("as"), t.param("g"), t.param("v")) {
            (Some("Table"), Some("meta.k8s.io"), Some(v @ ("v1" | "v1beta1"))) => {
                return Want::Table(v.into())
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some(v @ ("v1" | "v1beta1")),
            ) => return Want::Metadata(v.into()),
            (
                Some("APIGroupDiscoveryList"),
                Some("apidiscovery.k8s.io"),
                Some(v @ ("v2" | "v2beta1")),
            ) => return Want::AggregatedDiscovery(v.into()),
            (Some(_), _, _) => continue,
            (None, _, _) => return Want::Json,
        }
    }
    Want::Unacceptable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_headers() {
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")),
            Want::Table("v1".into())
        );
        assert_eq!(
            negotiate(Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")),
            Want::AggregatedDiscovery("v2".into())
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")),
            Want::Json
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf")),
            Want::Unacceptable
        );
        assert_eq!(negotiate(None), Want::Json);
    }
}
