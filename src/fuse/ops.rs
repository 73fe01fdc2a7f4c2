//! The requests as both transports serve them (fuser's /dev/fuse loop and the io_uring
//! queues): each calls the core once and returns what the reply carries, or the errno.
//! The transports only decode requests and encode these answers.

use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FopenFlags};
use log::debug;

use crate::fileops::{Opened, SetAttr};
use crate::namespace::NewObject;
use crate::union::{Attr, Caller};

use super::backing::Backing;
use super::kernel::{open_flags, opendir_flags};
use super::{FuseFs, errno, guard};

pub(super) type Answer<T> = Result<T, Errno>;

fn answer<T>(op: &str, r: io::Result<T>) -> Answer<T> {
    r.map_err(|e| errno(op, e))
}

/// An opened file as the reply tells the kernel: the handle, how the kernel may cache it,
/// and the backing file its data passes to (then the cache flags are empty: the kernel
/// refuses both at once).
pub(super) struct Opening {
    pub fh: u64,
    pub flags: FopenFlags,
    pub backing: Option<Arc<Backing>>,
}

/// An extended attribute reply: the size asked for, or the bytes.
pub(super) enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// One entry of a listing as the reply carries it.
pub(super) struct Listed<'a> {
    pub ino: u64,
    pub next: u64,
    pub mode: u32,
    pub name: &'a OsStr,
    pub attr: Plus<'a>,
}

/// What a readdirplus entry carries besides its name.
pub(super) enum Plus<'a> {
    /// Nothing the kernel reads: `.` and `..` (and every entry of a plain readdir).
    Dot,
    /// The entry's attributes, and how long the kernel may keep them.
    Node(&'a Attr, Duration),
    /// No node (node id 0): its lookup failed, so the kernel links nothing and looks the
    /// name up when it is used, meeting the error then, as on kernel overlayfs, whose
    /// listings show every name whatever a lookup of it says.
    Failed,
}

fn xattr(op: &str, r: io::Result<Vec<u8>>, size: u32) -> Answer<Xattr> {
    match answer(op, r)? {
        v if size == 0 => Ok(Xattr::Size(v.len() as u32)),
        v if v.len() > size as usize => Err(Errno::from_i32(libc::ERANGE)),
        v => Ok(Xattr::Data(v)),
    }
}

impl FuseFs {
    /// How long the kernel may keep the name `a` was reached by: not at all for a name
    /// that must reach the daemon each time (see `Attr::uncached_name`).
    pub(super) fn entry_ttl(&self, a: &Attr) -> Duration {
        if a.uncached_name {
            Duration::ZERO
        } else {
            self.1
        }
    }

    /// How long the kernel may keep the attributes `a`: not at all while their times move
    /// unseen (see `Attr::times_unseen`).
    pub(super) fn attr_ttl(&self, a: &Attr) -> Duration {
        if a.times_unseen {
            Duration::ZERO
        } else {
            self.1
        }
    }

    /// The attributes of `parent`/`name`, or `None` for a miss, which the kernel caches too
    /// (a negative entry), as the names a miss is about only appear through this mount
    /// (ld.so and $PATH probing).
    pub(super) fn op_lookup(&self, parent: u64, name: &OsStr) -> Answer<Option<Attr>> {
        debug!("lookup {parent} {name:?}");
        match guard(|| self.0.lookup(parent, name)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            r => answer("lookup", r).map(Some),
        }
    }

    pub(super) fn op_getattr(&self, ino: u64, fh: Option<u64>) -> Answer<Attr> {
        debug!("getattr {ino}");
        answer("getattr", guard(|| self.0.getattr(ino, fh)))
    }

    pub(super) fn op_setattr(&self, ino: u64, change: SetAttr) -> Answer<Attr> {
        debug!(
            "setattr {ino} mode={:?} uid={:?} gid={:?} size={:?}",
            change.mode, change.uid, change.gid, change.size
        );
        answer("setattr", guard(|| self.0.setattr(ino, change)))
    }

    pub(super) fn op_readlink(&self, ino: u64) -> Answer<OsString> {
        debug!("readlink {ino}");
        answer("readlink", guard(|| self.0.readlink(ino)))
    }

