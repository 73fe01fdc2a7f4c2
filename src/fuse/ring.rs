//! The io_uring transport (`uring=on`, where the kernel offers FUSE over io_uring): per
//! CPU, a few threads pinned to it, each with one ring entry of that CPU's queue. The
//! kernel puts a request into an entry of the queue of the CPU its caller runs on, so the
//! thread that serves it runs on the same core: no wakeup of another core per request, the
//! largest part of a round trip on small machines (14-17 us per request over /dev/fuse
//! against 6.5-8 us here, on a 2-core VM). Forgets and interrupts still come through
//! fuser's /dev/fuse loop, as the kernel sends them there.
//!
//! The answer wakes the caller from the queue thread, which still runs on the caller's
//! CPU; the scheduler puts a woken task on an idle CPU rather than a busy one, so the
//! caller would move to the other core at each answer (12,000-15,000 migrations in 20,000
//! requests on 2 cores), paying that core's wakeup after all. A CPU whose only runnable
//! task is `SCHED_IDLE` counts as idle there, so a queue thread is `SCHED_IDLE` while it
//! commits and waits (one io_uring_enter), and normal while it serves: the caller stays
//! on its CPU and runs at once, and no request is served at idle priority.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{BackingId, Errno, FopenFlags};
use log::debug;

use crate::fileops::SetAttr;
use crate::namespace::NewObject;
use crate::sys::SetTime;
use crate::sys::uring::{FuseQueue, HEADER_LEN, OP_IN, pin_to_cpu, possible_cpus, set_idle_policy};
use crate::union::{Attr, Caller};

use super::FuseFs;
use super::attrs::decode_dev;
use super::backing::Backing;
use super::ops::{Answer, Opening, Plus, Xattr};
use super::wire::{self, DirOut, IN_HEADER_LEN, InHeader, Listing, Op, SetattrIn};

/// The payload buffer of each entry: the kernel's largest request or reply (the
/// negotiated max_write and max_pages, see `kernel::negotiate`).
pub(super) const PAYLOAD_LEN: usize = 1 << 20;

/// Starts the queues of the FUSE connection of `dev`, `per_cpu` threads for each CPU, and
/// returns once every entry is registered (the kernel holds requests until then).
pub fn serve_uring(fs: Arc<FuseFs>, dev: BorrowedFd<'_>, per_cpu: usize) -> io::Result<()> {
    let dev = Arc::new(dev.try_clone_to_owned()?);
    let cpus = possible_cpus()?;
    let yields = idle_while_waiting();
    let (tx, rx) = mpsc::channel();
    for cpu in 0..cpus {
        for n in 0..per_cpu {
            let (fs, dev, tx) = (Arc::clone(&fs), Arc::clone(&dev), tx.clone());
            std::thread::Builder::new()
                .name(format!("uring-{cpu}.{n}"))
                .spawn(move || run_queue(fs, dev, cpu, yields, tx))?;
        }
    }
    drop(tx);
    for _ in 0..cpus * per_cpu {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::from_raw_os_error(libc::EIO)),
        }
    }
    log::info!("io_uring on: {cpus} queues of {per_cpu} entries, each served on its CPU");
    Ok(())
}

/// Whether queue threads can be `SCHED_IDLE` while they wait (see the module's doc): only
/// where a thread can go back to the normal policy after it (root, or an `RLIMIT_NICE`
/// that allows it; not in a user namespace without them), tried on a thread of its own.
fn idle_while_waiting() -> bool {
    let tried = std::thread::spawn(|| set_idle_policy(true).and_then(|()| set_idle_policy(false)));
    match tried.join() {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!("io_uring queue threads stay at the normal policy while waiting: {e}");
            false
        }
        Err(_) => false,
    }
}

