//! Operations on existing objects: open/read/write, attributes, links, statfs and
//! directory listing. Anything that changes a lower object copies it up first.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::atime;
use crate::copyup::CopyData;
use crate::dirmerge::MergedEntry;
use crate::handles::{OpenDir, OpenFile, moves_times_unseen, wants_write};
use crate::inode::{Ino, Inode, Place};
use crate::options::{Atime, Passthrough};
use crate::privs;
use crate::sys::{self, SetTime, XattrTarget};
use crate::union::Caller;
use crate::union::{Attr, LayerFs, errno};

/// The attribute changes of one setattr request.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
    /// Who asks, for the setuid/setgid bits a truncate or chown clears ([`privs`]);
    /// `None` for the daemon's own changes.
    pub by: Option<Caller>,
}

impl SetAttr {
    fn changes_anything(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.size.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

/// An open file handle and how its data flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Whether the kernel is to pass the handle's data straight to its file.
    pub passthrough: bool,
    /// Whether the kernel may keep the pages it cached for the file (for a cached handle:
    /// no write went past them since).
    pub keep_cache: bool,
}

/// Flags the backing fd must not be opened with (handled by the kernel or by copy-up).
const STRIP_FLAGS: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_DIRECT;

/// The most entries one `readdir` call returns.
const READDIR_BATCH: usize = 2048;

impl LayerFs {
    /// Opens the real object of `node` with `flags` (never following a symlink). The name
    /// is first opened `O_PATH` and checked to still hold `node`'s object, so a request
    /// racing with an unlink or rename never opens (with side effects) whatever replaced it.
    fn open_real(&self, node: &Inode, flags: i32) -> io::Result<(File, bool)> {
        let place = node.place();
        // A metacopy stub reads its lower's data.
        let layer = place.data_layer().ok_or_else(|| errno(libc::ENOENT))?;
        let (dir, name) = self.object_fd(layer, node)?;
        let fd = if name.is_empty() {
            dir
        } else {
            let path = sys::openat(dir.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            let st = sys::fstat(path.as_fd())?;
            if !place.metacopy {
                self.same_object(node, layer, st)?;
            }
            Arc::new(path)
        };
        let file = sys::reopen_noatime(fd.as_fd(), self.real_flags(flags))?;
        Ok((File::from(file), place.upper && !place.metacopy))
    }

    /// The flags a layer's file is opened with for a handle opened with `flags`.
    pub(crate) fn real_flags(&self, flags: i32) -> i32 {
        let mut flags = flags & !(STRIP_FLAGS | libc::O_NOFOLLOW);
        if self.writeback_on() {
            // The kernel's writeback cache reads pages in to fill them, also through a
            // write-only handle, and writes at offsets it chose itself (O_APPEND included).
            if flags & libc::O_ACCMODE == libc::O_WRONLY {
                flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            flags &= !libc::O_APPEND;
        }
        flags
    }

    /// open(2): copies up first when the file is opened for writing or truncation; an
    /// `O_TRUNC` by `by` clears setuid/setgid as a truncate does.
    pub fn open(&self, ino: Ino, flags: i32, by: Option<Caller>) -> io::Result<Opened> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(errno(libc::EISDIR));
        }
        if wants_write(flags) {
            self.layers.writable()?;
            node.data_held()?;
            let data = if flags & libc::O_TRUNC != 0 {
                CopyData::MetadataOnly
            } else {
                CopyData::Full
            };
            self.copy_up(&node, data)?;
        }
        let (file, on_upper) = self.open_real(&node, flags)?;
        if let Some(by) = by
            && flags & libc::O_TRUNC != 0
        {
            self.clear_privs_for_data(&node, file.as_fd(), &by, false)?;
        }
        let opened = self.new_handle(Arc::clone(&node), file, on_upper, flags)?;
        if opened.passthrough && wants_write(flags) {
            // The attributes the kernel keeps would hide the times its mapped writes move.
            self.attributes_changed(node.ino);
        }
        Ok(opened)
    }

    /// A handle for `file`, the object of `node` (on the upper layer if `on_upper`),
    /// opened with `flags`.
    pub(crate) fn new_handle(
        &self,
        node: Arc<Inode>,
        file: File,
        on_upper: bool,
        flags: i32,
    ) -> io::Result<Opened> {
        let wanted = self.passthrough_wanted(&file, on_upper, flags)?;
        let (through, keep_cache) = node.start_io(
            wanted,
            on_upper,
            wants_write(flags),
            moves_times_unseen(flags),
        )?;
        let fh = self
            .files
            .insert(OpenFile::new(node, file, on_upper, flags, through));
        Ok(Opened {
            fh,
            passthrough: through,
            keep_cache,
        })
    }

