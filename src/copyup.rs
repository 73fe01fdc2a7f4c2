//! Copy-up: the only code that writes lower content into the upper layer.
//!
//! A copy-up builds the object in the work directory (content with holes preserved, then
//! xattrs, owner, mode and times) and renames it into place, so the upper never holds a
//! partial object. Parents are copied up first, and the upper parent's timestamps are
//! restored afterwards, as kernel overlayfs does. The copy records its origin and its
//! parent is marked impure, in the kernel's format (`origin`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::inode::{Ino, Inode};
use crate::metacopy;
use crate::sys::{self, SetTime, Stat};
use crate::union::{LayerFs, Resolved, errno, is_dir};

/// What a copy-up must bring up of a regular file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyData {
    /// All of it (an open for writing, a truncate to a non-zero size).
    Full,
    /// None: the file is about to be truncated to zero.
    MetadataOnly,
    /// None for now, under `metacopy=on`, where the data may stay below (a change of
    /// metadata only); else all of it.
    Metacopy,
}

impl LayerFs {
    /// Makes sure `node` (and its parents) exist in the upper layer. The ancestors that are
    /// not up yet are copied up first, the topmost first, in a loop: a tree of any depth
    /// is copied up on a bounded stack.
    pub(crate) fn copy_up(&self, node: &Arc<Inode>, data: CopyData) -> io::Result<()> {
        self.layers.writable()?;
        let mut missing = Vec::new();
        let mut cur = Arc::clone(node);
        while !cur.in_upper() {
            let parent = self.node(cur.place().parent)?;
            if !parent.in_upper() {
                missing.push(Arc::clone(&parent));
            }
            cur = parent;
        }
        while let Some(dir) = missing.pop() {
            self.copy_up_one(&dir, CopyData::Full)?;
        }
        self.copy_up_one(node, data)
    }

