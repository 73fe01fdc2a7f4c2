//! Namespace operations: creating, linking, removing and renaming names.
//!
//! A new object is made in place when one call can make it whole, as kernel overlayfs
//! does: no whiteout to replace, no ACL or override xattr to add, and its owner given at
//! birth (the thread's fsuid and fsgid). Otherwise it is built in the work directory, given
//! its owner, mode and xattrs there, and renamed into the upper layer in one step
//! (exchanging with a whiteout it replaces).
//! Removing something a lower layer still shows leaves a whiteout.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::acl::{self, Acl};
use crate::copyup::CopyData;
use crate::fileops::Opened;
use crate::inode::{Ino, Inode, LowerAt, Place};
use crate::layers::LayerId;
use crate::sys::{self, Stat};
use crate::union::{Attr, Caller, LayerFs, Resolved, check_new_name, errno, is_dir};
use crate::whiteout::{self, WhiteoutFormat};

/// Where a new name goes: the upper parent directory, and what the name hides now.
struct Slot {
    dir: Arc<OwnedFd>,
    name: OsString,
    /// The whiteout at the name in the upper layer, to be replaced.
    over: Option<WhiteoutFormat>,
    /// Whether an upper whiteout hid the name, so a new directory there must be opaque.
    opaque: bool,
}

/// What to build in a slot.
pub enum NewObject<'a> {
    File { mode: u32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a OsStr },
}

/// The owner and mode a new object gets: the caller's uid; the parent's gid and (for
/// directories) its setgid bit when the parent is setgid, as the kernel does. (The kernel's
/// VFS has already dropped a setgid bit the caller may not give a file there.)
struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

fn ownership(parent: &Stat, caller: Caller, mode: u32, dir: bool) -> Ownership {
    let mut mode = mode & 0o7777;
    if parent.st_mode & libc::S_ISGID == 0 {
        return Ownership {
            uid: caller.uid,
            gid: caller.gid,
            mode,
        };
    }
    if dir {
        mode |= libc::S_ISGID;
    }
    Ownership {
        uid: caller.uid,
        gid: parent.st_gid,
        mode,
    }
}

/// The ACLs a new object gets from its directory's default ACL.
#[derive(Default)]
struct InheritedAcls {
    access: Option<Vec<u8>>,
    default: Option<Vec<u8>>,
}

impl InheritedAcls {
    fn is_empty(&self) -> bool {
        self.access.is_none() && self.default.is_none()
    }
}

/// The permission bits and ACLs of a new object of type `fmt` created with `mode` by
/// `caller` in the upper directory `dir`: shaped by the directory's default ACL when it has
/// one (a directory also inherits the default ACL itself), else by the caller's umask.
fn inherit(
    dir: BorrowedFd<'_>,
    fmt: u32,
    mode: u32,
    caller: Caller,
) -> io::Result<(u32, InheritedAcls)> {
    if fmt == libc::S_IFLNK {
        return Ok((mode, InheritedAcls::default()));
    }
    // "." reaches the directory by name, which the xattr calls do in one step.
    let default = match sys::XattrTarget::at(dir, OsStr::new("."))?.get(OsStr::new(acl::DEFAULT)) {
        Ok(v) => v,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            return Ok((mode & !(caller.umask & 0o777), InheritedAcls::default()));
        }
        Err(e) => return Err(e),
    };
    let (access, mode) = Acl::parse(&default)?.inherit(mode)?;
    let acls = InheritedAcls {
        access: access.map(|a| a.encode()),
        default: (fmt == libc::S_IFDIR).then_some(default),
    };
    Ok((mode, acls))
}

/// Whether a directory merges upper and lower layers. A directory moved into one is
/// made opaque, as kernel overlayfs does without redirect_dir, so no lower directory of
/// the same name can ever merge into it.
pub(crate) fn is_merged(dir: &Inode) -> bool {
    let p = dir.place();
    p.upper && !p.lowers.is_empty()
}