    /// Whether `file` (on the upper layer if `on_upper`), opened with `flags`, may be
    /// passed through to the kernel: passthrough is on for it (by default only upper files
    /// opened for writing: the kernel reads a passed-through file without O_NOATIME, so
    /// reads would touch its access time, and a lower file cannot be replaced by its copy
    /// under open handles), and it is a regular file without setuid/setgid bits (a write
    /// passed through does not reach the daemon, which clears those bits). An open for
    /// reading only follows the handles open already, if any.
    fn passthrough_wanted(&self, file: &File, on_upper: bool, flags: i32) -> io::Result<bool> {
        let wanted = match self.cfg.passthrough {
            Passthrough::Off => false,
            Passthrough::Writes => on_upper && wants_write(flags),
            // Not upper files opened to read: the kernel reads a passed-through file
            // through a file of its own, without O_NOATIME, so under noatime those reads
            // would still touch the upper object's access time (its mount's policy).
            Passthrough::All => !on_upper || wants_write(flags),
        };
        if !wanted || !self.passthrough_on() {
            return Ok(false);
        }
        let st = sys::fstat(file.as_fd())?;
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_mode & (libc::S_ISUID | libc::S_ISGID) == 0)
    }

    /// The open handle `fh` (for the adapter to hand its file to the kernel).
    pub fn open_handle(&self, fh: u64) -> io::Result<Arc<OpenFile>> {
        self.files.get(fh)
    }

    /// The kernel refused the file of passthrough handle `fh`: the handle takes the cached
    /// path, and so do later opens (passthrough is turned off for the mount).
    pub fn passthrough_refused(&self, fh: u64) {
        self.disable_passthrough();
        if let Ok(h) = self.files.get(fh) {
            h.demote();
        }
    }

    /// The handle `fh`, its fd switched to the upper object if a copy-up happened since.
    fn open_file(&self, fh: u64) -> io::Result<Arc<OpenFile>> {
        let h = self.files.get(fh)?;
        if h.is_stale() {
            let (file, _) = self.open_real(&h.node, h.flags & !libc::O_TRUNC)?;
            h.replace(file);
        }
        Ok(h)
    }