    /// Copies `node` up, its parent being up already (or brings a stub's data up).
    fn copy_up_one(&self, node: &Arc<Inode>, data: CopyData) -> io::Result<()> {
        let upper = self.layers.writable()?;
        if node.in_upper() {
            // An indexed file changed through a name that is not linked up yet: linked up
            // now, as the kernel does (the name is the one the kernel last looked up).
            if self.index().is_some() {
                let place = node.place();
                if place.index.is_some() && !place.upper && !place.unlinked {
                    let parent = self.node(place.parent)?;
                    self.link_from_index(&parent, &place.name, &place)?;
                    node.linked_up();
                }
            }
            return match data {
                CopyData::Metacopy => Ok(()),
                _ => self.fill_stub(node, data),
            };
        }
        let _guard = node.copy_lock.lock();
        if node.in_upper() {
            drop(_guard);
            return self.copy_up_one(node, data);
        }
        let place = node.place();
        if place.unlinked {
            // Removed while this copy-up waited: nothing is left to copy.
            return Err(errno(libc::ENOENT));
        }
        let lower = *place.lowers.first().ok_or_else(|| errno(libc::ENOENT))?;
        let parent = self.node(place.parent)?;
        let (src_dir, src_name) = self.parent_fd(lower, node)?;
        // A lower metacopy stub's data is in the layer of its data (a data-only one, say).
        let data_at = match place.data_layer() {
            Some(d) if place.metacopy => Some(self.parent_fd(d, node)?),
            None => return Err(errno(libc::ENOENT)),
            _ => None,
        };
        let (data_dir, data_name) = match &data_at {
            Some((d, n)) => (d, n),
            None => (&src_dir, &src_name),
        };
        let src = Source {
            layer: lower,
            dir: src_dir.as_fd(),
            name: &src_name,
            data_dir: data_dir.as_fd(),
            data_name,
            real: sys::fstatat(src_dir.as_fd(), &src_name)?,
        };
        // What the mount shows: the same stat, with the layer's owner/mode override if any.
        let mut shown = src.real;
        self.apply_override(
            lower,
            || sys::XattrTarget::at(src.dir, src.name),
            &mut shown,
        )?;
        let st = src.real;
        let stub = data == CopyData::Metacopy
            && self.cfg.metacopy
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && shown.st_mode & libc::S_IFMT == libc::S_IFREG;
        let dst_dir = self.dir_fd(upper.id, &parent)?;
        let parent_st = sys::fstat(dst_dir.as_fd())?;
        let work = self.work()?;
        let tmp = work.temp_name();
        // The copy keeps the inode number the mount showed; the alias is in place before
        // the copy can be looked up, so the kernel never sees it under another number.
        let mut alias = None;
        self.mark_impure(dst_dir.as_fd());
        // A lower hard link under index=on is built as its index entry, then linked up.
        let entry = if self.indexes(&st) {
            self.origin_of(lower, src.dir, src.name)
                .map(|o| crate::index::entry_name(&o))
        } else {
            None
        };
        let built = self
            .build_copy(&src, &shown, work.fd(), &tmp, data, stub)
            .and_then(|()| {
                let new = sys::fstatat(work.fd(), &tmp)?;
                self.numbers.keep(new.st_ino, node.ino);
                alias = Some(new.st_ino);
                match &entry {
                    Some(entry) => self.install_indexed(
                        (work.fd(), &tmp),
                        entry,
                        (dst_dir.as_fd(), &place.name),
                        (st.st_nlink, node.ino),
                    ),
                    None => sys::renameat2(
                        work.fd(),
                        &tmp,
                        dst_dir.as_fd(),
                        &place.name,
                        libc::RENAME_NOREPLACE,
                    ),
                }
            });
        if let Err(e) = built {
            if let Some(a) = alias {
                self.numbers.release(a);
            }
            if let Err(c) = work.remove(&tmp) {
                log::warn!("copy-up cleanup of {tmp:?} failed: {c}");
            }
            log::debug!("copy-up of {:?} failed: {e}", place.name);
            return Err(e);
        }
        if stub {
            node.set_upper_metacopy();
        } else {
            node.set_upper();
        }
        // The parent's upper holds one more name: a listing taken before is not current.
        parent.names_moved_on();
        restore_times(dst_dir.as_fd(), OsStr::new(""), &parent_st)?;
        if node.is_dir() {
            // Merged now: it shows one link, as on the kernel, not the lower's count the
            // kernel may have cached.
            self.attributes_changed(node.ino);
        }
        if let Some(entry) = entry {
            // Its other names find the entry by their origin as they are looked up.
            node.set_index(entry);
        } else if !node.is_dir() && st.st_nlink > 1 {
            // All names of a lower hard link are one inode: the other names follow the copy.
            node.pin();
            for (p, n) in node.place().other_names {
                if let Err(e) = self.link_lower_name(node, p, &n) {
                    log::debug!("linking {n:?} to its copied-up hard link: {e}");
                }
            }
        }
        Ok(())
    }

    /// Brings the data of the metacopy stub `node` up into it (`Full`), or only makes it
    /// an ordinary file about to be truncated to zero (`MetadataOnly`); nothing for a file
    /// whose data is up already. The data is written and synced before the stub loses its
    /// mark, so a crash leaves the stub reading its lower data, as on the kernel.
    fn fill_stub(&self, node: &Arc<Inode>, data: CopyData) -> io::Result<()> {
        if node.data_in_upper() {
            return Ok(());
        }
        let _guard = node.copy_lock.lock();
        let place = node.place();
        if !place.metacopy {
            return Ok(());
        }
        let lower = place.data_layer().ok_or_else(|| errno(libc::EIO))?;
        let (dir, name) = self.object_fd(0, node)?;
        let to = File::from(sys::openat(
            dir.as_fd(),
            &name,
            libc::O_WRONLY | libc::O_NOFOLLOW,
            0,
        )?);
        if data == CopyData::MetadataOnly {
            to.set_len(0)?;
        } else {
            let (ldir, lname) = self.parent_fd(lower, node)?;
            let from = File::from(sys::openat_noatime(
                ldir.as_fd(),
                &lname,
                libc::O_RDONLY | libc::O_NOFOLLOW,
            )?);
            let size = sys::fstat(from.as_fd())?.st_size as u64;
            copy_data(&from, &to, size)?;
            if self.cfg.fsync && size > 0 {
                to.sync_all()?;
            }
        }
        metacopy::unmark(dir.as_fd(), &name, self.cfg.xattr_ns)?;
        node.set_data_up();
        Ok(())
    }

