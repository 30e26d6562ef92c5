//! The CNI plugin (spec 1.0.0) that containerd runs as `<bin_dir>/distro`.
//!
//! It does the work of the reference `bridge`, `host-local` and `portmap` plugins chained, as
//! k3s' flannel setup does, in one process: see [`config`] for the config, [`ipam`] for address
//! management.

pub mod config;
pub mod ipam;