    /// Reads up to `size` bytes at `offset` through handle `fh` into the start of `buf`
    /// (grown to `size` if shorter; a buffer reused across requests is not zeroed again);
    /// returns how many bytes were read.
    pub fn read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> io::Result<usize> {
        let h = self.open_file(fh)?;
        let f = h.file();
        if h.on_upper() && h.wants_atime(self.cfg.atime) {
            atime::accessed(self.cfg.atime, self.layers.writable()?, f.as_fd())?;
        }
        if buf.len() < size as usize {
            buf.resize(size as usize, 0);
        }
        let mut done = 0;
        while done < size as usize {
            let n = f.read_at(&mut buf[done..size as usize], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// pwrite through handle `fh`. `kill_privs` names the writer when the kernel says it
    /// lacks `CAP_FSETID` (FUSE_WRITE_KILL_SUIDGID): setuid/setgid are cleared first.
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_privs: Option<Caller>,
    ) -> io::Result<u32> {
        let h = self.open_file(fh)?;
        if let Some(by) = kill_privs {
            self.clear_privs_for_data(&h.node, h.file().as_fd(), &by, true)?;
        }
        h.file().write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    pub fn release(&self, fh: u64) {
        if let Some(h) = self.files.remove(fh) {
            h.node.end_io(h.passthrough(), moves_times_unseen(h.flags));
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let h = self.open_file(fh)?;
        if !self.cfg.fsync {
            return Ok(());
        }
        let f = h.file();
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
    }

    pub fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
        by: Caller,
    ) -> io::Result<()> {
        let h = self.open_file(fh)?;
        self.clear_privs_for_data(&h.node, h.file().as_fd(), &by, false)?;
        let f = h.file();
        sys::fallocate(f.as_fd(), mode, offset, len)
    }

    /// chmod/chown/truncate/utimes: copies up first, then changes the upper object.
    pub fn setattr(&self, ino: Ino, change: SetAttr) -> io::Result<Attr> {
        let node = self.node(ino)?;
        if !change.changes_anything() {
            return self.attr_of(&node);
        }
        if change.size.is_some() {
            node.data_held()?;
        }
        let data = match change.size {
            Some(0) => CopyData::MetadataOnly,
            Some(_) => CopyData::Full,
            None => CopyData::Metacopy,
        };
        self.copy_up(&node, data)?;
        let (dir, name) = self.object_fd(0, &node)?;
        let dir = dir.as_fd();
        if change.mode.is_some() && node.kind() == libc::S_IFLNK {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let owners = &self.cfg.owners;
        let uid = change.uid.map(|u| owners.store_uid(u));
        let gid = change.gid.map(|g| owners.store_gid(g));
        let mode = match (change.mode, change.by) {
            (Some(m), _) => Some(m & 0o7777),
            (None, Some(by)) => self.cleared_by_setattr(dir, &name, &change, &by)?,
            (None, None) => None,
        };
        if (uid.is_some() || gid.is_some() || mode.is_some()) && self.upper_keeps_overrides() {
            let mut shown = self.stat_at(0, dir, &name)?;
            shown.st_uid = uid.unwrap_or(shown.st_uid);
            shown.st_gid = gid.unwrap_or(shown.st_gid);
            if let Some(m) = mode {
                shown.st_mode = (shown.st_mode & libc::S_IFMT) | m;
            } else if (uid.is_some() || gid.is_some()) && !node.is_dir() {
                // chown clears setuid and setgid (group-executable) as on the inode.
                let sgid = shown.st_mode & (libc::S_ISGID | libc::S_IXGRP);
                shown.st_mode &= !libc::S_ISUID;
                if sgid == libc::S_ISGID | libc::S_IXGRP {
                    shown.st_mode &= !libc::S_ISGID;
                }
            }
            if self.store_override(dir, &name, &shown)? {
                return self.finish_setattr(&node, dir, &name, change);
            }
        }
        if uid.is_some() || gid.is_some() {
            sys::fchownat(dir, &name, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = mode {
            sys::chmod_at(dir, &name, mode)?;
        }
        self.finish_setattr(&node, dir, &name, change)
    }

    /// The mode a truncate or chown by `by` leaves (setuid/setgid cleared), if it changes.
    fn cleared_by_setattr(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        change: &SetAttr,
        by: &Caller,
    ) -> io::Result<Option<u32>> {
        let what = if change.uid.is_some() || change.gid.is_some() {
            privs::Change::Chown
        } else if change.size.is_some() {
            privs::Change::Data
        } else {
            return Ok(None);
        };
        let st = self.stat_at(0, dir, name)?;
        let owner = self.cfg.owners.show(st.st_uid, st.st_gid);
        Ok(privs::after(what, st.st_mode, owner, by, false))
    }

    /// Clears the setuid/setgid bits a data change by `by` clears in `node` (copied up,
    /// its object at `fd`); `checked` when the kernel said `by` lacks `CAP_FSETID`.
    fn clear_privs_for_data(
        &self,
        node: &Inode,
        fd: BorrowedFd<'_>,
        by: &Caller,
        checked: bool,
    ) -> io::Result<()> {
        let mut st = sys::fstat(fd)?;
        self.apply_override(0, || XattrTarget::fd(fd), &mut st)?;
        let owner = self.cfg.owners.show(st.st_uid, st.st_gid);
        if let Some(mode) = privs::after(privs::Change::Data, st.st_mode, owner, by, checked) {
            let change = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            self.setattr(node.ino, change)?;
            // The kernel asked for a write or truncate, not this mode change.
            self.attributes_changed(node.ino);
        }
        Ok(())
    }

    /// The size and time changes of a setattr, after owner and mode.
    fn finish_setattr(
        &self,
        node: &Inode,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        change: SetAttr,
    ) -> io::Result<Attr> {
        if let Some(size) = change.size {
            match change.fh.map(|fh| self.open_file(fh)) {
                Some(Ok(h)) if h.flags & libc::O_ACCMODE != libc::O_RDONLY => {
                    h.file().set_len(size)?
                }
                _ => {
                    if node.kind() != libc::S_IFREG {
                        return Err(errno(if node.is_dir() {
                            libc::EISDIR
                        } else {
                            libc::EINVAL
                        }));
                    }
                    File::from(self.upper_object(dir, name, libc::O_WRONLY)?).set_len(size)?
                }
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            sys::utimensat(
                dir,
                name,
                change.atime.unwrap_or(SetTime::Omit),
                change.mtime.unwrap_or(SetTime::Omit),
            )?;
        }
        self.attr_of(node)
    }

    /// Opens `dir/name` (or `dir` itself for "") without following symlinks.
    fn upper_object(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        flags: i32,
    ) -> io::Result<std::os::fd::OwnedFd> {
        if name.is_empty() {
            // The layer root, or an unlinked object's open fd.
            return sys::reopen(dir, flags & !libc::O_NOFOLLOW);
        }
        sys::openat(dir, name, flags | libc::O_NOFOLLOW, 0)
    }

    pub fn readlink(&self, ino: Ino) -> io::Result<OsString> {
        let node = self.node(ino)?;
        if node.kind() != libc::S_IFLNK {
            return Err(errno(libc::EINVAL));
        }
        let top = node.place().top().ok_or_else(|| errno(libc::ENOENT))?;
        let (dir, name) = self.parent_fd(top, &node)?;
        sys::readlinkat(dir.as_fd(), &name)
    }

    /// statfs of the upper layer (the top lower for a read-only union).
    pub fn statfs(&self) -> io::Result<libc::statfs> {
        sys::fstatfs(self.layers.top().root())
    }

    pub fn opendir(&self, ino: Ino) -> io::Result<u64> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(self.dirs.insert(OpenDir {
            node,
            entries: parking_lot::Mutex::new(None),
        }))
    }

    /// The listing of directory handle `fh` as (offset of the next entry, entry), from
    /// `offset` on; `.` and `..` come first. The listing is read at offset 0 and kept, so
    /// later offsets stay valid while the directory changes.
    pub fn readdir(&self, fh: u64, offset: u64) -> io::Result<Vec<(u64, MergedEntry)>> {
        let h = self.dirs.get(fh)?;
        let entries = {
            let mut cached = h.entries.lock();
            match (&*cached, offset) {
                (Some((_, e)), o) if o != 0 => Arc::clone(e),
                _ => {
                    if self.cfg.atime != Atime::Never && !self.cfg.nodiratime && h.node.in_upper() {
                        let (dir, name) = self.parent_fd(0, &h.node)?;
                        let fd = self.upper_object(dir.as_fd(), &name, libc::O_PATH)?;
                        atime::accessed(self.cfg.atime, self.layers.writable()?, fd.as_fd())?;
                    }
                    let epoch = h.node.names_epoch();
                    let fresh = Arc::new(self.list_dir(&h.node)?);
                    *cached = Some((epoch, Arc::clone(&fresh)));
                    fresh
                }
            }
        };
        let parent = h.node.place().parent;
        let dots = [
            MergedEntry {
                name: ".".into(),
                ino: h.node.ino,
                kind: libc::S_IFDIR,
                layer: 0,
                held_in: Box::default(),
            },
            MergedEntry {
                name: "..".into(),
                ino: parent,
                kind: libc::S_IFDIR,
                layer: 0,
                held_in: Box::default(),
            },
        ];
        // One reply's worth at most (a FUSE readdir buffer holds far fewer than this), so
        // listing a huge directory costs linear time, not a copy of the rest per reply.
        let start = offset as usize;
        let rest = entries
            .entries
            .get(start.saturating_sub(2)..)
            .unwrap_or_default();
        Ok(dots
            .into_iter()
            .skip(start)
            .chain(rest.iter().cloned())
            .take(READDIR_BATCH)
            .enumerate()
            .map(|(i, e)| ((start + i) as u64 + 1, e))
            .collect())
    }

    /// Looks up entry `e` of the listing of directory handle `fh` (for a listing with
    /// attributes), counting one kernel reference as a lookup does.
    pub fn lookup_entry(&self, fh: u64, e: &MergedEntry) -> io::Result<Attr> {
        let h = self.dirs.get(fh)?;
        let listing = h.entries.lock().clone();
        match listing {
            Some((epoch, listing)) => self.lookup_listed(&h.node, epoch, &listing.layers, e),
            None => self.lookup(h.node.ino, &e.name),
        }
    }

    /// For a listed entry of handle `fh` whose lookup failed: a node for its topmost
    /// object alone, with attributes and a name the kernel may not keep, so a listing can
    /// carry the entry and its next use looks the name up again and meets the error (as a
    /// listing on kernel overlayfs shows every name). An object that cannot even be
    /// stat'ed shows its type alone. `None` where the number is known already (another
    /// name of the same object).
    pub fn unresolved_entry(&self, fh: u64, e: &MergedEntry) -> Option<Attr> {
        let h = self.dirs.get(fh).ok()?;
        if self.node(e.ino).is_ok() {
            return None;
        }
        let dir = self.dir_fd(e.layer, &h.node).ok()?;
        let st = match sys::fstatat(dir.as_fd(), &e.name) {
            Ok(st) => st,
            Err(_) => {
                let mut st = sys::fstat(dir.as_fd()).ok()?;
                (st.st_mode, st.st_nlink, st.st_size, st.st_blocks) = (e.kind, 1, 0, 0);
                st
            }
        };
        let upper = self.layers.is_upper(e.layer);
        let place = Place::found(h.node.ino, &e.name, e.layer, upper);
        let node = self.remember(e.ino, st.st_mode & libc::S_IFMT, place);
        Some(Attr {
            uncached_name: true,
            times_unseen: true,
            ..self.shown(&node, st)
        })
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }

    pub fn fsyncdir(&self, ino: Ino) -> io::Result<()> {
        let node = self.node(ino)?;
        if !self.cfg.fsync || !node.in_upper() {
            return Ok(());
        }
        let (dir, name) = self.parent_fd(0, &node)?;
        File::from(self.upper_object(dir.as_fd(), &name, libc::O_RDONLY)?).sync_all()
    }
}