    /// Puts the copy `work/tmp` of a lower hard link (with `nlink` links, shown as
    /// `ino`) in the index as `entry`, then links it up as `dir/name`. The union count is
    /// recorded before the entry appears. An entry already there (made by an earlier
    /// mount, say) is the file: the copy is dropped for it.
    fn install_indexed(
        &self,
        (work, tmp): (BorrowedFd<'_>, &OsStr),
        entry: &OsStr,
        (dir, name): (BorrowedFd<'_>, &OsStr),
        (nlink, ino): (u64, Ino),
    ) -> io::Result<()> {
        let index = self.index().ok_or_else(|| errno(libc::EINVAL))?;
        self.set_union_nlink(work, tmp, nlink, 1, None)?;
        match sys::renameat2(work, tmp, index.fd(), entry, libc::RENAME_NOREPLACE) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                sys::unlinkat(work, tmp, false)?;
                self.numbers
                    .keep(sys::fstatat(index.fd(), entry)?.st_ino, ino);
            }
            r => r?,
        }
        self.link_up((index.fd(), entry), (dir, name), nlink)
    }

    /// Replaces the lower name `parent/name` of the copied-up hard link `node` by an upper
    /// hard link to the copy, so that the names the mount met stay one file (without
    /// index=on, within this mount only).
    pub(crate) fn link_lower_name(
        &self,
        node: &Arc<Inode>,
        parent: Ino,
        name: &OsStr,
    ) -> io::Result<()> {
        let parent = self.node(parent)?;
        match self.resolve(&parent, name)? {
            Resolved::Found { st, place }
                if !place.upper && self.ino_for(place.lowers[0], st.st_ino) == node.ino => {}
            _ => return Ok(()),
        }
        self.copy_up(&parent, CopyData::Full)?;
        let upper = self.layers.writable()?;
        let dir = self.dir_fd(upper.id, &parent)?;
        let (src_dir, src_name) = self.parent_fd(0, node)?;
        sys::linkat(src_dir.as_fd(), &src_name, dir.as_fd(), name)
    }
}

/// chown; a daemon without root keeps its own ownership where it may not give it away.
pub(crate) fn chown(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    match sys::fchownat(dir, name, uid, gid) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && sys::geteuid() != 0 => {
            log::debug!("not root: {name:?} keeps the daemon's ownership");
            Ok(())
        }
        r => r,
    }
}

fn restore_times(dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> io::Result<()> {
    sys::utimensat(
        dir,
        name,
        SetTime::At(st.st_atime, st.st_atime_nsec),
        SetTime::At(st.st_mtime, st.st_mtime_nsec),
    )
}

/// The lower object a copy-up copies: its layer, directory, name and real stat, and where
/// its data is (the object itself, or a lower stub's data).
struct Source<'a> {
    layer: crate::layers::LayerId,
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    data_dir: BorrowedFd<'a>,
    data_name: &'a OsStr,
    real: Stat,
}

impl LayerFs {
    /// Builds a copy of `src` at `work/tmp` that shows as `shown` (the source as the
    /// mount shows it: owner/mode overrides applied).
    fn build_copy(
        &self,
        src: &Source<'_>,
        shown: &Stat,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        data: CopyData,
        stub: bool,
    ) -> io::Result<()> {
        // The permission bits the copy is created with (then set from `shown`).
        let created = if is_dir(shown) { 0o700 } else { 0o600 };
        let real_fmt = src.real.st_mode & libc::S_IFMT;
        let shown_fmt = shown.st_mode & libc::S_IFMT;
        // A regular file standing in for a device becomes the device in an upper that
        // keeps no overrides.
        let fmt = if self.upper_keeps_overrides() {
            real_fmt
        } else {
            shown_fmt
        };
        match fmt {
            libc::S_IFREG => {
                let to = File::from(sys::openat(
                    work,
                    tmp,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                    0o600,
                )?);
                let size = src.real.st_size as u64;
                if stub {
                    // A metacopy stub: the lower's size, no data.
                    if size > 0 {
                        to.set_len(size)?;
                    }
                    metacopy::mark(work, tmp, self.cfg.xattr_ns)?;
                } else if data != CopyData::MetadataOnly {
                    let from = File::from(sys::openat_noatime(
                        src.data_dir,
                        src.data_name,
                        libc::O_RDONLY | libc::O_NOFOLLOW,
                    )?);
                    copy_data(&from, &to, size)?;
                    // As the kernel does: the data is on disk before the copy takes the
                    // original's place (not for volatile/fsync=0; an empty file has none).
                    if self.cfg.fsync && size > 0 {
                        to.sync_all()?;
                    }
                }
            }
            libc::S_IFDIR => sys::mkdirat(work, tmp, 0o700)?,
            libc::S_IFLNK => sys::symlinkat(&sys::readlinkat(src.dir, src.name)?, work, tmp)?,
            _ => sys::mknodat(work, tmp, fmt | 0o600, shown.st_rdev)?,
        }
        self.copy_xattrs(
            &sys::XattrTarget::at(src.dir, src.name)?,
            &sys::XattrTarget::at(work, tmp)?,
        )?;
        // As the kernel: a directory or a file with one link records where it came from
        // (a copy of one name of a lower hard link does not stand for the lower inode).
        if (fmt == libc::S_IFDIR || src.real.st_nlink == 1 || self.indexes(&src.real))
            && let Some(origin) = self.origin_of(src.layer, src.dir, src.name)
        {
            self.set_origin(work, tmp, &origin)?;
        }
        self.give_owner_mode(work, tmp, shown, created)?;
        restore_times(work, tmp, shown)
    }

