//! A layer that fails under the mount: a lower returning EIO, an upper gone read-only or
//! removed, a lower directory removed while mounted. The caller gets a clear errno, the
//! daemon logs it and keeps serving, never panics or hangs, and recovers with the layer.
mod common;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

/// What a node of the faulty tree does wrong.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Reads of its data fail.
    Read,
    /// Looking it up fails.
    Lookup,
    /// Listing it fails.
    List,
    /// Reads of its data wait while the filesystem's `hold` is set (a slow disk).
    Slow,
    /// Looking it up waits while the filesystem's `hold` is set.
    SlowLookup,
}

struct Node {
    parent: u64,
    name: &'static str,
    dir: bool,
    data: &'static [u8],
    fault: Fault,
}

/// The tree, indexed by inode number - 1.
const TREE: [Node; 10] = [
    Node {
        parent: 1,
        name: "",
        dir: true,
        data: b"",
        fault: Fault::None,
    },
    Node {
        parent: 1,
        name: "good",
        dir: false,
        data: b"fine\n",
        fault: Fault::None,
    },
    Node {
        parent: 1,
        name: "badread",
        dir: false,
        data: b"never read\n",
        fault: Fault::Read,
    },
    Node {
        parent: 1,
        name: "badattr",
        dir: false,
        data: b"x",
        fault: Fault::Lookup,
    },
    Node {
        parent: 1,
        name: "baddir",
        dir: true,
        data: b"",
        fault: Fault::List,
    },
    Node {
        parent: 1,
        name: "dir",
        dir: true,
        data: b"",
        fault: Fault::None,
    },
    Node {
        parent: 6,
        name: "inner",
        dir: false,
        data: b"inner\n",
        fault: Fault::None,
    },
    // Not read before the layer fails (pages read before are served from the cache).
    Node {
        parent: 1,
        name: "cold",
        dir: false,
        data: b"cold\n",
        fault: Fault::None,
    },
    Node {
        parent: 1,
        name: "slow",
        dir: false,
        data: b"slow\n",
        fault: Fault::Slow,
    },
    Node {
        parent: 1,
        name: "slowname",
        dir: false,
        data: b"",
        fault: Fault::SlowLookup,
    },
];

/// A read-only FUSE filesystem serving [`TREE`], whose faulty nodes answer EIO, and which
/// answers EIO to everything while `broken` is set (a disk gone bad).
struct Faulty {
    broken: Arc<AtomicBool>,
    /// While set, reads of the slow node and lookups of the slow name wait; `waiting`
    /// says one is waiting.
    hold: Arc<AtomicBool>,
    waiting: Arc<AtomicBool>,
}

const TTL: Duration = Duration::from_secs(0);

