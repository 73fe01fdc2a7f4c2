//! Backing files of passthrough handles: one fuser `BackingId` per inode, shared by its
//! passthrough handles and closed with the last.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use fuser::BackingId;
use parking_lot::Mutex;

use super::FuseFs;
use crate::fileops::Opened;

/// The kernel's backing files of passthrough handles: one `BackingId` per inode, shared by
/// all its passthrough handles and closed with the last of them (the kernel wants one
/// backing file per inode).
#[derive(Default)]
pub struct Backings {
    by_ino: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
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
        register: impl FnOnce() -> io::Result<BackingId>,
    ) -> io::Result<Arc<BackingId>> {
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
        register: impl FnOnce(&std::fs::File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
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
