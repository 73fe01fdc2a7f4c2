//! The FUSE adapter: the only module that names fuser's request and reply types. Each
//! method decodes the request, calls the core once and replies once. `kernel` holds what
//! is negotiated with the kernel, `attrs` the attribute conversions, `backing` the backing
//! files of passthrough handles.

mod attrs;
mod backing;
mod kernel;

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::debug;

use crate::fileops::SetAttr;
use crate::namespace::NewObject;
use crate::union::{Attr, Caller, LayerFs};

use attrs::{decode_dev, dot_entry, file_attr, file_type, negative_entry, set_time};
pub use backing::Backings;
pub use kernel::Notifications;
use kernel::open_flags;

/// A `LayerFs` served over FUSE, with how long the kernel may cache entries and
/// attributes (every change goes through the daemon, so the cache stays coherent), and the
/// backing files of passthrough handles.
pub struct FuseFs(pub LayerFs, pub Duration, pub Backings);

thread_local! {
    /// Each event-loop thread's read buffer, reused so a read neither allocates nor zeroes.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Errnos that mean something is wrong below the mount (a failing or full layer, a
/// resource limit) rather than an ordinary answer; each is logged as a warning.
const FAULTS: [i32; 11] = [
    libc::EIO,
    libc::EROFS,
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EUCLEAN,
    libc::ENOTCONN,
    libc::ESTALE,
    libc::ENOMEM,
    libc::EMFILE,
    libc::ENFILE,
    libc::ENODEV,
];

fn errno(op: &str, e: io::Error) -> Errno {
    let code = e.raw_os_error().unwrap_or_else(|| {
        log::error!("{op}: error without errno: {e}");
        libc::EIO
    });
    if FAULTS.contains(&code) {
        log::warn!("{op}: {e}");
    } else {
        debug!("{op} -> {e}");
    }
    Errno::from_i32(code)
}

/// Runs one core operation; a panic (a bug) becomes EIO for this request instead of
/// ending the event-loop thread.
fn guard<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!("BUG: panic while serving a request: {what}");
        Err(io::Error::from_raw_os_error(libc::EIO))
    })
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask,
    }
}

fn reply_entry(op: &str, r: io::Result<Attr>, ttl: Duration, reply: ReplyEntry) {
    match r {
        Ok(a) if a.uncached_name => reply.entry_with_ttls(
            &ttl,
            &Duration::ZERO,
            &file_attr(&a),
            Generation(a.generation),
        ),
        Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(a.generation)),
        Err(e) => reply.error(errno(op, e)),
    }
}

fn reply_empty(op: &str, r: io::Result<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(op, e)),
    }
}

fn reply_xattr(op: &str, r: io::Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(op, e)),
    }
}

impl FuseFs {
    /// Creates `obj` as `name` in `parent` for the caller of `req` (with its `umask`).
    fn create_as(
        &self,
        req: &Request,
        umask: u32,
        parent: INodeNo,
        name: &OsStr,
        obj: NewObject<'_>,
    ) -> io::Result<Attr> {
        guard(|| {
            self.0
                .create_object(parent.0, name, obj, caller(req, umask))
        })
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        kernel::negotiate(&self.0, config);
        Ok(())
    }

