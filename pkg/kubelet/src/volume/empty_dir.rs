//! emptyDir specifics: the tmpfs size for `medium: Memory` (and for secrets and projected
//! volumes, which upstream also keeps in memory) and disk usage measurement for `sizeLimit`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::{io_err, Error};

/// Size of a memory-backed volume as upstream's `calculateEmptyDirMemorySize`: the node's
/// allocatable memory, lowered to the pod's memory limit when every container has one, lowered
/// to `size_limit` when that is positive and smaller. `None` when nothing is known (the
/// kernel's default tmpfs size then applies).
pub fn memory_volume_size(
    allocatable: &BTreeMap<String, ApiQuantity>,
    pod: &Pod,
    size_limit: Option<&ApiQuantity>,
) -> Option<u64> {
    let parse = |q: &ApiQuantity| Quantity::parse(&q.0).ok().map(|q| q.value());
    let mut size = allocatable.get("memory").and_then(parse);
    if let Some(pod_limit) = pod_memory_limit(pod) {
        if pod_limit > 0 && size.is_none_or(|s| pod_limit <= s) {
            size = Some(pod_limit);
        }
    }
    if let Some(limit) = size_limit.and_then(parse) {
        if limit > 0 && size.is_none_or(|s| limit <= s) {
            size = Some(limit);
        }
    }
    size.and_then(|s| u64::try_from(s).ok())
}

/// The pod's memory limit as its cgroup gets it: the sum over containers (or the largest init
/// container, if larger) plus overhead, only when every container declares a memory limit.
pub fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &Container| -> Option<i64> {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        Quantity::parse(&q.0).ok().map(|q| q.value())
    };
    let mut sum = 0i64;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    for c in spec.init_containers.iter().flatten() {
        sum = sum.max(limit(c)?);
    }
    if let Some(overhead) = spec.overhead.as_ref().and_then(|o| o.get("memory")) {
        if let Ok(q) = Quantity::parse(&overhead.0) {
            sum = sum.saturating_add(q.value());
        }
    }
    Some(sum)
}

/// Bytes `dir` occupies on disk (allocated blocks, each inode once), as `du` counts them.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be walked.
pub fn disk_usage(dir: &Path) -> Result<u64, Error> {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) -> Result<(), Error> {
        for entry in fs::read_dir(dir).map_err(io_err("measure", dir))? {
            let entry = entry.map_err(io_err("measure", dir))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Files the pod deletes while we walk are simply not counted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("measure", &entry.path())(e)),
            };
            if seen.insert((meta.dev(), meta.ino())) {
                *total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
            if meta.is_dir() {
                walk(&entry.path(), seen, total)?;
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, &mut HashSet::new(), &mut total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(limit: Option<&str>) -> Container {
        Container {
            resources: limit.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), ApiQuantity(l.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(limits: &[Option<&str>]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: limits.iter().map(|l| container(*l)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_size_takes_the_smallest_known_bound() {
        let alloc = BTreeMap::from([("memory".to_string(), ApiQuantity("1Gi".into()))]);
        let mi = |n: u64| Some(n * 1024 * 1024);
        assert_eq!(memory_volume_size(&alloc, &pod(&[None]), None), mi(1024));
        assert_eq!(
            memory_volume_size(&alloc, &pod(&[Some("100Mi"), Some("28Mi")]), None),
            mi(128)
        );
        assert_eq!(
            memory_volume_size(&alloc, &pod(&[Some("100Mi"), None]), None),
            mi(1024),
            "one container without a limit: the pod is unbounded"
        );
        assert_eq!(
            memory_volume_size(
                &alloc,
                &pod(&[Some("100Mi")]),
                Some(&ApiQuantity("64Mi".into()))
            ),
            mi(64)
        );
        assert_eq!(
            memory_volume_size(
                &alloc,
                &pod(&[Some("100Mi")]),
                Some(&ApiQuantity("2Gi".into()))
            ),
            mi(100),
            "a sizeLimit above the pod limit does not raise it"
        );
        assert_eq!(
            memory_volume_size(&BTreeMap::new(), &pod(&[None]), None),
            None
        );
    }

    #[test]
    fn usage_counts_blocks_once() {
        let tmp = tempfile::tempdir().unwrap();
        let before = disk_usage(tmp.path()).unwrap();
        fs::create_dir(tmp.path().join("d")).unwrap();
        fs::write(tmp.path().join("d/f"), vec![1u8; 64 * 1024]).unwrap();
        fs::hard_link(tmp.path().join("d/f"), tmp.path().join("g")).unwrap();
        let after = disk_usage(tmp.path()).unwrap();
        assert!(after - before >= 64 * 1024, "{before} -> {after}");
        assert!(
            after - before < 2 * 64 * 1024,
            "hard link counted twice: {after}"
        );
    }
}