impl LayerFs {
    /// Prepares `name` in `parent` for a new object: it must not exist; the parent is
    /// copied up.
    fn slot(&self, parent: &Arc<Inode>, name: &OsStr) -> io::Result<Slot> {
        check_new_name(name)?;
        let upper = self.layers.writable()?;
        let (over, opaque) = match self.resolve(parent, name)? {
            Resolved::Found { .. } => return Err(errno(libc::EEXIST)),
            // As on the kernel, only a whiteout in the upper makes a new directory opaque:
            // one in a lower layer already stops the merge below it.
            Resolved::Missing { upper_whiteout, .. } => (upper_whiteout, upper_whiteout.is_some()),
        };
        self.copy_up(parent, CopyData::Full)?;
        let dir = self.dir_fd(upper.id, parent)?;
        Ok(Slot {
            dir,
            name: name.to_os_string(),
            over,
            opaque,
        })
    }

    /// Whether the daemon's thread can create an object in the upper directory whose stat
    /// is `dir` owned by `uid`:`gid` from birth: as it is, or with its fsuid and fsgid
    /// switched for as long as the returned guard lives.
    fn born_as(&self, dir: &Stat, uid: u32, gid: u32) -> Option<Option<sys::FsIds>> {
        let (euid, egid) = sys::effective_ids();
        let own_gid = if dir.st_mode & libc::S_ISGID != 0 {
            dir.st_gid
        } else {
            egid
        };
        if (uid, gid) == (euid, own_gid) {
            return Some(None);
        }
        match sys::FsIds::switch(uid, gid) {
            Ok(ids) => Some(Some(ids)),
            Err(e) => {
                log::debug!("cannot create as {uid}:{gid} in place: {e}");
                None
            }
        }
    }