    fn destroy(&mut self) {
        self.0.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        debug!("lookup {} {name:?}", parent.0);
        match guard(|| self.0.lookup(parent.0, name)) {
            // A miss is cached too (node 0 with a timeout: a negative entry), as the names a
            // miss is about only appear through this mount (ld.so and $PATH probing).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&self.1, &negative_entry(), Generation(0))
            }
            r => reply_entry("lookup", r, self.1, reply),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        debug!("getattr {}", ino.0);
        match guard(|| self.0.getattr(ino.0, fh.map(|f| f.0))) {
            Ok(a) => reply.attr(&self.1, &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        debug!(
            "setattr {} mode={mode:?} uid={uid:?} gid={gid:?} size={size:?}",
            ino.0
        );
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
            by: Some(caller(req, 0)),
        };
        match guard(|| self.0.setattr(ino.0, change)) {
            Ok(a) => reply.attr(&self.1, &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        debug!("readlink {}", ino.0);
        match guard(|| self.0.readlink(ino.0)) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(errno("readlink", e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        debug!("mknod {} {name:?} {mode:o}", parent.0);
        let obj = NewObject::Node {
            mode,
            rdev: decode_dev(rdev),
        };
        let r = self.create_as(req, umask, parent, name, obj);
        reply_entry("mknod", r, self.1, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        debug!("mkdir {} {name:?} {mode:o}", parent.0);
        let r = self.create_as(req, umask, parent, name, NewObject::Dir { mode });
        reply_entry("mkdir", r, self.1, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!("unlink {} {name:?}", parent.0);
        reply_empty("unlink", guard(|| self.0.unlink(parent.0, name)), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!("rmdir {} {name:?}", parent.0);
        reply_empty("rmdir", guard(|| self.0.rmdir(parent.0, name)), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        debug!("symlink {} {link_name:?} -> {target:?}", parent.0);
        let obj = NewObject::Symlink {
            target: target.as_os_str(),
        };
        let r = self.create_as(req, 0, parent, link_name, obj);
        reply_entry("symlink", r, self.1, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        debug!(
            "rename {} {name:?} -> {} {newname:?} {flags}",
            parent.0, newparent.0
        );
        let r = guard(|| {
            self.0
                .rename(parent.0, name, newparent.0, newname, flags.bits())
        });
        reply_empty("rename", r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        debug!("link {} -> {} {newname:?}", ino.0, newparent.0);
        reply_entry(
            "link",
            guard(|| self.0.link(ino.0, newparent.0, newname)),
            self.1,
            reply,
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        debug!("open {} {:#o}", ino.0, flags.0);
        match guard(|| self.0.open(ino.0, flags.0, Some(caller(req, 0)))) {
            Ok(o) => {
                let fh = FileHandle(o.fh);
                let flags = open_flags(&self.0, o.keep_cache);
                let id = self.backing(ino.0, o, |f| reply.open_backing(f));
                // Cache flags conflict with passthrough (the kernel answers EIO).
                match id {
                    Some(id) => reply.opened_passthrough(fh, FopenFlags::empty(), &id),
                    None => reply.opened(fh, flags),
                }
            }
            Err(e) => reply.error(errno("open", e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        debug!("read {} fh={} off={offset} size={size}", ino.0, fh.0);
        READ_BUF.with_borrow_mut(|buf| match guard(|| self.0.read(fh.0, offset, size, buf)) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno("read", e)),
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        debug!(
            "write {} fh={} off={offset} len={}",
            ino.0,
            fh.0,
            data.len()
        );
        let kill = write_flags
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then(|| caller(req, 0));
        match guard(|| self.0.write(fh.0, offset, data, kill)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", e)),
        }
    }

    /// A close needs nothing from the daemon: the kernel has written cached data out
    /// before it asks, and file locks are the kernel's own. ENOSYS, and the kernel sends
    /// no FLUSH again (a round trip saved on every close).
    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        debug!("flush {}", ino.0);
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.2.release(fh.0);
        self.0.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty("fsync", guard(|| self.0.fsync(fh.0, datasync)), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        debug!("opendir {}", ino.0);
        match guard(|| self.0.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), kernel::opendir_flags(&self.0)),
            Err(e) => reply.error(errno("opendir", e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        debug!("readdir {} fh={} off={offset}", ino.0, fh.0);
        match guard(|| self.0.readdir(fh.0, offset)) {
            Ok(entries) => {
                for (next, e) in entries {
                    if reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdir", e)),
        }
    }

    /// A listing with each entry's attributes, so a walk needs no LOOKUP per entry. Each
    /// entry sent counts one kernel reference, as a lookup does; `.` and `..` count none
    /// (the kernel takes none for them), and an entry that does not fit is not counted.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        debug!("readdirplus {} fh={} off={offset}", ino.0, fh.0);
        let entries = match guard(|| self.0.readdir(fh.0, offset)) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno("readdirplus", e)),
        };
        for (next, e) in entries {
            if e.name == "." || e.name == ".." {
                if reply.add(
                    INodeNo(e.ino),
                    next,
                    &e.name,
                    &self.1,
                    &dot_entry(e.ino),
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            let a = match guard(|| self.0.lookup_entry(fh.0, &e)) {
                Ok(a) => a,
                // Gone since the listing was taken: left out, as a later listing would.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(err) => {
                    debug!("readdirplus {} {:?}: {err}", ino.0, e.name);
                    break;
                }
            };
            let ttl = if a.uncached_name {
                Duration::ZERO
            } else {
                self.1
            };
            let full = reply.add(
                INodeNo(a.ino),
                next,
                &e.name,
                &ttl,
                &file_attr(&a),
                Generation(a.generation),
            );
            if full {
                self.0.forget(a.ino, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty("fsyncdir", guard(|| self.0.fsyncdir(ino.0)), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard(|| self.0.statfs()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namelen as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno("statfs", e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        debug!("setxattr {} {name:?}", ino.0);
        reply_empty(
            "setxattr",
            guard(|| self.0.setxattr(ino.0, name, value, flags, caller(req, 0))),
            reply,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        debug!("getxattr {} {name:?}", ino.0);
        reply_xattr(
            "getxattr",
            guard(|| self.0.getxattr(ino.0, name)),
            size,
            reply,
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        debug!("listxattr {}", ino.0);
        let r = guard(|| self.0.listxattr(ino.0)).map(|names| {
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n.as_encoded_bytes());
                out.push(0);
            }
            out
        });
        reply_xattr("listxattr", r, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!("removexattr {} {name:?}", ino.0);
        reply_empty(
            "removexattr",
            guard(|| self.0.removexattr(ino.0, name)),
            reply,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        debug!("create {} {name:?} {mode:o} {flags:#o}", parent.0);
        // The file is new: O_TRUNC has nothing to cut.
        let flags = flags & !libc::O_TRUNC;
        let by = caller(req, umask);
        let r = guard(|| self.0.create_file(parent.0, name, mode, flags, by));
        match r {
            Ok((a, o)) => {
                let (attr, generation) = (file_attr(&a), Generation(a.generation));
                let (fh, flags) = (FileHandle(o.fh), open_flags(&self.0, o.keep_cache));
                let id = self.backing(a.ino, o, |f| reply.open_backing(f));
                match id {
                    Some(id) => {
                        let none = FopenFlags::empty();
                        reply.created_passthrough(&self.1, &attr, generation, fh, none, &id)
                    }
                    None => reply.created(&self.1, &attr, generation, fh, flags),
                }
            }
            Err(e) => reply.error(errno("create", e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            "fallocate",
            guard(|| self.0.fallocate(fh.0, offset, length, mode, caller(req, 0))),
            reply,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_eio() {
        let r: io::Result<()> = guard(|| panic!("boom"));
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(guard(|| Ok(5)).unwrap(), 5);
    }
}
