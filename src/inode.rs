//! The inode table: every inode the kernel knows, its place in the union and its lookup
//! count. This module alone creates, counts and drops inodes.
//!
//! Lock order: a table shard guard is never held across a syscall or another table call
//! (the `Arc<Inode>` is cloned out). `Inode::place` is a short `RwLock` held only to copy
//! or update the place. `Inode::copy_lock` is held across a copy-up; a parent's copy-up
//! always completes before a child's lock is taken, so no thread holds two.
//! `Inode::names` (a directory's names) is taken first, before any of those: one per
//! request, or for a rename both directories' in inode-number order.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::layers::LayerId;

/// An inode number as the kernel sees it (also the FUSE node id).
pub type Ino = u64;

/// The FUSE root node id.
pub const ROOT: Ino = 1;

/// Where an inode lives: its name in its parent, and which layers hold it.
#[derive(Clone, Debug)]
pub struct Place {
    pub parent: Ino,
    pub name: OsString,
    /// Whether the upper layer holds the object.
    pub upper: bool,
    /// The lower layers holding it, topmost first: for a directory every lower that merges
    /// into it (down to the first opaque one); for anything else at most one, and none once
    /// it is copied up.
    pub lowers: Vec<LayerId>,
    /// Other names of a hard-linked object seen by lookups, so that removing the name above
    /// leaves the inode reachable through another.
    pub other_names: Vec<(Ino, OsString)>,
    /// Every known name is gone (unlinked or replaced while the kernel still holds the
    /// inode, e.g. an open file): the object is reachable only through open handles.
    pub unlinked: bool,
    /// The object's last link went with the last known name: a lookup finding the same
    /// inode number has found a new object.
    pub deleted: bool,
    /// For an unlinked inode: an `O_PATH` fd of its object (in that layer), taken just
    /// before the last name went. The kernel may still use the inode (a process inside a
    /// removed directory, a walk racing the removal); this keeps the object reachable and
    /// its real inode number from being reused until the kernel forgets the inode.
    pub held: Option<(LayerId, Arc<OwnedFd>)>,
    /// Where each layer of `lowers` holds the object, one entry per lower, when some
    /// lower holds it elsewhere than at `name` in the parent's directory of that layer (a
    /// redirect was followed); empty otherwise.
    pub lower_at: Vec<LowerAt>,
    /// The redirect the upper object carries, as read at lookup or set by a rename.
    pub redirect: Option<OsString>,
    /// The object is a metacopy stub (in the upper, or a lower's stub): its data is its
    /// last lower's.
    pub metacopy: bool,
    /// A stub redirected into the data-only layers, none of which holds its object: it
    /// shows, but its data cannot be had (ENOENT at open, as the kernel's lazy lookup).
    pub data_missing: bool,
    /// Under index=on, a copied-up lower hard link: its index entry's name. The object is
    /// the upper inode there, whether or not this name is one of its upper names yet.
    pub index: Option<OsString>,
}

/// Where a lower layer holds an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerAt {
    /// This name in the parent's directory of that layer.
    Name(OsString),
    /// This path below the layer's root (an absolute redirect, without its leading '/').
    Path(std::path::PathBuf),
}

impl Place {
    /// The place of an object found as `name` in `parent` in layer `layer` (the upper
    /// when `upper`), before any layer below merges into it.
    pub fn found(parent: Ino, name: &OsStr, layer: LayerId, upper: bool) -> Place {
        Place {
            parent,
            name: name.to_os_string(),
            upper,
            lowers: if upper { Vec::new() } else { vec![layer] },
            other_names: Vec::new(),
            unlinked: false,
            deleted: false,
            held: None,
            lower_at: Vec::new(),
            redirect: None,
            metacopy: false,
            data_missing: false,
            index: None,
        }
    }

    /// Whether the object the mount shows is in the upper layer (under this name, or as
    /// an index entry).
    pub fn in_upper(&self) -> bool {
        self.upper || self.index.is_some()
    }

    /// The layer holding the object's data: the last lower of a metacopy stub, else the
    /// top one.
    pub fn data_layer(&self) -> Option<LayerId> {
        if self.data_missing {
            None
        } else if self.metacopy {
            self.lowers.last().copied()
        } else {
            self.top()
        }
    }