    /// Builds an object with `build` in the work directory and renames it into `slot`.
    fn install(
        &self,
        slot: &Slot,
        build: impl FnOnce(BorrowedFd<'_>, &OsStr) -> io::Result<()>,
    ) -> io::Result<()> {
        let work = self.work()?;
        let tmp = work.temp_name();
        let placed = build(work.fd(), &tmp).and_then(|()| match slot.over {
            Some(WhiteoutFormat::Overlay) => sys::renameat2(
                work.fd(),
                &tmp,
                slot.dir.as_fd(),
                &slot.name,
                libc::RENAME_EXCHANGE,
            ),
            _ => sys::renameat2(
                work.fd(),
                &tmp,
                slot.dir.as_fd(),
                &slot.name,
                libc::RENAME_NOREPLACE,
            ),
        });
        // After an exchange `tmp` holds the old whiteout; otherwise it holds nothing
        // (success) or the half-built object (failure).
        if (placed.is_err() || slot.over == Some(WhiteoutFormat::Overlay))
            && let Err(e) = work.remove(&tmp)
        {
            log::warn!("work cleanup of {tmp:?} failed: {e}");
        }
        placed?;
        if slot.over == Some(WhiteoutFormat::Aufs) {
            sys::unlinkat(slot.dir.as_fd(), &whiteout::aufs_name(&slot.name), false)?;
        }
        Ok(())
    }

    /// Creates a new object `name` in `parent` owned by `caller`; counts one lookup.
    pub fn create_object(
        &self,
        parent: Ino,
        name: &OsStr,
        object: NewObject<'_>,
        caller: Caller,
    ) -> io::Result<Attr> {
        self.create_in(parent, name, object, caller, None)
            .map(|(a, _)| a)
    }

    /// create(2): a new regular file `name` in `parent` owned by `caller`, and a handle
    /// on it opened with `flags` (the file the object was made with: no second open).
    pub fn create_file(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> io::Result<(Attr, Opened)> {
        let object = NewObject::File { mode };
        let (attr, file) = self.create_in(parent, name, object, caller, Some(flags))?;
        let file = file.ok_or_else(|| errno(libc::EIO))?;
        let node = self.node(attr.ino)?;
        let opened = self.new_handle(node, File::from(file), true, flags)?;
        Ok((attr, opened))
    }

    /// [`Self::create_object`]; a regular file is also opened with `open` if given, and
    /// that fd returned.
    fn create_in(
        &self,
        parent: Ino,
        name: &OsStr,
        object: NewObject<'_>,
        caller: Caller,
        open: Option<i32>,
    ) -> io::Result<(Attr, Option<OwnedFd>)> {
        let parent = self.node(parent)?;
        let _names = parent.names_changing();
        let slot = self.slot(&parent, name)?;
        let pst = self.stat_at(0, slot.dir.as_fd(), OsStr::new(""))?;
        let (fmt, mode) = match object {
            NewObject::File { mode } => (libc::S_IFREG, mode),
            NewObject::Dir { mode } => (libc::S_IFDIR, mode),
            NewObject::Node { mode, .. } => (mode & libc::S_IFMT, mode),
            NewObject::Symlink { .. } => (libc::S_IFLNK, 0o777),
        };
        let caller = Caller {
            uid: self.cfg.owners.store_uid(caller.uid),
            gid: self.cfg.owners.store_gid(caller.gid),
            ..caller
        };
        let mut own = ownership(&pst, caller, mode, fmt == libc::S_IFDIR);
        let (mode, acls) = inherit(slot.dir.as_fd(), fmt, own.mode, caller)?;
        own.mode = mode;
        let (wformat, ns) = (self.cfg.whiteout, self.cfg.xattr_ns);
        let keeps_overrides = self.upper_keeps_overrides();
        let mut opened = None;
        // Makes the object as `dir/name` with permission bits `perm`.
        let mut make = |dir: BorrowedFd<'_>, name: &OsStr, perm: u32| -> io::Result<()> {
            let excl = libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            let create_file = || sys::openat(dir, name, excl | libc::O_WRONLY, perm).map(drop);
            match (&object, open) {
                // Its creator may read it without touching its access time.
                (NewObject::File { .. }, Some(flags)) => {
                    let flags = excl | libc::O_NOATIME | self.real_flags(flags);
                    opened = Some(sys::openat(dir, name, flags, perm)?);
                }
                (NewObject::File { .. }, None) => create_file()?,
                (NewObject::Dir { .. }, _) => sys::mkdirat(dir, name, perm)?,
                (NewObject::Node { rdev, .. }, _) => {
                    match sys::mknodat(dir, name, fmt | perm, *rdev) {
                        // Without the right to make devices, an upper that keeps overrides
                        // records the device in a regular file's override.
                        Err(e) if e.raw_os_error() == Some(libc::EPERM) && keeps_overrides => {
                            create_file()?
                        }
                        r => r?,
                    }
                }
                (NewObject::Symlink { target }, _) => sys::symlinkat(target, dir, name)?,
            }
            Ok(())
        };
        // With redirect_dir=on or index=on the kernel makes a new directory in a merged
        // one opaque (nothing below can merge into it), as it does one that replaces a
        // whiteout.
        let opaque = fmt == libc::S_IFDIR
            && (slot.opaque
                || ((self.cfg.redirect.writes() || self.index().is_some()) && is_merged(&parent)));
        let in_place = slot.over.is_none() && acls.is_empty() && !keeps_overrides;
        if in_place && let Some(_ids) = self.born_as(&pst, own.uid, own.gid) {
            // As the kernel does where no whiteout is in the way: made in place with its
            // owner, permission bits and setgid inheritance (mkdir drops setuid/setgid
            // bits; a directory's setgid comes from its parent, as `ownership` has it).
            make(slot.dir.as_fd(), &slot.name, own.mode & 0o7777)?;
            if opaque {
                whiteout::set_opaque(slot.dir.as_fd(), &slot.name, wformat, ns)?;
            }
        } else {
            self.install(&slot, |work, tmp| {
                let created = own.mode & 0o777;
                make(work, tmp, created)?;
                // What the object is to show as (the parent's stat as a template).
                let mut shown = pst;
                shown.st_mode = fmt | own.mode;
                (shown.st_uid, shown.st_gid) = (own.uid, own.gid);
                if let NewObject::Node { rdev, .. } = object {
                    shown.st_rdev = rdev;
                }
                self.give_owner_mode(work, tmp, &shown, created)?;
                let target = sys::XattrTarget::at(work, tmp)?;
                for (name, value) in [(acl::ACCESS, &acls.access), (acl::DEFAULT, &acls.default)] {
                    if let Some(v) = value {
                        target.set(OsStr::new(name), v, 0)?;
                    }
                }
                if opaque {
                    whiteout::set_opaque(work, tmp, wformat, ns)?;
                }
                Ok(())
            })?;
        }
        let (_, attr) = self.lookup_in(&parent, name)?;
        Ok((attr, opened))
    }

    /// A hard link `newname` in `newparent` to `ino`; counts one lookup.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> io::Result<Attr> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(errno(libc::EPERM));
        }
        let newparent = self.node(newparent)?;
        let _names = newparent.names_changing();
        self.copy_up(&node, CopyData::Metacopy)?;
        let slot = self.slot(&newparent, newname)?;
        let (src_dir, src_name) = self.parent_fd(0, &node)?;
        self.impure_for(src_dir.as_fd(), &src_name, slot.dir.as_fd());
        // The new name's path is not the data's: a stub gets an absolute redirect to it,
        // as the kernel gives one before linking.
        if node.in_upper() && !node.data_in_upper() {
            self.redirect_stub(&node, src_dir.as_fd(), &src_name)?;
        }
        if slot.over.is_none() {
            sys::linkat(src_dir.as_fd(), &src_name, slot.dir.as_fd(), &slot.name)?;
        } else {
            self.install(&slot, |work, tmp| {
                sys::linkat(src_dir.as_fd(), &src_name, work, tmp)
            })?;
        }
        self.lookup_in(&newparent, newname).map(|(_, a)| a)
    }

    /// Resolves `name` in `parent` to an existing object.
    pub(crate) fn existing(&self, parent: &Inode, name: &OsStr) -> io::Result<(Stat, Place)> {
        self.found(parent, name)?.ok_or_else(|| errno(libc::ENOENT))
    }

    /// Resolves `name` in `parent`: the object, or `None` if nothing shows there.
    pub(crate) fn found(&self, parent: &Inode, name: &OsStr) -> io::Result<Option<(Stat, Place)>> {
        Ok(match self.resolve(parent, name)? {
            Resolved::Found { st, place } => Some((*st, place)),
            Resolved::Missing { .. } => None,
        })
    }

    /// A new whiteout for `name` in the upper directory `dir` (built in the workdir).
    pub(crate) fn new_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        format: WhiteoutFormat,
    ) -> io::Result<()> {
        let work = self.work()?;
        self.whiteouts.place(work, dir, name, format)
    }

    /// Replaces the upper object `dir/name` with a whiteout, atomically in overlay format.
    fn whiteout_over(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        let work = self.work()?;
        match self.cfg.whiteout {
            WhiteoutFormat::Overlay => {
                let tmp = work.temp_name();
                self.whiteouts.at_temp(work, &tmp)?;
                let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
                let r = sys::renameat2(work.fd(), &tmp, dir, name, flags);
                // After an exchange `tmp` holds the replaced directory; after a failure,
                // the whiteout.
                if is_dir || r.is_err() {
                    work.remove(&tmp)?;
                }
                r
            }
            WhiteoutFormat::Aufs => {
                self.new_whiteout(dir, name, WhiteoutFormat::Aufs)?;
                self.remove_upper(dir, name, is_dir)
            }
        }
    }

    /// Removes the upper object `dir/name` (a directory with whatever whiteouts it holds).
    fn remove_upper(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        if !is_dir {
            return sys::unlinkat(dir, name, false);
        }
        match sys::unlinkat(dir, name, true) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                let work = self.work()?;
                let tmp = work.temp_name();
                sys::renameat2(dir, name, work.fd(), &tmp, libc::RENAME_NOREPLACE)?;
                work.remove(&tmp)
            }
            r => r,
        }
    }

    /// Removes `name` from `parent`, leaving a whiteout where a lower layer shows it.
    fn remove(&self, parent: Ino, name: &OsStr, want_dir: bool) -> io::Result<()> {
        let upper = self.layers.writable()?;
        let parent = self.node(parent)?;
        let _names = parent.names_changing();
        let (mut st, mut place) = self.existing(&parent, name)?;
        if let Some(linked) = self.index_before_unlink(&parent, name, &st, &place)? {
            (st, place) = linked;
        }
        let ino = self.ino_of(&st, &place)?;
        let node = self.node(ino).ok();
        // A copy-up of a lower object does not take its directory's names: wait for one
        // under way, and see what it left (a later one finds the node unlinked).
        let _copying = node.as_ref().map(|n| n.copy_lock.lock());
        if !place.upper && node.as_ref().is_some_and(|n| n.in_upper()) {
            (st, place) = self.existing(&parent, name)?;
        }
        match (is_dir(&st), want_dir) {
            (true, false) => return Err(errno(libc::EISDIR)),
            (false, true) => return Err(errno(libc::ENOTDIR)),
            _ => {}
        }
        if want_dir && !self.is_empty_dir(&parent, &place)? {
            return Err(errno(libc::ENOTEMPTY));
        }
        let mut held = node.as_ref().and_then(|_| self.hold(&parent, name, &place));
        if place.upper {
            let dir = self.dir_fd(upper.id, &parent)?;
            let _counting = self.counting_for(&place);
            if self.name_below(&parent, name, &place)? {
                self.whiteout_over(dir.as_fd(), name, want_dir)?;
            } else {
                self.remove_upper(dir.as_fd(), name, want_dir)?;
            }
            if let Some(entry) = &place.index {
                self.index_name_gone(entry);
            }
            self.forget_alias_if_gone(&st, &place);
        } else {
            self.copy_up(&parent, CopyData::Full)?;
            let dir = self.dir_fd(upper.id, &parent)?;
            self.new_whiteout(dir.as_fd(), name, self.cfg.whiteout)?;
        }
        if let Some(node) = &node {
            drop_name(self, node, (parent.ino, name), (&st, &place), &mut held);
        }
        Ok(())
    }

    /// An `O_PATH` fd of the object `parent/name` (at `place`) about to lose a name, taken
    /// before the removal so that its real inode number cannot be reused before the node
    /// is marked; `None` if it cannot be opened.
    pub(crate) fn hold(
        &self,
        parent: &Inode,
        name: &OsStr,
        place: &Place,
    ) -> Option<(LayerId, OwnedFd)> {
        let top = place.top()?;
        let dir = self.dir_fd(top, parent).ok()?;
        let fd = sys::openat(dir.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0).ok()?;
        Some((top, fd))
    }

    /// Drops the kept inode number of an upper object whose last name was just removed,
    /// so a new object that reuses its real inode number gets a number of its own.
    pub(crate) fn forget_alias_if_gone(&self, st: &Stat, place: &Place) {
        if place.in_upper() && self.last_link_gone(st, place) {
            self.numbers.release(st.st_ino);
        }
    }

    /// Whether the object `st` at `place`, which has just lost a name, has no link left:
    /// a directory, a file whose last link that was, or an indexed file whose union count
    /// came to nothing (its index entry went).
    pub(crate) fn last_link_gone(&self, st: &Stat, place: &Place) -> bool {
        if let (Some(entry), Some(index)) = (&place.index, self.index()) {
            return sys::fstatat(index.fd(), entry).is_err();
        }
        is_dir(st) || st.st_nlink <= 1
    }

    /// The inode number the mount shows for a resolved object.
    pub(crate) fn ino_of(&self, st: &Stat, place: &Place) -> io::Result<Ino> {
        let top = place.top().ok_or_else(|| errno(libc::ENOENT))?;
        Ok(self.ino_for(top, st.st_ino))
    }

    pub fn unlink(&self, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, true)
    }
}