fn run_queue(
    fs: Arc<FuseFs>,
    dev: Arc<OwnedFd>,
    cpu: usize,
    yields: bool,
    ready: mpsc::Sender<io::Result<()>>,
) {
    if let Err(e) = pin_to_cpu(cpu) {
        debug!("queue {cpu}: not pinned: {e}");
    }
    let queue = dev
        .try_clone()
        .and_then(|d| FuseQueue::register(d, cpu as u16, 1, PAYLOAD_LEN));
    let mut q = match queue {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut done = Vec::new();
    let mut scratch = Vec::new();
    loop {
        if let Err(e) = commit_and_wait(&mut q, cpu, &mut done, yields) {
            log::warn!("io_uring queue {cpu}: {e}");
            return;
        }
        for &(i, res) in &done {
            if res < 0 {
                // The connection is going (unmount): the entry is finished.
                debug!(
                    "io_uring queue {cpu}: {}",
                    io::Error::from_raw_os_error(-res)
                );
                return;
            }
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve_one(&fs, &dev, &mut q, i, &mut scratch)
            }));
            let (unique, error, len) = served.unwrap_or_else(|_| {
                log::error!("BUG: panic while serving a request over io_uring");
                (q.unique(i), -libc::EIO, 0)
            });
            if let Err(e) = q.commit(i, unique, error, len) {
                log::warn!("io_uring queue {cpu}: {e}");
                return;
            }
        }
    }
}

/// Submits the queued commits and waits for requests, as `SCHED_IDLE` when `yields` (see
/// the module's doc).
fn commit_and_wait(
    q: &mut FuseQueue,
    cpu: usize,
    done: &mut Vec<(usize, i32)>,
    yields: bool,
) -> io::Result<()> {
    if !yields {
        return q.wait(done);
    }
    let _ = set_idle_policy(true);
    let waited = q.wait(done);
    if let Err(e) = set_idle_policy(false) {
        // Its entry keeps serving (the queue needs it), if at idle priority.
        log::warn!("io_uring queue {cpu}: cannot leave SCHED_IDLE: {e}");
    }
    waited
}

/// What a request is answered with, before it is encoded into the entry's payload.
enum Done {
    Empty,
    /// An entry (`None`: a negative one).
    Entry(Option<Attr>),
    Attr(Attr),
    /// The first `n` bytes of the thread's scratch buffer.
    Bytes(usize),
    Open(u64, u32, u32),
    Created(Attr, u64, u32, u32),
    Size(u32),
    Statfs(Box<libc::statfs>),
}

/// Serves entry `i`'s request: its unique id, the errno to answer (0 or negative) and the
/// length of the reply written into the payload.
fn serve_one(
    fs: &FuseFs,
    dev: &Arc<OwnedFd>,
    q: &mut FuseQueue,
    i: usize,
    scratch: &mut Vec<u8>,
) -> (u64, i32, usize) {
    let (header, payload) = q.request(i);
    let Some(h) = InHeader::parse(&header[..IN_HEADER_LEN]) else {
        return (0, -libc::EIO, 0);
    };
    let arg_len = (h.len as usize).saturating_sub(IN_HEADER_LEN + payload.len());
    let done = match header
        .get(OP_IN..OP_IN + arg_len)
        .filter(|_| OP_IN + arg_len <= HEADER_LEN)
    {
        Some(arg) => match Op::decode(h.opcode, arg, payload) {
            Some(op) => dispatch(fs, dev, &h, op, scratch),
            None => Err(Errno::EINVAL),
        },
        None => Err(Errno::EINVAL),
    };
    let out = q.payload_mut(i);
    let ttl = fs.1;
    match done {
        Err(e) => (h.unique, -e.code(), 0),
        Ok(d) => {
            let len = match d {
                Done::Empty => 0,
                Done::Entry(a) => {
                    let entry_ttl = a.as_ref().map_or(ttl, |a| fs.entry_ttl(a));
                    let attr_ttl = a.as_ref().map_or(ttl, |a| fs.attr_ttl(a));
                    wire::entry_out(out, a.as_ref(), entry_ttl, attr_ttl)
                }
                Done::Attr(a) => wire::attr_out(out, &a, fs.attr_ttl(&a)),
                Done::Bytes(n) => {
                    let n = n.min(out.len());
                    out[..n].copy_from_slice(&scratch[..n]);
                    n
                }
                Done::Open(fh, flags, id) => wire::open_out(out, fh, flags, id),
                Done::Created(a, fh, flags, id) => {
                    wire::create_out(out, &a, fs.attr_ttl(&a), fh, flags, id)
                }
                Done::Size(n) => wire::size_out(out, n),
                Done::Statfs(s) => wire::statfs_out(out, &s),
            };
            (h.unique, 0, len)
        }
    }
}

