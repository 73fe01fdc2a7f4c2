//! The FUSE adapter: the only module that names fuser's request and reply types. Each
//! method decodes the request, calls the core once and replies once. `kernel` holds what
//! is negotiated with the kernel, `attrs` the attribute conversions, `backing` the backing
//! files of passthrough handles.

mod attrs;
mod backing;
mod kernel;
mod ops;
mod ring;
mod wire;

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, Filesystem, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::debug;

use crate::fileops::SetAttr;
use crate::namespace::NewObject;
use crate::union::{Attr, Caller, LayerFs};

use attrs::{decode_dev, dot_entry, file_attr, file_type, negative_entry, set_time};
use backing::Backing;
pub use backing::Backings;
pub use kernel::{Notifications, widen_readahead};
use ops::{Answer, Plus, Xattr};
pub use ring::serve_uring;

/// A `LayerFs` served over FUSE, with how long the kernel may cache entries and
/// attributes (every change goes through the daemon, so the cache stays coherent), the
/// backing files of passthrough handles, and how requests arrive.
pub struct FuseFs(pub LayerFs, pub Duration, pub Backings, pub Transport);

/// How requests reach the daemon: always fuser's /dev/fuse loop (INIT, forgets,
/// interrupts, and everything when io_uring is off), and the io_uring queues if the mount
/// asks for them and the kernel offers them (decided at FUSE init).
#[derive(Default)]
pub struct Transport {
    /// `uring=on`.
    pub wanted: bool,
    on: std::sync::atomic::AtomicBool,
}

impl Transport {
    pub fn new(wanted: bool) -> Self {
        Transport {
            wanted,
            ..Default::default()
        }
    }

    /// Whether io_uring was negotiated: the queues must then be started (the kernel holds
    /// requests until they are).
    pub fn uring_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_uring(&self) {
        self.on.store(true, std::sync::atomic::Ordering::Release);
    }
}

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

