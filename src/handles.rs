//! Open file and directory handles: the fd a file handle reads and writes through, and the
//! listing snapshot a directory handle pages through.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::dirmerge::Listing;
use crate::inode::Inode;
use crate::options::Atime;

/// An open regular file.
/// Whether an open with `flags` may change the file's data.
pub fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Whether a passthrough handle opened with `flags` makes its file's times move unseen
/// (see `Inode::times_move_unseen`): one that may write, of a file that existed (only a
/// create carries O_CREAT). The handle a create opens is left out, so the attributes of a
/// file made and closed stay cached (touch, tar): the times a write through a mapping of
/// that very handle moves are not seen while the kernel keeps the attributes it has.
pub fn moves_times_unseen(flags: i32) -> bool {
    wants_write(flags) && flags & libc::O_CREAT == 0
}

#[derive(Debug)]
pub struct OpenFile {
    pub node: Arc<Inode>,
    file: RwLock<File>,
    /// Whether `file` is the upper layer's object; a lower fd is swapped for the upper one
    /// after a copy-up, so every reader sees the copied-up data as on kernel overlayfs.
    on_upper: AtomicBool,
    /// The open flags the backing fd was opened with.
    pub flags: i32,
    /// Whether a read through this handle has recorded an access (relatime needs it once).
    accessed: AtomicBool,
    /// Whether the kernel passes this handle's data straight to `file` (FUSE passthrough)
    /// instead of sending reads and writes to the daemon.
    passthrough: AtomicBool,
}

impl OpenFile {
    pub fn new(node: Arc<Inode>, file: File, on_upper: bool, flags: i32, through: bool) -> Self {
        OpenFile {
            node,
            file: RwLock::new(file),
            on_upper: AtomicBool::new(on_upper),
            flags,
            accessed: AtomicBool::new(false),
            passthrough: AtomicBool::new(through),
        }
    }

    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Acquire)
    }

    /// The kernel could not be given this handle's file: its data takes the cached path.
    pub fn demote(&self) {
        if self.passthrough.swap(false, Ordering::AcqRel) {
            self.node.demote_io(moves_times_unseen(self.flags));
        }
    }

    /// Whether this read is to record an access under `policy`: every read for
    /// strictatime, the first one for relatime (after it the access is newer than any
    /// change, so relatime would not update again), none for noatime.
    pub fn wants_atime(&self, policy: Atime) -> bool {
        match policy {
            Atime::Never => false,
            Atime::Strict => true,
            Atime::Relative => !self.accessed.swap(true, Ordering::Relaxed),
        }
    }

    pub fn is_stale(&self) -> bool {
        !self.on_upper.load(Ordering::Acquire) && self.node.data_in_upper()
    }

    /// Whether the fd is the upper layer's object.
    pub fn on_upper(&self) -> bool {
        self.on_upper.load(Ordering::Acquire)
    }

    pub fn replace(&self, file: File) {
        *self.file.write() = file;
        self.on_upper.store(true, Ordering::Release);
    }

    pub fn file(&self) -> RwLockReadGuard<'_, File> {
        self.file.read()
    }
}

/// An open directory: the merged listing taken at the first read (and again on rewind), so
/// offsets stay stable while the directory changes.
#[derive(Debug)]
pub struct OpenDir {
    pub node: Arc<Inode>,
    /// The listing read at offset 0, with the directory's names epoch when it was read.
    pub entries: Mutex<Option<(u64, Arc<Listing>)>>,
}

/// Open handles of one kind, by the number handed to the kernel.
#[derive(Debug)]
pub struct HandleTable<T> {
    map: DashMap<u64, Arc<T>>,
    next: AtomicU64,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            map: DashMap::new(),
            next: AtomicU64::new(0),
        }
    }
}

impl<T> HandleTable<T> {
    pub fn insert(&self, h: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.insert(fh, Arc::new(h));
        fh
    }

    /// The handle `fh`, or EBADF.
    pub fn get(&self, fh: u64) -> io::Result<Arc<T>> {
        self.map
            .get(&fh)
            .map(|h| Arc::clone(&h))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Some handle matching `pred` (a scan: for rare paths only).
    pub fn find(&self, pred: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        self.map
            .iter()
            .find(|e| pred(e.value()))
            .map(|e| Arc::clone(e.value()))
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.map.remove(&fh).map(|(_, h)| h)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