    /// Where layer `layer` holds the object: its name in the parent's directory of that
    /// layer, or a path from the layer's root.
    pub fn at(&self, layer: LayerId) -> LowerAt {
        self.lowers
            .iter()
            .position(|&l| l == layer)
            .and_then(|i| self.lower_at.get(i))
            .cloned()
            .unwrap_or_else(|| LowerAt::Name(self.name.clone()))
    }

    /// Adds lower `layer`, which holds the object at `at`.
    pub fn push_lower(&mut self, layer: LayerId, at: LowerAt) {
        let explicit = !self.lower_at.is_empty();
        if explicit || at != LowerAt::Name(self.name.clone()) {
            if !explicit {
                let plain = LowerAt::Name(self.name.clone());
                self.lower_at = vec![plain; self.lowers.len()];
            }
            self.lower_at.push(at);
        }
        self.lowers.push(layer);
    }

    /// The layer whose object the mount shows.
    pub fn top(&self) -> Option<LayerId> {
        if self.in_upper() {
            Some(0)
        } else {
            self.lowers.first().copied()
        }
    }

    /// Every layer holding the object, top first.
    pub fn layers(&self) -> impl Iterator<Item = LayerId> + '_ {
        self.upper
            .then_some(0)
            .into_iter()
            .chain(self.lowers.iter().copied())
    }
}

/// One inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    pub ino: Ino,
    /// Unique to this `Inode` value (a number reused for a new value gets a new serial):
    /// what caches keyed by inode tell incarnations apart with.
    serial: u64,
    /// `S_IFMT` bits of the object.
    kind: AtomicU32,
    /// Bumped when the inode number comes back for a different object (the real inode
    /// number was freed and reused while the kernel still held the old one), so the
    /// kernel drops its stale inode.
    generation: AtomicU64,
    lookups: AtomicU64,
    place: RwLock<Place>,
    /// Set once the object is in the upper layer (readers switch their fds over).
    copied_up: AtomicBool,
    /// Serialises copy-ups of this inode.
    pub copy_lock: Mutex<()>,
    /// Kept in the table even at lookup count zero: a copied-up lower hard link, whose
    /// other names must keep finding the copy.
    pinned: AtomicBool,
    /// For a directory: held shared while a lookup resolves a name in it and records the
    /// result, and exclusively while a name in it is created, removed or renamed. The
    /// kernel revalidates cached names without locking their directory, so without this
    /// a lookup could record an object that a concurrent unlink has just removed.
    names: RwLock<()>,
    /// For a directory: bumped as each change of its names ends, so a listing taken at
    /// one value is known current while the value holds.
    names_epoch: AtomicU64,
    /// How the inode's open handles move data; see [`IoModes`].
    io: Mutex<IoModes>,
    /// Signalled when a handle counted in `io` goes.
    io_ended: Condvar,
}

/// A change of a directory's names in progress (see [`Inode::names_changing`]).
pub struct NamesChanging<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
    epoch: &'a AtomicU64,
}