    /// mknod, mkdir, symlink: `obj` made as `name` in `parent` for `by`.
    pub(super) fn op_make(
        &self,
        op: &str,
        by: Caller,
        parent: u64,
        name: &OsStr,
        obj: NewObject<'_>,
    ) -> Answer<Attr> {
        debug!("{op} {parent} {name:?}");
        answer(op, guard(|| self.0.create_object(parent, name, obj, by)))
    }

    pub(super) fn op_unlink(&self, parent: u64, name: &OsStr) -> Answer<()> {
        debug!("unlink {parent} {name:?}");
        answer("unlink", guard(|| self.0.unlink(parent, name)))
    }

    pub(super) fn op_rmdir(&self, parent: u64, name: &OsStr) -> Answer<()> {
        debug!("rmdir {parent} {name:?}");
        answer("rmdir", guard(|| self.0.rmdir(parent, name)))
    }

    pub(super) fn op_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Answer<()> {
        debug!("rename {parent} {name:?} -> {newparent} {newname:?} {flags:#x}");
        answer(
            "rename",
            guard(|| self.0.rename(parent, name, newparent, newname, flags)),
        )
    }

    pub(super) fn op_link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Answer<Attr> {
        debug!("link {ino} -> {newparent} {newname:?}");
        answer("link", guard(|| self.0.link(ino, newparent, newname)))
    }

    /// The reply to an open of `ino` as `o`: passed through to its backing file (the
    /// inode's, else one `register` makes), or cached.
    fn opening(
        &self,
        ino: u64,
        o: Opened,
        register: impl FnOnce(&std::fs::File) -> io::Result<Backing>,
    ) -> Opening {
        let flags = open_flags(&self.0, o.keep_cache);
        match self.backing(ino, o, register) {
            Some(b) => Opening {
                fh: o.fh,
                flags: FopenFlags::empty(),
                backing: Some(b),
            },
            None => Opening {
                fh: o.fh,
                flags,
                backing: None,
            },
        }
    }

    pub(super) fn op_open(
        &self,
        ino: u64,
        flags: i32,
        by: Caller,
        register: impl FnOnce(&std::fs::File) -> io::Result<Backing>,
    ) -> Answer<Opening> {
        debug!("open {ino} {flags:#o}");
        let o = answer("open", guard(|| self.0.open(ino, flags, Some(by))))?;
        Ok(self.opening(ino, o, register))
    }