fn caller(h: &InHeader, umask: u32) -> Caller {
    Caller {
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
        umask,
    }
}

fn set_time(valid: u32, given: u32, now: u32, (sec, nsec): (i64, u32)) -> Option<SetTime> {
    if valid & given == 0 {
        None
    } else if valid & now != 0 {
        Some(SetTime::Now)
    } else {
        Some(SetTime::At(sec, i64::from(nsec)))
    }
}

fn setattr(s: SetattrIn, by: Caller) -> SetAttr {
    let has = |bit| s.valid & bit != 0;
    SetAttr {
        mode: has(wire::FATTR_MODE).then_some(s.mode),
        uid: has(wire::FATTR_UID).then_some(s.uid),
        gid: has(wire::FATTR_GID).then_some(s.gid),
        size: has(wire::FATTR_SIZE).then_some(s.size),
        atime: set_time(s.valid, wire::FATTR_ATIME, wire::FATTR_ATIME_NOW, s.atime),
        mtime: set_time(s.valid, wire::FATTR_MTIME, wire::FATTR_MTIME_NOW, s.mtime),
        fh: has(wire::FATTR_FH).then_some(s.fh),
        by: Some(by),
    }
}

/// The reply to an open: handle, FOPEN_* flags, backing id.
fn opened(o: Opening) -> Answer<(u64, u32, u32)> {
    match o.backing.as_deref() {
        None => Ok((o.fh, o.flags.bits(), 0)),
        Some(Backing::Raw { id, .. }) => {
            let flags = o.flags | FopenFlags::FOPEN_PASSTHROUGH;
            Ok((o.fh, flags.bits(), *id))
        }
        Some(Backing::Fuser(_)) => {
            log::error!("BUG: a /dev/fuse backing file in an open served over io_uring");
            Err(Errno::EIO)
        }
    }
}

fn bytes(scratch: &mut Vec<u8>, b: &[u8]) -> Done {
    scratch.clear();
    scratch.extend_from_slice(b);
    Done::Bytes(b.len())
}

fn xattr(scratch: &mut Vec<u8>, x: Xattr) -> Done {
    match x {
        Xattr::Size(n) => Done::Size(n),
        Xattr::Data(v) => bytes(scratch, &v),
    }
}