fn attr(ino: u64) -> FileAttr {
    let n = &TREE[ino as usize - 1];
    FileAttr {
        ino: INodeNo(ino),
        size: n.data.len() as u64,
        blocks: 1,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if n.dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if n.dir { 0o755 } else { 0o644 },
        nlink: if n.dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn eio() -> Errno {
    Errno::from_i32(libc::EIO)
}

impl Faulty {
    fn broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    fn wait_while_held(&self) {
        self.waiting.store(true, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Filesystem for Faulty {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.broken() {
            return reply.error(eio());
        }
        let found = (2..=TREE.len() as u64).find(|&i| {
            TREE[i as usize - 1].parent == parent.0 && name == TREE[i as usize - 1].name
        });
        match found {
            Some(i) if TREE[i as usize - 1].fault == Fault::Lookup => reply.error(eio()),
            Some(i) if TREE[i as usize - 1].fault == Fault::SlowLookup => {
                self.wait_while_held();
                reply.entry(&TTL, &attr(i), Generation(0))
            }
            Some(i) => reply.entry(&TTL, &attr(i), Generation(0)),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.broken() {
            return reply.error(eio());
        }
        reply.attr(&TTL, &attr(ino.0));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.broken() {
            return reply.error(eio());
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let n = &TREE[ino.0 as usize - 1];
        if self.broken() || n.fault == Fault::Read {
            return reply.error(eio());
        }
        if n.fault == Fault::Slow {
            self.wait_while_held();
        }
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.broken() {
            return reply.error(eio());
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if self.broken() || TREE[ino.0 as usize - 1].fault == Fault::List {
            return reply.error(eio());
        }
        let mut all = vec![
            (ino.0, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        for i in 2..=TREE.len() as u64 {
            if TREE[i as usize - 1].parent == ino.0 {
                all.push((i, attr(i).kind, TREE[i as usize - 1].name));
            }
        }
        for (k, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), k as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _size: u32, reply: ReplyXattr) {
        if self.broken() {
            return reply.error(eio());
        }
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.broken() {
            return reply.error(eio());
        }
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}

/// The faulty filesystem's mount; unmounted on drop, even on panic (after the layerfs
/// mount above it, which is declared later and so dropped first).
struct FaultyMount(Option<fuser::BackgroundSession>, std::path::PathBuf);

impl Drop for FaultyMount {
    fn drop(&mut self) {
        unmount(&self.1);
        if let Some(session) = self.0.take() {
            let _ = session.join();
        }
    }
}

/// Runs `slow` on the mount of `f` over the faulty lower, where it waits in the lower
/// while held, and `other` once it waits; what `other` returned, then `slow`. Fails if
/// `other` does not finish while `slow` waits: not a timing threshold, since without it
/// being served beside `slow`, `other` would wait for the hold forever.
fn beside_a_held_request<S: Send + 'static, O: Send + 'static>(
    f: &Fixture,
    slow: impl FnOnce(&Path) -> S + Send + 'static,
    other: impl FnOnce(&Path) -> O + Send + 'static,
) -> (O, S) {
    let (hold, waiting) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let _faulty = FaultyMount(
        Some({
            let mut config = fuser::Config::default();
            config.mount_options = vec![fuser::MountOption::FSName("faulty".into())];
            let fs = Faulty {
                broken: Arc::default(),
                hold: hold.clone(),
                waiting: waiting.clone(),
            };
            fuser::spawn_mount(fs, f.lower(0), &config).expect("mount the faulty lower")
        }),
        f.lower(0).to_path_buf(),
    );
    let m = f.mount();
    let path = m.path.clone();
    let slow = std::thread::spawn(move || slow(&path));
    let start = std::time::Instant::now();
    while !waiting.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the slow request never reached the lower"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let path = m.path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(other(&path));
    });
    let got = rx.recv_timeout(Duration::from_secs(60));
    hold.store(false, Ordering::SeqCst);
    let other = got.expect("a request waited for an unrelated one held in the lower");
    (other, slow.join().unwrap())
}

/// A copy-up held up by a slow lower stalls nothing else: a stat and a read of an
/// unrelated file complete while it waits (the daemon serves requests on several threads).
#[test]
fn a_slow_copy_up_stalls_nothing_else() {
    require_fuse!();
    let f = Fixture::new(1);
    put(&f.upper, "mine", "upper\n");
    let ((len, content), copied) = beside_a_held_request(
        &f,
        |mnt| {
            fs::OpenOptions::new()
                .append(true)
                .open(mnt.join("slow"))
                .and_then(|mut h| h.write_all(b"+"))
        },
        |mnt| {
            let mine = mnt.join("mine");
            (
                fs::metadata(&mine).map(|m| m.len()).ok(),
                fs::read(&mine).ok(),
            )
        },
    );
    assert_eq!(len, Some(6));
    assert_eq!(content.as_deref(), Some(&b"upper\n"[..]));
    copied.unwrap();
    assert_eq!(read(f.upper.join("slow")), "slow\n+");
}

/// A lookup held up by a slow lower leaves other lookups in the same directory free to
/// run (PARALLEL_DIROPS: without it the kernel serialises the lookups of one directory).
#[test]
fn a_slow_lookup_stalls_no_other_in_its_directory() {
    require_fuse!();
    let f = Fixture::new(1);
    put(&f.upper, "mine", "upper\n");
    let (mine, slow) = beside_a_held_request(
        &f,
        |mnt| fs::metadata(mnt.join("slowname")).map(|m| m.len()),
        |mnt| fs::metadata(mnt.join("mine")).map(|m| m.len()),
    );
    assert_eq!(mine.unwrap(), 6);
    assert_eq!(slow.unwrap(), 0);
}

/// Whether the daemon's log has a warning naming `what`, and no panic.
fn logged(log: &Path, what: &str) -> bool {
    let text = fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains("panic"), "the daemon panicked:\n{text}");
    text.lines().any(|l| l.contains("WARN") && l.contains(what))
}

#[test]
fn lower_returning_eio() {
    require_fuse!();
    let f = Fixture::new(1);
    let broken = Arc::new(AtomicBool::new(false));
    let _faulty = FaultyMount(
        Some({
            let mut config = fuser::Config::default();
            config.mount_options = vec![fuser::MountOption::FSName("faulty".into())];
            fuser::spawn_mount(
                Faulty {
                    broken: broken.clone(),
                    hold: Arc::default(),
                    waiting: Arc::default(),
                },
                f.lower(0),
                &config,
            )
            .expect("mount the faulty lower")
        }),
        f.lower(0).to_path_buf(),
    );
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=warn", &log);

    assert_eq!(read(m.p("good")), "fine\n");
    assert_eq!(read(m.p("dir/inner")), "inner\n");
    let mut listed = names(&m.path);
    listed.sort();
    assert_eq!(
        listed,
        [
            "badattr", "baddir", "badread", "cold", "dir", "good", "slow", "slowname"
        ]
    );
    assert_eq!(errno(fs::read(m.p("badread"))), libc::EIO);
    assert_eq!(errno(fs::metadata(m.p("badattr"))), libc::EIO);
    assert_eq!(
        errno(fs::read_dir(m.p("baddir")).and_then(|mut d| d.next().transpose())),
        libc::EIO
    );
    // A copy-up that cannot read its source fails whole: nothing shows in the upper.
    let r = fs::OpenOptions::new().append(true).open(m.p("badread"));
    assert_eq!(errno(r), libc::EIO);
    assert!(!f.upper.join("badread").exists());
    assert!(temporaries(&f.work).is_empty(), "a partial copy is left");
    assert!(logged(&log, "Input/output error"), "no warning in the log");
    // A truncating open copies up no data (the kernel sends O_TRUNC with the open, not
    // as a SETATTR after it), so it succeeds on that file whose data cannot be read.
    fs::write(m.p("badread"), "new\n").unwrap();
    assert_eq!(read(f.upper.join("badread")), "new\n");
    assert_eq!(read(m.p("badread")), "new\n");

    // The whole layer fails: what needs it gets EIO, the upper still serves.
    fs::write(m.p("mine"), "upper\n").unwrap();
    let open = fs::File::open(m.p("cold")).unwrap();
    broken.store(true, Ordering::SeqCst);
    assert_eq!(errno(fs::read(m.p("cold"))), libc::EIO);
    assert_eq!(
        errno(std::io::Read::read(&mut &open, &mut [0u8; 8])),
        libc::EIO
    );
    assert_eq!(errno(fs::metadata(m.p("dir/inner"))), libc::EIO);
    assert_eq!(errno(fs::write(m.p("new"), "x")), libc::EIO);
    assert_eq!(read(m.p("mine")), "upper\n");
    let mut h = fs::OpenOptions::new()
        .append(true)
        .open(m.p("mine"))
        .unwrap();
    h.write_all(b"more\n").unwrap();
    drop(h);

    // The layer comes back: so does everything.
    broken.store(false, Ordering::SeqCst);
    assert_eq!(read(m.p("good")), "fine\n");
    assert_eq!(read(m.p("dir/inner")), "inner\n");
    fs::write(m.p("new"), "x").unwrap();
    fs::write(m.p("good"), "changed\n").unwrap();
    assert_eq!(read(f.upper.join("good")), "changed\n");
    assert_eq!(read(m.p("mine")), "upper\nmore\n");
    drop(open);
    drop(m);
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}

#[test]
fn upper_gone_read_only() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "low", "lower\n");
    put(f.lower(0), "d/low2", "lower\n");
    let fsdir = f.dir.path().join("upperfs");
    let tmpfs = Tmpfs::new(&fsdir, "16m");
    let (upper, work) = (fsdir.join("upper"), fsdir.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    // Written before the mount: a reader opened while a passthrough writer's release is
    // still on its way would share the writer's backing file, which is open for writing.
    fs::write(upper.join("mine"), "upper\n").unwrap();
    let c = f.mount_command_on(&upper, &work);
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(c, "layerfs=warn", &log);
    let reader = fs::File::open(m.p("mine")).unwrap();
    // (The kernel refuses to make a filesystem with files open for writing read-only.)
    tmpfs.remount("ro");
    assert_eq!(errno(fs::write(m.p("new"), "x")), libc::EROFS);
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(m.p("low"))),
        libc::EROFS
    );
    assert_eq!(errno(fs::remove_file(m.p("low"))), libc::EROFS);
    assert_eq!(errno(fs::remove_file(m.p("mine"))), libc::EROFS);
    assert_eq!(errno(fs::create_dir(m.p("d/sub"))), libc::EROFS);
    assert_eq!(errno(fs::rename(m.p("mine"), m.p("mine2"))), libc::EROFS);
    assert_eq!(
        errno(std::os::unix::fs::chown(m.p("mine"), Some(1), None)),
        libc::EROFS
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(m.p("mine"))),
        libc::EROFS
    );
    // Reading goes on.
    assert_eq!(read(m.p("low")), "lower\n");
    assert_eq!(read(m.p("mine")), "upper\n");
    assert_eq!(names(&m.p("d")), ["low2"]);
    assert!(!f.lower(0).join("d/sub").exists());
    assert!(
        logged(&log, "Read-only file system"),
        "no warning in the log"
    );

    tmpfs.remount("rw");
    fs::write(m.p("new"), "x").unwrap();
    let mut writer = fs::OpenOptions::new()
        .append(true)
        .open(m.p("mine"))
        .unwrap();
    writer.write_all(b"more\n").unwrap();
    fs::write(m.p("low"), "changed\n").unwrap();
    assert_eq!(read(upper.join("low")), "changed\n");
    assert_eq!(read(m.p("mine")), "upper\nmore\n");
    drop((writer, reader));
    drop(m);
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}

/// The ordered answers of a few operations on a mount whose upper, or one of whose lower
/// directories, was removed while mounted: "ok", "ok N" (entries listed) or the errno.
fn after_removal(mnt: &Path) -> Vec<(&'static str, String)> {
    let p = |r: &str| mnt.join(r);
    let show = |r: std::io::Result<String>| {
        r.unwrap_or_else(|e| format!("errno {}", e.raw_os_error().unwrap_or(-1)))
    };
    let done = |r: std::io::Result<()>| show(r.map(|()| "ok".into()));
    vec![
        ("read low", show(fs::read_to_string(p("low")))),
        ("read d/low2", show(fs::read_to_string(p("d/low2")))),
        ("read d/up", show(fs::read_to_string(p("d/up")))),
        (
            "list d",
            show(fs::read_dir(p("d")).map(|d| format!("ok {}", d.count()))),
        ),
        ("create new", done(fs::write(p("new"), "x"))),
        ("create d/new", done(fs::write(p("d/new"), "x"))),
        ("write low", done(fs::write(p("low"), "x"))),
        ("unlink d/low3", done(fs::remove_file(p("d/low3")))),
        ("mkdir e", done(fs::create_dir(p("e")))),
    ]
}

fn removal_setup(f: &Fixture) {
    put(f.lower(0), "low", "lower\n");
    put(f.lower(0), "d/low2", "lower\n");
    put(f.lower(0), "d/low3", "lower\n");
    fs::create_dir_all(f.upper.join("d")).unwrap();
    fs::write(f.upper.join("d/up"), "upper\n").unwrap();
}

/// Mounts layerfs over [`removal_setup`]'s layers, warms its caches, runs `break_it` and
/// returns [`after_removal`]'s answers; the daemon must go on and exit cleanly.
fn layerfs_after(break_it: fn(&Fixture)) -> Vec<(&'static str, String)> {
    let f = Fixture::new(1);
    removal_setup(&f);
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=warn", &log);
    assert_eq!(read(m.p("d/low2")), "lower\n");
    assert_eq!(names(&m.p("d")).len(), 3);
    break_it(&f);
    let answers = after_removal(&m.path);
    logged(&log, "");
    drop(m);
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    answers
}

/// The upper directory removed under a live mount: whatever needs the upper fails with
/// ENOENT, as on kernel overlayfs in the same state. One answer differs: the kernel still
/// holds the removed upper directory `d` and lists it as empty, where layerfs, which
/// reaches layer objects by name, answers ENOENT.
#[test]
fn upper_removed_while_mounted() {
    require_fuse!();
    let gone = |f: &Fixture| fs::remove_dir_all(&f.upper).unwrap();
    let k = Fixture::new(1);
    removal_setup(&k);
    let mut kernel = {
        let m = k.kernel_mount();
        assert_eq!(read(m.p("d/low2")), "lower\n");
        assert_eq!(names(&m.p("d")).len(), 3);
        gone(&k);
        after_removal(&m.path)
    };
    let listed = kernel.iter_mut().find(|(op, _)| *op == "list d").unwrap();
    assert_eq!(listed.1, "ok 0");
    listed.1 = "errno 2".into();
    assert_eq!(
        layerfs_after(gone),
        kernel,
        "layerfs and kernel overlayfs disagree"
    );
}

/// A lower directory removed under a live mount (which overlayfs leaves undefined):
/// layerfs answers as a fresh kernel overlayfs mount of the changed layers would, except
/// that the listing of `d`, taken before, is still the kernel's cached one (the daemon
/// never changes a listing on its own, so the kernel keeps listings until the directory
/// changes through the mount).
#[test]
fn lower_directory_removed_while_mounted() {
    require_fuse!();
    let gone = |f: &Fixture| fs::remove_dir_all(f.lower(0).join("d")).unwrap();
    let k = Fixture::new(1);
    removal_setup(&k);
    gone(&k);
    let mut kernel = after_removal(&k.kernel_mount().path);
    let listed = kernel.iter_mut().find(|(op, _)| *op == "list d").unwrap();
    assert_eq!(listed.1, "ok 1");
    listed.1 = "ok 3".into();
    assert_eq!(
        layerfs_after(gone),
        kernel,
        "layerfs and a fresh kernel overlayfs disagree"
    );
}