fn reply_entry(fs: &FuseFs, r: Answer<Attr>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry_with_ttls(
            &fs.attr_ttl(&a),
            &fs.entry_ttl(&a),
            &file_attr(&a),
            Generation(a.generation),
        ),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(r: Answer<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(fs: &FuseFs, r: Answer<Attr>, reply: ReplyAttr) {
    match r {
        Ok(a) => reply.attr(&fs.attr_ttl(&a), &file_attr(&a)),
        Err(e) => reply.error(e),
    }
}

fn reply_xattr(r: Answer<Xattr>, reply: ReplyXattr) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(v)) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// A backing file registered through one of fuser's open or create replies.
fn fuser_backing(
    open: impl FnOnce(&std::fs::File) -> io::Result<fuser::BackingId>,
) -> impl FnOnce(&std::fs::File) -> io::Result<Backing> {
    move |f| open(f).map(Backing::Fuser)
}

/// The fuser id of a backing file this loop registered. (Under io_uring, opens never
/// reach this loop: the kernel holds requests until the queues are registered.)
fn fuser_id(b: &Backing) -> Option<&fuser::BackingId> {
    match b {
        Backing::Fuser(id) => Some(id),
        Backing::Raw { .. } => {
            log::error!("BUG: an io_uring backing file in an open served over /dev/fuse");
            None
        }
    }
}

/// The `FuseFs` served by fuser's /dev/fuse loop (and shared with the io_uring queues).
pub struct Served(pub Arc<FuseFs>);

impl Filesystem for Served {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        kernel::negotiate(&self.0, config);
        Ok(())
    }

    fn destroy(&mut self) {
        self.0.0.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.op_lookup(parent.0, name) {
            Ok(None) => reply.entry(&self.0.1, &negative_entry(), Generation(0)),
            Ok(Some(a)) => reply_entry(&self.0, Ok(a), reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.0.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(&self.0, self.0.op_getattr(ino.0, fh.map(|f| f.0)), reply);
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
        reply_attr(&self.0, self.0.op_setattr(ino.0, change), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.op_readlink(ino.0) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(e),
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
        let obj = NewObject::Node {
            mode,
            rdev: decode_dev(rdev),
        };
        let r = self
            .0
            .op_make("mknod", caller(req, umask), parent.0, name, obj);
        reply_entry(&self.0, r, reply);
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
        let obj = NewObject::Dir { mode };
        let r = self
            .0
            .op_make("mkdir", caller(req, umask), parent.0, name, obj);
        reply_entry(&self.0, r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.0.op_unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.0.op_rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let obj = NewObject::Symlink {
            target: target.as_os_str(),
        };
        let r = self
            .0
            .op_make("symlink", caller(req, 0), parent.0, link_name, obj);
        reply_entry(&self.0, r, reply);
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
        let r = self
            .0
            .op_rename(parent.0, name, newparent.0, newname, flags.bits());
        reply_empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(&self.0, self.0.op_link(ino.0, newparent.0, newname), reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let register = fuser_backing(|f| reply.open_backing(f));
        match self.0.op_open(ino.0, flags.0, caller(req, 0), register) {
            Ok(o) => match o.backing.as_deref().map(fuser_id) {
                Some(Some(id)) => reply.opened_passthrough(FileHandle(o.fh), o.flags, id),
                Some(None) => reply.error(Errno::EIO),
                None => reply.opened(FileHandle(o.fh), o.flags),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        READ_BUF.with_borrow_mut(|buf| match self.0.op_read(fh.0, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then(|| caller(req, 0));
        match self.0.op_write(fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(self.0.op_flush(ino.0));
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
        self.0.op_release(fh.0);
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
        reply_empty(self.0.op_fsync(fh.0, datasync), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.op_opendir(ino.0) {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
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
        let r = self.0.op_readdir(ino.0, fh.0, offset, false, |l| {
            !reply.add(INodeNo(l.ino), l.next, file_type(l.mode), l.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// A listing with each entry's attributes, so a walk needs no LOOKUP per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.0.op_readdir(ino.0, fh.0, offset, true, |l| {
            let full = match l.attr {
                Plus::Dot => reply.add(
                    INodeNo(l.ino),
                    l.next,
                    l.name,
                    &self.0.1,
                    &dot_entry(l.ino),
                    Generation(0),
                ),
                // fuser writes the attributes' number as the node id and the entry's: 0
                // here (a listing shows it as the entry's inode number).
                Plus::Failed => reply.add(
                    INodeNo(0),
                    l.next,
                    l.name,
                    &Duration::ZERO,
                    &FileAttr {
                        kind: file_type(l.mode),
                        ..negative_entry()
                    },
                    Generation(0),
                ),
                Plus::Node(a, ttl) => reply.add(
                    INodeNo(a.ino),
                    l.next,
                    l.name,
                    &ttl,
                    &file_attr(a),
                    Generation(a.generation),
                ),
            };
            !full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.op_releasedir(fh.0);
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
        reply_empty(self.0.op_fsyncdir(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.0.op_statfs() {
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
            Err(e) => reply.error(e),
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
        let r = self
            .0
            .op_setxattr(ino.0, name, value, flags, caller(req, 0));
        reply_empty(r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(self.0.op_getxattr(ino.0, name, size), reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(self.0.op_listxattr(ino.0, size), reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.0.op_removexattr(ino.0, name), reply);
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
        let register = fuser_backing(|f| reply.open_backing(f));
        let by = caller(req, umask);
        match self.0.op_create(parent.0, name, mode, flags, by, register) {
            Ok((a, o)) => {
                let ttl = self.0.attr_ttl(&a);
                let (attr, generation) = (file_attr(&a), Generation(a.generation));
                let fh = FileHandle(o.fh);
                match o.backing.as_deref().map(fuser_id) {
                    Some(Some(id)) => {
                        reply.created_passthrough(&ttl, &attr, generation, fh, o.flags, id)
                    }
                    Some(None) => reply.error(Errno::EIO),
                    None => reply.created(&ttl, &attr, generation, fh, o.flags),
                }
            }
            Err(e) => reply.error(e),
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
        let r = self
            .0
            .op_fallocate(fh.0, offset, length, mode, caller(req, 0));
        reply_empty(r, reply);
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