    /// create: the file is new, so O_TRUNC has nothing to cut.
    pub(super) fn op_create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        by: Caller,
        register: impl FnOnce(&std::fs::File) -> io::Result<Backing>,
    ) -> Answer<(Attr, Opening)> {
        debug!("create {parent} {name:?} {mode:o} {flags:#o}");
        let flags = flags & !libc::O_TRUNC;
        let (a, o) = answer(
            "create",
            guard(|| self.0.create_file(parent, name, mode, flags, by)),
        )?;
        let opening = self.opening(a.ino, o, register);
        Ok((a, opening))
    }

    /// Reads into `buf` (grown as needed, not zeroed again): the bytes read.
    pub(super) fn op_read(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Answer<usize> {
        debug!("read fh={fh} off={offset} size={size}");
        answer("read", guard(|| self.0.read(fh, offset, size, buf)))
    }

    pub(super) fn op_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill: Option<Caller>,
    ) -> Answer<u32> {
        debug!("write fh={fh} off={offset} len={}", data.len());
        answer("write", guard(|| self.0.write(fh, offset, data, kill)))
    }

    /// A close needs nothing from the daemon: the kernel has written cached data out
    /// before it asks, and file locks are the kernel's own. ENOSYS, and the kernel sends
    /// no FLUSH again (a round trip saved on every close).
    pub(super) fn op_flush(&self, ino: u64) -> Errno {
        debug!("flush {ino}");
        Errno::ENOSYS
    }

    pub(super) fn op_release(&self, fh: u64) {
        self.2.release(fh);
        self.0.release(fh);
    }

    pub(super) fn op_fsync(&self, fh: u64, datasync: bool) -> Answer<()> {
        answer("fsync", guard(|| self.0.fsync(fh, datasync)))
    }

    pub(super) fn op_opendir(&self, ino: u64) -> Answer<(u64, FopenFlags)> {
        debug!("opendir {ino}");
        let fh = answer("opendir", guard(|| self.0.opendir(ino)))?;
        Ok((fh, opendir_flags(&self.0)))
    }

    /// A listing from `offset` into `add`, which says when the reply is full. With `plus`,
    /// each entry sent carries its attributes and counts one kernel reference, as a lookup
    /// does; `.` and `..` count none (the kernel takes none for them), and an entry that
    /// does not fit is not counted.
    pub(super) fn op_readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(Listed<'_>) -> bool,
    ) -> Answer<()> {
        debug!(
            "readdir{} {ino} fh={fh} off={offset}",
            if plus { "plus" } else { "" }
        );
        let entries = answer("readdir", guard(|| self.0.readdir(fh, offset)))?;
        for (next, e) in entries {
            let dots = e.name == "." || e.name == "..";
            if !plus || dots {
                let l = Listed {
                    ino: e.ino,
                    next,
                    mode: e.kind,
                    name: &e.name,
                    attr: Plus::Dot,
                };
                if !add(l) {
                    break;
                }
                continue;
            }
            let a = match guard(|| self.0.lookup_entry(fh, &e)) {
                Ok(a) => a,
                // Gone since the listing was taken: left out, as a later listing would.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(err) => {
                    debug!("readdirplus {ino} {:?}: {err}", e.name);
                    let unresolved = self.0.unresolved_entry(fh, &e);
                    let l = Listed {
                        ino: e.ino,
                        next,
                        mode: e.kind,
                        name: &e.name,
                        attr: match &unresolved {
                            Some(a) => Plus::Node(a, Duration::ZERO),
                            None => Plus::Failed,
                        },
                    };
                    if !add(l) {
                        if let Some(a) = unresolved {
                            self.0.forget(a.ino, 1);
                        }
                        break;
                    }
                    continue;
                }
            };
            let l = Listed {
                ino: a.ino,
                next,
                mode: a.st.st_mode,
                name: &e.name,
                attr: Plus::Node(&a, self.entry_ttl(&a).min(self.attr_ttl(&a))),
            };
            if !add(l) {
                self.0.forget(a.ino, 1);
                break;
            }
        }
        Ok(())
    }

    pub(super) fn op_releasedir(&self, fh: u64) {
        self.0.releasedir(fh);
    }

    pub(super) fn op_fsyncdir(&self, ino: u64) -> Answer<()> {
        answer("fsyncdir", guard(|| self.0.fsyncdir(ino)))
    }

    pub(super) fn op_statfs(&self) -> Answer<libc::statfs> {
        answer("statfs", guard(|| self.0.statfs()))
    }

    pub(super) fn op_setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        by: Caller,
    ) -> Answer<()> {
        debug!("setxattr {ino} {name:?}");
        answer(
            "setxattr",
            guard(|| self.0.setxattr(ino, name, value, flags, by)),
        )
    }

    pub(super) fn op_getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Answer<Xattr> {
        debug!("getxattr {ino} {name:?}");
        xattr("getxattr", guard(|| self.0.getxattr(ino, name)), size)
    }

    pub(super) fn op_listxattr(&self, ino: u64, size: u32) -> Answer<Xattr> {
        debug!("listxattr {ino}");
        let r = guard(|| self.0.listxattr(ino)).map(|names| {
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n.as_encoded_bytes());
                out.push(0);
            }
            out
        });
        xattr("listxattr", r, size)
    }

    pub(super) fn op_removexattr(&self, ino: u64, name: &OsStr) -> Answer<()> {
        debug!("removexattr {ino} {name:?}");
        answer("removexattr", guard(|| self.0.removexattr(ino, name)))
    }

    pub(super) fn op_fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        by: Caller,
    ) -> Answer<()> {
        answer(
            "fallocate",
            guard(|| self.0.fallocate(fh, offset, length, mode, by)),
        )
    }
}
