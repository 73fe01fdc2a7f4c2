//! A bounded cache of `O_PATH` fds of layer directories, so a request reaches its object
//! with one `*at` call from its parent directory's fd instead of resolving the whole path
//! from the layer root (O(1) instead of O(depth) per request, in the daemon and in the
//! kernel).
//!
//! Invariants: an entry is the directory object that a union inode (one `Inode` value, in
//! one incarnation) has in one layer; it is only ever made from a successful open whose
//! object was checked to be that inode's, so a directory that appears later in a layer (a
//! copy-up) is simply found then. An fd follows its directory wherever it is renamed; an
//! entry of an inode that is gone is never reached again (the key names the `Inode` value
//! and its generation) and ages out. At most [`CAPACITY`] fds are held.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::inode::Ino;
use crate::layers::LayerId;

/// The most directory fds held at once.
pub const CAPACITY: usize = 512;

/// Which directory an entry is: the layer, the union inode number, the `Inode` value's
/// serial and its generation.
pub type DirKey = (LayerId, Ino, u64, u64);

#[derive(Default)]
struct Entries {
    map: HashMap<DirKey, (Arc<OwnedFd>, u64)>,
    /// Bumped on every use; an entry's stamp says when it was last used.
    clock: u64,
}

#[derive(Default)]
pub struct DirFds {
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for DirFds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirFds({} held)", self.len())
    }
}

impl DirFds {
    pub fn get(&self, key: &DirKey) -> Option<Arc<OwnedFd>> {
        let mut e = self.entries.lock();
        e.clock += 1;
        let now = e.clock;
        let (fd, stamp) = e.map.get_mut(key)?;
        *stamp = now;
        Some(Arc::clone(fd))
    }

    /// Keeps `fd` for `key`; when full, first drops the least recently used half.
    pub fn insert(&self, key: DirKey, fd: OwnedFd) -> Arc<OwnedFd> {
        let fd = Arc::new(fd);
        let mut e = self.entries.lock();
        if e.map.len() >= CAPACITY {
            let mut stamps: Vec<u64> = e.map.values().map(|(_, s)| *s).collect();
            let mid = stamps.len() / 2;
            let (_, cut, _) = stamps.select_nth_unstable(mid);
            let cut = *cut;
            e.map.retain(|_, (_, s)| *s > cut);
        }
        e.clock += 1;
        let now = e.clock;
        e.map.insert(key, (Arc::clone(&fd), now));
        fd
    }

    /// Drops the fds of the `Inode` value `ino` with `serial` (the kernel forgot it).
    pub fn forget(&self, ino: Ino, serial: u64) {
        self.entries
            .lock()
            .map
            .retain(|&(_, i, s, _), _| (i, s) != (ino, serial));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/").unwrap())
    }

    #[test]
    fn bounded_and_recently_used_stay() {
        let c = DirFds::default();
        c.insert((0, 1, 0, 0), fd());
        for i in 2..(CAPACITY as u64 + 100) {
            c.insert((0, i, 0, 0), fd());
            // Entry 1 is used all the time: it survives every eviction.
            assert!(c.get(&(0, 1, 0, 0)).is_some());
        }
        assert!(c.len() <= CAPACITY);
        assert!(c.get(&(0, 2, 0, 0)).is_none(), "the oldest went first");
        assert!(c.get(&(1, 1, 0, 0)).is_none(), "keys are per layer");
        c.forget(1, 0);
        assert!(c.get(&(0, 1, 0, 0)).is_none(), "forgotten");
    }
}
