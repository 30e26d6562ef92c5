//! host-local style address management: one file per allocated address.
//!
//! Like the reference `host-local` plugin's disk store, each reservation is a file named by the
//! address under `<dataDir>/ipam/<network>/`, holding `<containerID>\r\n<ifname>`, and
//! `last_reserved_ip.0` remembers where the previous allocation ended so addresses are handed
//! out round-robin (a just-released address is not reused at once while others are free).
//! An IPv6 range of a dual-stack node shares the directory and keeps its own
//! `last_reserved_ip.1`, as host-local does for a second range set.
//! Every operation holds an exclusive `flock` on `<dir>/lock`, so concurrent plugin processes
//! never hand out one address twice, and state survives restarts because it is only files.
//!
//! Unlike host-local, a repeated allocation for the same container and interface returns the
//! address it already holds instead of failing, so a retried ADD is idempotent.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

const LOCK: &str = "lock";

/// The reservations of one network in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    range: IpNet,
}

/// The lock held for the duration of one operation; dropping it unlocks.
struct Locked(#[allow(dead_code)] Flock<File>);

/// Whether a reservation file's content names `owner` (`<id>\r\n<ifname>`). Files written by
/// host-local before 0.8 hold only the id; those match on the id.
fn owned_by(content: &str, owner: &str) -> bool {
    let content = content.trim();
    content == owner || (!content.contains('\n') && owner.split("\r\n").next() == Some(content))
}

impl Store {
    /// A store for `network` under `<data_dir>/ipam/`, allocating from `range` (IPv4 or IPv6)
    /// minus its network address, its first address (the gateway) and its last address (the
    /// IPv4 broadcast address; kept symmetric for IPv6).
    pub fn new(data_dir: &Path, network: &str, range: impl Into<IpNet>) -> Self {
        Store {
            dir: data_dir.join("ipam").join(network),
            range: range.into().trunc(),
        }
    }

    fn v4(&self) -> bool {
        matches!(self.range, IpNet::V4(_))
    }

    fn to_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u32::from(v).into(),
            IpAddr::V6(v) => u128::from(v),
        }
    }

    fn addr_at(&self, v: u128) -> IpAddr {
        if self.v4() {
            // In range by construction: IPv4 bounds never exceed u32.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    }

    /// host-local's per-range-set "where did I stop" file: `.0` for IPv4, `.1` for IPv6.
    fn last_reserved(&self) -> PathBuf {
        self.dir.join(if self.v4() {
            "last_reserved_ip.0"
        } else {
            "last_reserved_ip.1"
        })
    }

    /// The directory holding the reservations.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Locked> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating IPAM directory", &self.dir, e))?;
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening IPAM lock", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, errno)| Error::io("locking", &path, errno.into()))
    }

    /// First and last assignable address.
    fn bounds(&self) -> (u128, u128) {
        let net = Self::to_u128(self.range.network());
        let last = Self::to_u128(self.range.broadcast());
        // Skip the network address and the gateway; keep off the last (broadcast) address.
        (net + 2, last - 1)
    }

    fn owner(id: &str, ifname: &str) -> String {
        format!("{id}\r\n{ifname}")
    }

    /// The address reserved for `id`/`ifname`, if any.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be read.
    pub fn get(&self, id: &str, ifname: &str) -> Result<Option<IpAddr>> {
        let _lock = self.lock()?;
        Ok(self.find(&Self::owner(id, ifname))?.into_iter().next())
    }

    /// Reservations whose file content is `owner`, in directory order.
    fn find(&self, owner: &str) -> Result<Vec<IpAddr>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io("reading IPAM directory", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading IPAM directory", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
                .filter(|ip| self.range.contains(ip))
            else {
                continue;
            };
            match std::fs::read_to_string(entry.path()) {
                Ok(content) if owned_by(&content, owner) => found.push(ip),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("reading IPAM reservation", entry.path(), e)),
            }
        }
        Ok(found)
    }

    /// Reserves an address for `id`/`ifname`, or returns the one it already holds.
    ///
    /// # Errors
    /// [`Error::RangeFull`] when every address is taken; [`Error::Io`] on file errors.
    pub fn allocate(&self, id: &str, ifname: &str) -> Result<IpAddr> {
        let _lock = self.lock()?;
        let owner = Self::owner(id, ifname);
        if let Some(ip) = self.find(&owner)?.into_iter().next() {
            return Ok(ip);
        }
        let (first, last) = self.bounds();
        let last_path = self.last_reserved();
        let start = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .map(Self::to_u128)
            .filter(|ip| (first..=last).contains(ip))
            .map(|ip| if ip == last { first } else { ip + 1 })
            .unwrap_or(first);
        let size = last - first + 1;
        for i in 0..size {
            let candidate = first + (start - first + i) % size;
            let ip = self.addr_at(candidate);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::io("writing IPAM reservation", &path, e))?;
                    std::fs::write(&last_path, ip.to_string())
                        .map_err(|e| Error::io("writing", &last_path, e))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("creating IPAM reservation", &path, e)),
            }
        }
        Err(Error::RangeFull {
            range: format!("{}-{}", self.addr_at(first), self.addr_at(last)),
        })
    }

    /// Releases every address held by `id`/`ifname`; releasing nothing is not an error.
    ///
    /// # Errors
    /// [`Error::Io`] when a reservation file cannot be removed.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let released = self.find(&Self::owner(id, ifname))?;
        for ip in &released {
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing IPAM reservation", &path, e)),
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, cidr: &str) -> Store {
        Store::new(dir, "net", cidr.parse::<IpNet>().unwrap())
    }

    #[test]
    fn allocates_distinct_addresses_skipping_gateway() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), "10.99.0.0/24");
        let a = s.allocate("c1", "eth0").unwrap();
        let b = s.allocate("c2", "eth0").unwrap();
        assert_eq!(a, IpAddr::from([10, 99, 0, 2]));
        assert_eq!(b, IpAddr::from([10, 99, 0, 3]));
        let content = std::fs::read_to_string(s.dir().join("10.99.0.2")).unwrap();
        assert_eq!(content, "c1\r\neth0");
    }

    #[test]
    fn repeated_allocation_reuses_and_release_frees() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), "10.99.0.0/24");
        let a = s.allocate("c1", "eth0").unwrap();
        assert_eq!(s.allocate("c1", "eth0").unwrap(), a);
        assert_ne!(s.allocate("c1", "eth1").unwrap(), a);
        assert_eq!(s.get("c1", "eth0").unwrap(), Some(a));
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![a]);
        assert!(s.release("c1", "eth0").unwrap().is_empty());
        assert_eq!(s.get("c1", "eth0").unwrap(), None);
        assert!(!s.dir().join(a.to_string()).exists());
    }

    #[test]
    fn round_robin_wraps_and_reports_full() {
        let tmp = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .7 broadcast → .2-.6 assignable.
        let s = store(tmp.path(), "10.99.0.0/29");
        let ips: Vec<_> = (0..5)
            .map(|i| s.allocate(&format!("c{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(ips.first(), Some(&IpAddr::from([10, 99, 0, 2])));
        assert_eq!(ips.last(), Some(&IpAddr::from([10, 99, 0, 6])));
        let err = s.allocate("c5", "eth0").unwrap_err();
        assert!(matches!(err, Error::RangeFull { .. }), "{err}");
        assert!(err.to_string().contains("10.99.0.2-10.99.0.6"));
        s.release("c1", "eth0").unwrap();
        // The only free address is handed out after wrapping around.
        assert_eq!(
            s.allocate("c6", "eth0").unwrap(),
            IpAddr::from([10, 99, 0, 3])
        );
    }

    #[test]
    fn ipv6_range_shares_the_directory_with_its_own_cursor() {
        let tmp = tempfile::tempdir().unwrap();
        let v4 = store(tmp.path(), "10.99.0.0/24");
        let v6 = store(tmp.path(), "fd12:3456::/64");
        let a4 = v4.allocate("c1", "eth0").unwrap();
        let a6 = v6.allocate("c1", "eth0").unwrap();
        assert_eq!(a6, "fd12:3456::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            v6.allocate("c2", "eth0").unwrap(),
            "fd12:3456::3".parse::<IpAddr>().unwrap()
        );
        assert!(v6.dir().join("last_reserved_ip.1").exists());
        // Each family only sees its own reservations.
        assert_eq!(v4.get("c1", "eth0").unwrap(), Some(a4));
        assert_eq!(v6.get("c1", "eth0").unwrap(), Some(a6));
        assert_eq!(v6.release("c1", "eth0").unwrap(), vec![a6]);
        assert_eq!(v4.get("c1", "eth0").unwrap(), Some(a4));
    }

    #[test]
    fn state_survives_a_new_store() {
        let tmp = tempfile::tempdir().unwrap();
        let a = store(tmp.path(), "10.99.0.0/24")
            .allocate("c1", "eth0")
            .unwrap();
        let s = store(tmp.path(), "10.99.0.0/24");
        assert_eq!(s.get("c1", "eth0").unwrap(), Some(a));
        assert_ne!(s.allocate("c2", "eth0").unwrap(), a);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // Each thread its own Store (and lock file handle), as separate processes have.
                    let s = store(&dir, "10.99.0.0/24");
                    (0..10)
                        .map(|i| s.allocate(&format!("t{t}-{i}"), "eth0").unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<IpAddr> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "an address was handed out twice");
    }
}