    /// Copies every xattr but layer metadata; security xattrs the upper refuses are
    /// skipped.
    fn copy_xattrs(&self, src: &sys::XattrTarget, dst: &sys::XattrTarget) -> io::Result<()> {
        let names = match src.list() {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e),
        };
        for n in names {
            if self.is_internal_xattr(&n) {
                continue;
            }
            let value = match src.get(&n) {
                Ok(v) => v,
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = dst.set(&n, &value, 0) {
                let skippable =
                    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM))
                        && n.as_encoded_bytes().starts_with(b"security.");
                if !skippable {
                    return Err(e);
                }
                log::warn!("copy-up: skipping xattr {n:?}: {e}");
            }
        }
        Ok(())
    }
}

/// Copies `size` bytes of `src` into `dst`, leaving holes where `src` has them: a reflink
/// (FICLONE) where the filesystem can share the data, else `copy_file_range` range by
/// range, else read and write.
pub(crate) fn copy_data(src: &File, dst: &File, size: u64) -> io::Result<()> {
    match sys::ficlone(dst.as_fd(), src.as_fd()) {
        Ok(()) => return Ok(()),
        // EPERM: a file the filesystem will not share (swap, immutable, ...).
        Err(e) if cannot_here(&e) || e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(e),
    }
    let mut off = 0;
    while off < size {
        let start = match sys::seek_data_or_hole(src.as_fd(), off, false) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => off,
            Err(e) => return Err(e),
        };
        let end = match sys::seek_data_or_hole(src.as_fd(), start, true) {
            Ok(Some(e)) => e.min(size),
            Ok(None) => size,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => size,
            Err(e) => return Err(e),
        };
        copy_range(src, dst, start, end - start)?;
        off = end;
    }
    dst.set_len(size)
}

fn copy_range(src: &File, dst: &File, mut off: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let chunk = len.min(1 << 30) as usize;
        match sys::copy_file_range(src.as_fd(), off, dst.as_fd(), off, chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                off += n as u64;
                len -= n as u64;
            }
            Err(e) if cannot_here(&e) => return copy_range_rw(src, dst, off, len),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a way of copying is not available between these files (another filesystem, a
/// filesystem without it, an old kernel): the next way is tried.
fn cannot_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::ENOTTY)
    )
}

fn copy_range_rw(src: &File, dst: &File, mut off: u64, mut len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let want = (len as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn copy_keeps_holes_and_content() {
        let t = tempfile::tempdir().unwrap();
        let mut src = File::create(t.path().join("s")).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(SeekFrom::Start(8 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        let size = (8 << 20) + 4;
        let src = File::open(t.path().join("s")).unwrap();
        let dst = File::create(t.path().join("d")).unwrap();
        copy_data(&src, &dst, size).unwrap();
        let got = std::fs::read(t.path().join("d")).unwrap();
        assert_eq!(got.len() as u64, size);
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[got.len() - 4..], b"tail");
        let st = sys::fstat(dst.as_fd()).unwrap();
        assert!((st.st_blocks as u64) * 512 < 1 << 20, "hole was filled");
    }
}