impl Drop for NamesChanging<'_> {
    fn drop(&mut self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// The open handles of an inode by data path, and whether pages the kernel cached for it
/// may be stale because data was written past its page cache since (through a passthrough
/// handle): the next cached open then has the kernel drop them.
#[derive(Debug, Default)]
struct IoModes {
    cached: u32,
    through: u32,
    /// How many of the passthrough handles may write: writes through their mappings
    /// change the file's times where the daemon does not see them.
    writing_through: u32,
    /// The passthrough handles read a lower object: the kernel holds it as the inode's
    /// one backing file, so the data must not change until they close.
    through_lower: bool,
    pages_stale: bool,
}

fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Inode {
    /// A new inode of type `kind` at `place`, with `lookups` kernel references.
    fn new(ino: Ino, kind: u32, lookups: u64, place: Place) -> Inode {
        Inode {
            ino,
            serial: next_serial(),
            kind: AtomicU32::new(kind),
            generation: AtomicU64::new(0),
            lookups: AtomicU64::new(lookups),
            copied_up: AtomicBool::new(place.in_upper()),
            place: RwLock::new(place),
            copy_lock: Mutex::new(()),
            pinned: AtomicBool::new(false),
            names: RwLock::new(()),
            names_epoch: AtomicU64::new(0),
            io: Mutex::new(IoModes::default()),
            io_ended: Condvar::new(),
        }
    }

    pub fn place(&self) -> Place {
        self.place.read().clone()
    }

    /// Counts a new open handle and says how it moves data: `(passed through, the kernel
    /// may keep the pages it cached)`. It follows the handles already open, if any (the
    /// kernel refuses an inode opened both ways at once, ETXTBSY), else `wanted`.
    /// `on_upper` says where the handle's file is, `writing` whether it may change data:
    /// a handle that writes cannot join passthrough handles reading a lower (ETXTBSY).
    /// `unseen`: passed through, it would move the times unseen (`times_move_unseen`).
    pub fn start_io(
        &self,
        wanted: bool,
        on_upper: bool,
        writing: bool,
        unseen: bool,
    ) -> io::Result<(bool, bool)> {
        let mut io = self.io.lock();
        if writing {
            self.wait_lower_readers(&mut io)?;
        }
        let through = match (io.cached, io.through) {
            (0, 0) => wanted,
            (_, 0) => false,
            _ => true,
        };
        if through {
            if io.through == 0 {
                io.through_lower = !on_upper;
            }
            io.through += 1;
            io.writing_through += u32::from(unseen);
            // Writes passed through do not reach the inode's page cache.
            io.pages_stale = true;
            return Ok((true, false));
        }
        io.cached += 1;
        let keep = !std::mem::take(&mut io.pages_stale);
        Ok((false, keep))
    }

    /// Whether the inode's data is held unchanged for passthrough handles reading its
    /// lower object (see [`IoModes::through_lower`]): a change of it must fail, ETXTBSY.
    pub fn data_held(&self) -> io::Result<()> {
        self.wait_lower_readers(&mut self.io.lock())
    }

    /// ETXTBSY while passthrough handles read the lower object. The kernel tells the
    /// daemon of a close only after it (release is asynchronous), so a change right after
    /// the last reader closed first waits a moment for that release.
    fn wait_lower_readers(&self, io: &mut MutexGuard<'_, IoModes>) -> io::Result<()> {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while io.through > 0 && io.through_lower {
            if self.io_ended.wait_until(io, until).timed_out() {
                return Err(io::Error::from_raw_os_error(libc::ETXTBSY));
            }
        }
        Ok(())
    }

    /// A handle counted by [`Self::start_io`] (`unseen` or not) went away.
    pub fn end_io(&self, through: bool, unseen: bool) {
        let mut io = self.io.lock();
        if through {
            io.through = io.through.saturating_sub(1);
            io.writing_through = io.writing_through.saturating_sub(u32::from(unseen));
        } else {
            io.cached = io.cached.saturating_sub(1);
        }
        if io.through == 0 {
            io.through_lower = false;
        }
        self.io_ended.notify_all();
    }

    /// A handle counted as passing data through falls back to the cached path (its
    /// pages, cached before, may be stale: they are dropped at this open).
    pub fn demote_io(&self, unseen: bool) {
        let mut io = self.io.lock();
        io.through = io.through.saturating_sub(1);
        io.writing_through = io.writing_through.saturating_sub(u32::from(unseen));
        io.cached += 1;
        if io.through == 0 {
            io.through_lower = false;
        }
        self.io_ended.notify_all();
    }

    /// Whether a passthrough handle that may write is open: a write through its mapping
    /// changes the times at the fault, in the upper file, where neither the daemon nor the
    /// kernel's copy of the attributes sees it.
    pub fn times_move_unseen(&self) -> bool {
        self.io.lock().writing_through > 0
    }

    /// Held while resolving a name in this directory and recording the result.
    pub fn names_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.names.read()
    }

    /// Held while a name in this directory is created, removed or renamed; the names'
    /// epoch moves on when the guard goes.
    pub fn names_changing(&self) -> NamesChanging<'_> {
        NamesChanging {
            _guard: self.names.write(),
            epoch: &self.names_epoch,
        }
    }

    /// Moves the names' epoch on for a change made without the names lock (a copy-up
    /// adding the name of an object already shown).
    pub fn names_moved_on(&self) {
        self.names_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The epoch of this directory's names (see [`Self::names_changing`]): read it before
    /// listing the directory, and the listing is current while it is unchanged.
    pub fn names_epoch(&self) -> u64 {
        self.names_epoch.load(Ordering::Acquire)
    }

    /// See the field: tells this `Inode` value apart from any other with the same number.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The directory holding the object and its name there (without copying the rest of
    /// the place); `None` once the object has no name.
    /// The parent and where `layer` holds the object in it (see [`Place::at`]); `None`
    /// once every name is gone.
    pub fn located(&self, layer: LayerId) -> Option<(Ino, LowerAt)> {
        let p = self.place.read();
        (!p.unlinked).then(|| (p.parent, p.at(layer)))
    }

    pub fn parent_and_name(&self) -> Option<(Ino, OsString)> {
        let p = self.place.read();
        (!p.unlinked).then(|| (p.parent, p.name.clone()))
    }

    /// How many layers hold the object (without copying the place).
    pub fn layer_count(&self) -> usize {
        let p = self.place.read();
        usize::from(p.upper) + p.lowers.len()
    }

    /// `S_IFMT` bits of the object.
    pub fn kind(&self) -> u32 {
        self.kind.load(Ordering::Acquire)
    }

    /// Whether the object is gone (its last name removed while the kernel holds the inode).
    pub fn is_deleted(&self) -> bool {
        self.place.read().deleted
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    /// Keeps the inode in the table for the mount's life.
    pub fn pin(&self) {
        self.pinned.store(true, Ordering::Release);
    }

    pub fn in_upper(&self) -> bool {
        self.copied_up.load(Ordering::Acquire)
    }

    /// Whether the object is a metacopy stub (its data is in its last lower).
    pub fn is_metacopy(&self) -> bool {
        self.place.read().metacopy
    }

    /// Whether the object's data is in the upper layer (copied up, and not a metacopy stub).
    pub fn data_in_upper(&self) -> bool {
        self.in_upper() && !self.place.read().metacopy
    }

    /// Records that the object's metadata now lives in the upper layer, a metacopy stub
    /// whose data stays in its lower.
    pub fn set_upper_metacopy(&self) {
        let mut p = self.place.write();
        p.upper = true;
        p.metacopy = true;
        self.copied_up.store(true, Ordering::Release);
    }

    /// Records that the object now lives in the upper layer.
    pub fn set_upper(&self) {
        let mut p = self.place.write();
        p.upper = true;
        p.metacopy = false;
        if !self.is_dir() {
            p.lowers.clear();
            p.lower_at.clear();
        }
        self.copied_up.store(true, Ordering::Release);
    }

    /// Records that the object's data is now in the upper object (a metacopy stub
    /// filled), which keeps its names.
    pub fn set_data_up(&self) {
        let indexed = self.place.read().index.is_some();
        if !indexed {
            return self.set_upper();
        }
        self.place.write().metacopy = false;
        self.copied_up.store(true, Ordering::Release);
    }

    /// Records that the name of the place now is an upper name of the object too.
    pub fn linked_up(&self) {
        self.place.write().upper = true;
    }

    /// Records that the object in the upper layer is the index entry `entry`.
    pub fn set_index(&self, entry: OsString) {
        self.place.write().index = Some(entry);
    }

    /// The index entry of an indexed object.
    pub fn index_entry(&self) -> Option<OsString> {
        self.place.read().index.clone()
    }

    /// Moves the name `old_parent/old_name` of the inode to `parent/name` (rename).
    pub fn rename(&self, old_parent: Ino, old_name: &OsStr, parent: Ino, name: &OsStr) {
        let mut p = self.place.write();
        let new = (parent, name.to_os_string());
        if p.parent == old_parent && p.name == old_name {
            (p.parent, p.name) = new;
        } else {
            p.other_names
                .retain(|(i, n)| !(*i == old_parent && n == old_name));
            p.other_names.push(new);
        }
    }

    /// Records the redirect just given to the upper object.
    pub fn set_redirect(&self, redirect: OsString) {
        self.place.write().redirect = Some(redirect);
    }

    /// Records a moved directory's redirect and where its lowers now hold it.
    pub fn set_redirected(&self, r: crate::redirect::Redirected) {
        let mut p = self.place.write();
        p.redirect = Some(r.redirect);
        p.lower_at = r.lower_at;
    }

    /// Records where each lower holds the object, by path, so that it no longer depends
    /// on the name the place has (which is about to change).
    pub fn pin_lowers(&self, at: Vec<LowerAt>) {
        let mut p = self.place.write();
        if at.len() == p.lowers.len() {
            p.lower_at = at;
        }
    }

    /// Forgets the name `parent/name` (unlinked or replaced); another known name, if any,
    /// takes its place. `last_link`: the object itself is gone with this name; `held`: an
    /// fd of the object taken before the removal, kept if no known name is left.
    pub fn drop_name(
        &self,
        parent: Ino,
        name: &OsStr,
        last_link: bool,
        held: Option<(LayerId, OwnedFd)>,
    ) {
        let mut p = self.place.write();
        if last_link {
            // No name of the object is left, whichever of them this node knew.
            p.other_names.clear();
            p.unlinked = true;
            p.deleted = true;
            p.held = held.map(|(l, fd)| (l, Arc::new(fd)));
        } else if p.parent == parent && p.name == name {
            match p.other_names.pop() {
                Some((i, n)) => (p.parent, p.name) = (i, n),
                None => {
                    p.unlinked = true;
                    p.held = held.map(|(l, fd)| (l, Arc::new(fd)));
                }
            }
        } else {
            p.other_names.retain(|(i, n)| !(*i == parent && n == name));
        }
    }

    /// The inode number now names a different object: start over with it.
    fn reincarnate(&self, kind: u32, place: Place) {
        let mut cur = self.place.write();
        self.kind.store(kind, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.copied_up.store(place.upper, Ordering::Release);
        self.pinned.store(false, Ordering::Release);
        *cur = place;
    }

    fn refresh(&self, mut place: Place) {
        let upper = place.in_upper();
        let mut cur = self.place.write();
        // A copied-up inode never goes back to a lower place: another name of the same
        // lower hard link must reach the copy, not the lower object.
        if cur.in_upper() && !upper {
            return;
        }
        let mut others = std::mem::take(&mut cur.other_names);
        if (cur.parent, &cur.name) != (place.parent, &place.name) && !cur.name.is_empty() {
            others.push((cur.parent, std::mem::take(&mut cur.name)));
        }
        others.retain(|(i, n)| !(*i == place.parent && *n == place.name));
        place.other_names = others;
        *cur = place;
        if upper {
            self.copied_up.store(true, Ordering::Release);
        }
    }
}

/// All inodes the kernel holds a reference to.
#[derive(Debug)]
pub struct InodeTable {
    map: DashMap<Ino, Arc<Inode>>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new(root: Place) -> Self {
        let map = DashMap::new();
        map.insert(ROOT, Arc::new(Inode::new(ROOT, libc::S_IFDIR, 1, root)));
        InodeTable { map }
    }

    pub fn get(&self, ino: Ino) -> io::Result<Arc<Inode>> {
        self.map
            .get(&ino)
            .map(|e| Arc::clone(&e))
            .ok_or_else(enoent)
    }

    /// Records one more kernel reference to `ino` found at `place`, creating the inode or
    /// refreshing where it lives.
    pub fn remember(&self, ino: Ino, kind: u32, place: Place) -> Arc<Inode> {
        // Moved into a new inode, or left for the one already there.
        let mut place = Some(place);
        let entry = self
            .map
            .entry(ino)
            .or_insert_with(|| Arc::new(Inode::new(ino, kind, 0, place.take().expect("unused"))));
        let inode = Arc::clone(&entry);
        inode.lookups.fetch_add(1, Ordering::AcqRel);
        drop(entry);
        if let Some(place) = place {
            if inode.kind() != kind || inode.place.read().deleted {
                inode.reincarnate(kind, place);
            } else {
                inode.refresh(place);
            }
        }
        inode
    }

    /// The inode `ino` if the kernel knows it, else an untracked one for `place` (used when
    /// an operation names an object the kernel has not looked up).
    pub fn existing_or_transient(&self, ino: Ino, kind: u32, place: Place) -> Arc<Inode> {
        if let Ok(i) = self.get(ino) {
            return i;
        }
        Arc::new(Inode::new(ino, kind, 0, place))
    }

    /// Drops `n` kernel references; the inode leaves the table at zero (the root never does)
    /// and is returned then.
    pub fn forget(&self, ino: Ino, n: u64) -> Option<Arc<Inode>> {
        if ino == ROOT {
            return None;
        }
        self.map
            .remove_if(&ino, |_, inode| {
                let prev = inode
                    .lookups
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                        Some(c.saturating_sub(n))
                    })
                    .unwrap_or(0);
                prev <= n && !inode.pinned.load(Ordering::Acquire)
            })
            .map(|(_, inode)| inode)
    }

    /// The path of `ino` relative to every layer root ("" for the root).
    pub fn path(&self, ino: Ino) -> io::Result<PathBuf> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let p = self.get(cur)?.place();
            names.push(p.name);
            cur = p.parent;
            if names.len() > 4096 {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
        }
        Ok(names.iter().rev().collect())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_held_elsewhere_are_located_each() {
        let mut p = Place::found(ROOT, OsStr::new("b"), 0, true);
        p.push_lower(1, LowerAt::Name("a".into()));
        p.push_lower(2, LowerAt::Path("x/a".into()));
        assert_eq!(p.lowers, vec![1, 2]);
        assert_eq!(p.at(0), LowerAt::Name("b".into()));
        assert_eq!(p.at(1), LowerAt::Name("a".into()));
        assert_eq!(p.at(2), LowerAt::Path("x/a".into()));
        let mut plain = Place::found(ROOT, OsStr::new("b"), 1, false);
        plain.push_lower(2, LowerAt::Name("b".into()));
        assert!(plain.lower_at.is_empty());
        plain.push_lower(3, LowerAt::Name("c".into()));
        assert_eq!(plain.at(2), LowerAt::Name("b".into()));
        assert_eq!(plain.at(3), LowerAt::Name("c".into()));
    }

    fn place(parent: Ino, name: &str) -> Place {
        Place::found(parent, OsStr::new(name), 1, false)
    }

    #[test]
    fn lookup_counts_and_forget() {
        let t = InodeTable::new(place(ROOT, ""));
        t.remember(10, libc::S_IFDIR, place(ROOT, "a"));
        t.remember(11, libc::S_IFREG, place(10, "b"));
        t.remember(11, libc::S_IFREG, place(10, "b"));
        assert_eq!(t.path(11).unwrap(), PathBuf::from("a/b"));
        t.forget(11, 1);
        assert!(t.get(11).is_ok());
        t.forget(11, 1);
        assert!(t.get(11).is_err());
        t.forget(ROOT, 5);
        assert!(t.get(ROOT).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn hard_link_names_survive_removal_of_one() {
        let t = InodeTable::new(place(ROOT, ""));
        t.remember(10, libc::S_IFDIR, place(ROOT, "d"));
        let i = t.remember(20, libc::S_IFREG, place(ROOT, "a"));
        t.remember(20, libc::S_IFREG, place(10, "b"));
        assert_eq!(t.path(20).unwrap(), PathBuf::from("d/b"));
        i.drop_name(10, OsStr::new("b"), false, None);
        assert_eq!(t.path(20).unwrap(), PathBuf::from("a"));
        i.rename(ROOT, OsStr::new("a"), 10, OsStr::new("c"));
        assert_eq!(t.path(20).unwrap(), PathBuf::from("d/c"));
    }

    #[test]
    fn reused_number_for_another_object_gets_a_new_generation() {
        let t = InodeTable::new(place(ROOT, ""));
        let i = t.remember(30, libc::S_IFLNK, place(ROOT, "l"));
        assert_eq!(i.generation(), 0);
        // Still known by name: the same object.
        t.remember(30, libc::S_IFLNK, place(ROOT, "l"));
        assert_eq!(i.generation(), 0);
        // Another type under the number: a new object.
        t.remember(30, libc::S_IFREG, place(ROOT, "f"));
        assert_eq!((i.generation(), i.kind()), (1, libc::S_IFREG));
        // Deleted, then the number comes back with the same type.
        i.drop_name(ROOT, OsStr::new("f"), true, None);
        assert!(i.place().unlinked);
        t.remember(30, libc::S_IFREG, place(ROOT, "g"));
        assert_eq!(i.generation(), 2);
        assert!(!i.place().unlinked);
        assert_eq!(t.path(30).unwrap(), PathBuf::from("g"));
    }

    #[test]
    fn copy_up_marks_upper() {
        let t = InodeTable::new(place(ROOT, ""));
        let i = t.remember(12, libc::S_IFREG, place(ROOT, "f"));
        assert!(!i.in_upper());
        i.set_upper();
        assert!(i.in_upper());
        assert_eq!(i.place().top(), Some(0));
        assert!(i.place().lowers.is_empty());
    }
}