fn dispatch(
    fs: &FuseFs,
    dev: &Arc<OwnedFd>,
    h: &InHeader,
    op: Op<'_>,
    scratch: &mut Vec<u8>,
) -> Answer<Done> {
    let ino = h.nodeid;
    let register = |f: &std::fs::File| {
        BackingId::create_raw(dev.as_fd(), f).map(|id| Backing::Raw {
            id,
            dev: Arc::clone(dev),
        })
    };
    let entry = |r: Answer<Attr>| r.map(|a| Done::Entry(Some(a)));
    let empty = |r: Answer<()>| r.map(|()| Done::Empty);
    Ok(match op {
        Op::Lookup { name } => Done::Entry(fs.op_lookup(ino, name)?),
        Op::Getattr { fh } => Done::Attr(fs.op_getattr(ino, fh)?),
        Op::Setattr(s) => Done::Attr(fs.op_setattr(ino, setattr(s, caller(h, 0)))?),
        Op::Readlink => bytes(scratch, fs.op_readlink(ino)?.as_encoded_bytes()),
        Op::Symlink { name, target } => {
            let obj = NewObject::Symlink { target };
            entry(fs.op_make("symlink", caller(h, 0), ino, name, obj))?
        }
        Op::Mknod {
            name,
            mode,
            rdev,
            umask,
        } => {
            let obj = NewObject::Node {
                mode,
                rdev: decode_dev(rdev),
            };
            entry(fs.op_make("mknod", caller(h, umask), ino, name, obj))?
        }
        Op::Mkdir { name, mode, umask } => {
            let obj = NewObject::Dir { mode };
            entry(fs.op_make("mkdir", caller(h, umask), ino, name, obj))?
        }
        Op::Unlink { name } => empty(fs.op_unlink(ino, name))?,
        Op::Rmdir { name } => empty(fs.op_rmdir(ino, name))?,
        Op::Rename {
            name,
            newdir,
            newname,
            flags,
        } => empty(fs.op_rename(ino, name, newdir, newname, flags))?,
        Op::Link { old, newname } => entry(fs.op_link(old, ino, newname))?,
        Op::Open { flags } => {
            let (fh, flags, id) = opened(fs.op_open(ino, flags as i32, caller(h, 0), register)?)?;
            Done::Open(fh, flags, id)
        }
        Op::Read { fh, offset, size } => {
            let n = fs.op_read(fh, offset, size.min(PAYLOAD_LEN as u32), scratch)?;
            Done::Bytes(n)
        }
        Op::Write {
            fh,
            offset,
            data,
            write_flags,
        } => {
            let kill = (write_flags & wire::WRITE_KILL_SUIDGID != 0).then(|| caller(h, 0));
            Done::Size(fs.op_write(fh, offset, data, kill)?)
        }
        Op::Statfs => Done::Statfs(Box::new(fs.op_statfs()?)),
        Op::Release { fh } => {
            fs.op_release(fh);
            Done::Empty
        }
        Op::Fsync { fh, datasync } => empty(fs.op_fsync(fh, datasync))?,
        Op::Setxattr { name, value, flags } => {
            empty(fs.op_setxattr(ino, name, value, flags, caller(h, 0)))?
        }
        Op::Getxattr { name, size } => xattr(scratch, fs.op_getxattr(ino, name, size)?),
        Op::Listxattr { size } => xattr(scratch, fs.op_listxattr(ino, size)?),
        Op::Removexattr { name } => empty(fs.op_removexattr(ino, name))?,
        Op::Flush => return Err(fs.op_flush(ino)),
        Op::Opendir => {
            let (fh, flags) = fs.op_opendir(ino)?;
            Done::Open(fh, flags.bits(), 0)
        }
        Op::Readdir {
            fh,
            offset,
            size,
            plus,
        } => {
            scratch.clear();
            scratch.resize((size as usize).min(PAYLOAD_LEN), 0);
            let mut out = DirOut::new(scratch);
            fs.op_readdir(ino, fh, offset, plus, |l| {
                let with = match l.attr {
                    Plus::Node(a, ttl) => (Listing::Node(a), ttl, ttl),
                    Plus::Dot => (Listing::Dot, fs.1, fs.1),
                    Plus::Failed => (Listing::NoNode, Duration::ZERO, Duration::ZERO),
                };
                let with = plus.then_some(with);
                out.add(l.ino, l.next, l.mode, l.name, with)
            })?;
            Done::Bytes(out.len())
        }
        Op::Releasedir { fh } => {
            fs.op_releasedir(fh);
            Done::Empty
        }
        Op::Fsyncdir => empty(fs.op_fsyncdir(ino))?,
        // The kernel checks permissions itself (default_permissions).
        Op::Access => Done::Empty,
        Op::Create {
            name,
            mode,
            umask,
            flags,
        } => {
            let (a, o) = fs.op_create(ino, name, mode, flags as i32, caller(h, umask), register)?;
            let (fh, flags, id) = opened(o)?;
            Done::Created(a, fh, flags, id)
        }
        Op::Fallocate {
            fh,
            offset,
            length,
            mode,
        } => empty(fs.op_fallocate(fh, offset, length, mode, caller(h, 0)))?,
        // The session's end (fuser's loop sees it too, and shuts the core down).
        Op::Destroy => Done::Empty,
        Op::Unsupported(opcode) => {
            debug!("opcode {opcode}: not served (ENOSYS)");
            return Err(Errno::ENOSYS);
        }
    })
}
