//! Backing files of passthrough handles: one per inode, shared by its passthrough
//! handles and closed with the last.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fuser::BackingId;
use parking_lot::Mutex;

use super::FuseFs;
use crate::fileops::Opened;

/// A backing file registered with the kernel, closed when dropped.
#[derive(Debug)]
pub enum Backing {
    /// Registered through a reply of fuser's /dev/fuse loop.
    Fuser(BackingId),
    /// Registered for the io_uring transport: the id and the FUSE device it belongs to.
    Raw { id: u32, dev: Arc<OwnedFd> },
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Backing::Raw { id, dev } = self
            && let Err(e) = crate::sys::uring::backing_close(dev.as_fd(), *id)
        {
            log::debug!("closing backing file {id}: {e}");
        }
    }
}

/// The kernel's backing files of passthrough handles: one per inode, shared by all its
/// passthrough handles and closed with the last of them (the kernel wants one backing
/// file per inode).
#[derive(Default)]
pub struct Backings {
    by_ino: Mutex<HashMap<u64, (Arc<Backing>, usize)>>,
    /// The inode of each passthrough handle.
    by_fh: Mutex<HashMap<u64, u64>>,
}

impl Backings {
    /// The backing id for handle `fh` of inode `ino`: the inode's, else one `register`
    /// makes (outside the locks: it is an ioctl).
    fn attach(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce() -> io::Result<Backing>,
    ) -> io::Result<Arc<Backing>> {
        let existing = self.by_ino.lock().get_mut(&ino).map(|(id, n)| {
            *n += 1;
            Arc::clone(id)
        });
        let id = match existing {
            Some(id) => id,
            None => {
                let new = register()?;
                let mut map = self.by_ino.lock();
                // Another open may have registered one meanwhile: use it, close ours.
                let (id, n) = map.entry(ino).or_insert_with(|| (Arc::new(new), 0));
                *n += 1;
                Arc::clone(id)
            }
        };
        self.by_fh.lock().insert(fh, ino);
        Ok(id)
    }

    /// Handle `fh` was released: its inode's backing id goes with the last handle.
    pub(super) fn release(&self, fh: u64) {
        let Some(ino) = self.by_fh.lock().remove(&fh) else {
            return;
        };
        let mut map = self.by_ino.lock();
        if let Some((_, n)) = map.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ino);
            }
        }
    }
}

impl FuseFs {
    /// The backing id for the handle `opened` of `ino` if it passes data through,
    /// registered through `register` if the inode has none; `None` for a cached handle, or
    /// if the kernel refused it (the handle and later opens then take the cached path).
    pub(super) fn backing(
        &self,
        ino: u64,
        opened: Opened,
        register: impl FnOnce(&std::fs::File) -> io::Result<Backing>,
    ) -> Option<Arc<Backing>> {
        if !opened.passthrough {
            return None;
        }
        let fh = opened.fh;
        let r = self.2.attach(ino, fh, || {
            let h = self.0.open_handle(fh)?;
            let file = h.file();
            register(&file)
        });
        match r {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("the kernel refused a passthrough file: {e}");
                self.0.passthrough_refused(fh);
                None
            }
        }
    }
}
