//! layerfs: a copy-on-write union filesystem served over FUSE, with the semantics and the
//! on-disk upper format of Linux kernel overlayfs.
//!
//! The core ([`union::LayerFs`] and the modules it is split into) answers every operation
//! with `io::Result`; [`fuse`] adapts it to fuser; [`daemon`] mounts and serves it.

pub mod acl;
pub mod atime;
pub mod copyup;
pub mod creds;
pub mod daemon;
pub mod dirfds;
pub mod dirmerge;
pub mod fileops;
pub mod fuse;
pub mod handles;
pub mod idmap;
pub mod index;
pub mod inode;
pub mod layers;
pub mod metacopy;
pub mod namespace;
pub mod numbers;
pub mod options;
pub mod origin;
pub mod privs;
pub mod redirect;
pub mod rename;
pub mod scratch;
pub mod setup;
pub mod statoverride;
pub mod sys;
pub mod union;
pub mod whiteout;
pub mod workdir;
pub mod xattrs;

#[cfg(test)]
mod format_fuzz;

pub use options::{MountSpec, UsageError};
pub use union::{Caller, FsConfig, LayerFs};