/// Tells `node` that its name `parent/name` (the object `st` at `place`) was removed,
/// giving it `held` (see [`LayerFs::hold`]) unless it is an upper non-directory losing its
/// last link: holding that would keep its space allocated until the kernel's asynchronous
/// forget (an open file keeps its data through its handle anyway). An fd not given stays
/// in `held`, so the caller closes it only after the node is marked.
pub(crate) fn drop_name(
    fs: &LayerFs,
    node: &Inode,
    (parent, name): (Ino, &OsStr),
    (st, place): (&Stat, &Place),
    held: &mut Option<(LayerId, OwnedFd)>,
) {
    let last_link = fs.last_link_gone(st, place);
    // A file whose data its lowers hold (a metacopy stub) may be known by another name,
    // which takes the place: its data stays where it was found.
    let now = (!last_link && !node.is_dir()).then(|| node.place());
    if let Some(now) = now
        && (now.parent, now.name.as_os_str()) == (parent, name)
        && !now.lowers.is_empty()
        && now.lower_at.is_empty()
        && let Ok(at) = now
            .lowers
            .iter()
            .map(|&l| Ok(LowerAt::Path(fs.layer_path(l, parent)?.join(name))))
            .collect::<io::Result<Vec<_>>>()
    {
        node.pin_lowers(at);
    }
    let keep = !(place.upper && !is_dir(st) && last_link);
    node.drop_name(
        parent,
        name,
        last_link,
        if keep { held.take() } else { None },
    );
}
