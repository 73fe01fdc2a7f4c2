//! rename(2): first a plan (the kernel's checks, in the kernel's order, ending in an errno
//! or in what to do), then its execution (copy-ups, opaque marks, whiteouts and the rename
//! itself, each step leaving a tree the kernel could show).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::copyup::CopyData;
use crate::inode::{Ino, Inode, Place};
use crate::namespace::{drop_name, is_merged};
use crate::redirect::Redirected;
use crate::sys::{self, Stat};
use crate::union::{LayerFs, Resolved, check_new_name, errno, is_dir};
use crate::whiteout::{self, WhiteoutFormat};

/// An object found under a name: its stat and place.
type Found = (Stat, Place);

/// The two names of a rename: `parent/name` moves to `newparent/newname`.
struct Ends<'a> {
    parent: &'a Arc<Inode>,
    name: &'a OsStr,
    newparent: &'a Arc<Inode>,
    newname: &'a OsStr,
}

impl<'a> Ends<'a> {
    fn parts(&self) -> (&'a Arc<Inode>, &'a OsStr, &'a Arc<Inode>, &'a OsStr) {
        (self.parent, self.name, self.newparent, self.newname)
    }
}

/// What a rename does, once the kernel's checks have passed.
enum RenamePlan {
    /// Source and target are the same name.
    Nothing,
    /// RENAME_EXCHANGE of two objects.
    Exchange { src: Found, dst: Found },
    /// The source moves to the new name, replacing `dst` if there is one. `src_below`:
    /// a lower layer shows something at the old name, which a whiteout must hide.
    Move {
        src: Found,
        dst: Option<Found>,
        src_below: bool,
    },
}

impl LayerFs {
    /// rename(2) with `RENAME_NOREPLACE` / `RENAME_EXCHANGE`. A directory that a lower
    /// layer holds cannot move (EXDEV, as kernel overlayfs without redirect_dir).
    pub fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
            || flags == libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE
        {
            return Err(errno(libc::EINVAL));
        }
        self.layers.writable()?;
        let parent = self.node(parent)?;
        let newparent = self.node(newparent)?;
        // Both directories' names, in inode order (once if they are the same).
        let (first, second) = if parent.ino <= newparent.ino {
            (&parent, &newparent)
        } else {
            (&newparent, &parent)
        };
        let _names = first.names_changing();
        let _names2 = (first.ino != second.ino).then(|| second.names_changing());
        let ends = Ends {
            parent: &parent,
            name,
            newparent: &newparent,
            newname,
        };
        match self.plan_rename(&ends, flags)? {
            RenamePlan::Nothing => Ok(()),
            RenamePlan::Exchange { src, dst } => self.exchange(&ends, src, dst),
            RenamePlan::Move {
                src,
                dst,
                src_below,
            } => self.move_to(&ends, src, dst, src_below),
        }
    }

    /// The kernel's checks, in its order: existence and RENAME_NOREPLACE/EXCHANGE, the
    /// VFS type checks, EXDEV for directories that cannot move, then emptiness of a
    /// replaced directory. The caller holds both directories' names.
    fn plan_rename(&self, ends: &Ends<'_>, flags: u32) -> io::Result<RenamePlan> {
        let (parent, name, newparent, newname) = ends.parts();
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let (sst, splace) = self.existing(parent, name)?;
        let dst = self.found(newparent, newname)?;
        if dst.is_none() {
            check_new_name(newname)?;
        }
        if parent.ino == newparent.ino && name == newname {
            return if dst.is_some() || !exchange {
                Ok(RenamePlan::Nothing)
            } else {
                Err(errno(libc::ENOENT))
            };
        }
        if dst.is_some() && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(errno(libc::EEXIST));
        }
        if exchange && dst.is_none() {
            return Err(errno(libc::ENOENT));
        }
        let src_dir = is_dir(&sst);
        if let Some((dst_st, _)) = &dst
            && !exchange
        {
            match (src_dir, is_dir(dst_st)) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                _ => {}
            }
        }
        let can_move = self.cfg.redirect.writes();
        if src_dir && !splace.lowers.is_empty() && !can_move {
            return Err(errno(libc::EXDEV));
        }
        if let Some((dst_st, dplace)) = &dst {
            if is_dir(dst_st) && exchange && !dplace.lowers.is_empty() && !can_move {
                return Err(errno(libc::EXDEV));
            }
            if is_dir(dst_st) && !exchange && !self.is_empty_dir(newparent, dplace)? {
                return Err(errno(libc::ENOTEMPTY));
            }
        }
        let src = (sst, splace);
        Ok(match dst {
            Some(dst) if exchange => RenamePlan::Exchange { src, dst },
            dst => RenamePlan::Move {
                src_below: self.name_below(parent, name, &src.1)?,
                src,
                dst,
            },
        })
    }

    /// The source's node, copied up with the new parent, and the upper fds of both
    /// directories.
    fn source_copied_up(
        &self,
        ends: &Ends<'_>,
        (st, place): Found,
    ) -> io::Result<(Arc<Inode>, Arc<OwnedFd>, Arc<OwnedFd>)> {
        let snode = self.node_for(&st, place.clone())?;
        self.copy_up(&snode, CopyData::Metacopy)?;
        self.link_up_name(ends.parent, ends.name, &st, &place)?;
        self.copy_up(ends.newparent, CopyData::Full)?;
        let sdir = self.dir_fd(0, ends.parent)?;
        Ok((snode, sdir, self.dir_fd(0, ends.newparent)?))
    }

    /// RENAME_EXCHANGE: both objects copied up, swapped; a directory moving into a merged
    /// directory is made opaque (no lower directory of its new name may merge into it).
    fn exchange(&self, ends: &Ends<'_>, src: Found, (dst_st, dplace): Found) -> io::Result<()> {
        let (parent, name, newparent, newname) = ends.parts();
        let same_parent = parent.ino == newparent.ino;
        let (snode, sdir, ddir) = self.source_copied_up(ends, src)?;
        let dnode = self.node_for(&dst_st, dplace.clone())?;
        self.copy_up(&dnode, CopyData::Metacopy)?;
        self.link_up_name(newparent, newname, &dst_st, &dplace)?;
        let sred = self.before_move(&snode, (parent.ino, &sdir), name, same_parent)?;
        let dred = self.before_move(&dnode, (newparent.ino, &ddir), newname, same_parent)?;
        if !same_parent {
            self.impure_for(sdir.as_fd(), name, ddir.as_fd());
            self.impure_for(ddir.as_fd(), newname, sdir.as_fd());
        }
        swap(&sdir, name, &ddir, newname)?;
        snode.rename(parent.ino, name, newparent.ino, newname);
        dnode.rename(newparent.ino, newname, parent.ino, name);
        // A directory without lowers moving into a merged directory is made opaque (no
        // lower directory of its new name may merge into it).
        if let Some(r) = sred {
            snode.set_redirected(r);
        } else if snode.is_dir() && is_merged(newparent) {
            self.mark_opaque(ddir.as_fd(), newname)?;
        }
        if let Some(r) = dred {
            dnode.set_redirected(r);
        } else if dnode.is_dir() && is_merged(parent) {
            self.mark_opaque(sdir.as_fd(), name)?;
        }
        Ok(())
    }

    /// The source moves to the new name, replacing `dst` if given. Every step leaves a
    /// tree the kernel could show (the old one or the new one), so a crash between steps
    /// loses nothing: the moved directory is made opaque before it moves, an AUFS whiteout
    /// for the old name is made while the object still hides it, and the old name's
    /// overlay whiteout comes with the rename.
    fn move_to(
        &self,
        ends: &Ends<'_>,
        src: Found,
        mut dst: Option<Found>,
        src_below: bool,
    ) -> io::Result<()> {
        let (parent, name, newparent, newname) = ends.parts();
        let src_dir = is_dir(&src.0);
        let (snode, sdir, ddir) = self.source_copied_up(ends, src)?;
        if let Some((dst_st, dplace)) = &dst
            && let Some(linked) = self.index_before_unlink(newparent, newname, dst_st, dplace)?
        {
            dst = Some(linked);
        }
        let victim = match &dst {
            Some((dst_st, dplace)) => self.node(self.ino_of(dst_st, dplace)?).ok(),
            None => None,
        };
        let mut victim_held = match (&victim, &dst) {
            (Some(_), Some((_, dplace))) => self.hold(newparent, newname, dplace),
            _ => None,
        };
        // Wait for a copy-up of the replaced object under way; a later one finds it gone.
        let _copying = victim.as_ref().map(|n| n.copy_lock.lock());
        if victim.as_ref().is_some_and(|n| n.in_upper())
            && dst.as_ref().is_some_and(|(_, p)| !p.upper)
        {
            dst = self.found(newparent, newname)?;
        }
        let same_parent = parent.ino == newparent.ino;
        let redirected = self.before_move(&snode, (parent.ino, &sdir), name, same_parent)?;
        if !same_parent {
            self.impure_for(sdir.as_fd(), name, ddir.as_fd());
        }
        if src_dir && redirected.is_none() && is_merged(newparent) {
            self.mark_opaque(sdir.as_fd(), name)?;
        }
        if src_below && self.cfg.whiteout == WhiteoutFormat::Aufs {
            self.new_whiteout(sdir.as_fd(), name, WhiteoutFormat::Aufs)?;
        }
        let over = match &dst {
            None => match self.resolve(newparent, newname)? {
                Resolved::Missing { upper_whiteout, .. } => upper_whiteout,
                Resolved::Found { .. } => None,
            },
            Some(_) => None,
        };
        let overlay_whiteout = src_below && self.cfg.whiteout == WhiteoutFormat::Overlay;
        // The replaced name of an indexed file: its union count goes down with it.
        let replaced = dst.as_ref().and_then(|(_, p)| p.index.clone());
        let _counting = dst.as_ref().and_then(|(_, p)| self.counting_for(p));
        if src_dir && over == Some(WhiteoutFormat::Overlay) {
            // A directory cannot replace the whiteout: exchange, and the whiteout lands
            // at the old name.
            swap(&sdir, name, &ddir, newname)?;
            if !overlay_whiteout {
                sys::unlinkat(sdir.as_fd(), name, false)?;
            }
        } else {
            let f = if overlay_whiteout {
                libc::RENAME_WHITEOUT
            } else {
                0
            };
            match sys::renameat2(sdir.as_fd(), name, ddir.as_fd(), newname, f) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    // The replaced directory is visibly empty but holds whiteouts: swap in
                    // an empty one (opaque if lowers merge there) first.
                    let merged = dst.as_ref().is_some_and(|d| !d.1.lowers.is_empty());
                    self.clear_dir(ddir.as_fd(), newname, merged)?;
                    sys::renameat2(sdir.as_fd(), name, ddir.as_fd(), newname, f)?;
                }
                r => r?,
            }
        }
        if over == Some(WhiteoutFormat::Aufs) {
            sys::unlinkat(ddir.as_fd(), &whiteout::aufs_name(newname), false)?;
        }
        if let Some(entry) = &replaced {
            self.index_name_gone(entry);
        }
        if let Some((dst_st, dplace)) = &dst {
            self.forget_alias_if_gone(dst_st, dplace);
            if let Some(dnode) = &victim {
                drop_name(
                    self,
                    dnode,
                    (newparent.ino, newname),
                    (dst_st, dplace),
                    &mut victim_held,
                );
            }
        }
        snode.rename(parent.ino, name, newparent.ino, newname);
        if let Some(r) = redirected {
            snode.set_redirected(r);
        }
        Ok(())
    }

    /// For a directory that lower layers hold, or a metacopy stub, about to move from the
    /// upper `dir/name`:
    /// its redirect, written (see [`LayerFs::redirect_before_move`]); `None` for anything
    /// else.
    fn before_move(
        &self,
        node: &Inode,
        (parent, dir): (Ino, &OwnedFd),
        name: &OsStr,
        same_parent: bool,
    ) -> io::Result<Option<Redirected>> {
        let place = node.place();
        if !(node.is_dir() || place.metacopy) || place.lowers.is_empty() {
            return Ok(None);
        }
        // A stub of a lower hard link gets an absolute redirect wherever it moves, as on
        // the kernel: the redirect is the inode's, and its other names may be anywhere.
        let linked = !node.is_dir()
            && place.data_layer().is_some_and(|l| {
                self.parent_fd(l, node)
                    .and_then(|(d, n)| sys::fstatat(d.as_fd(), &n))
                    .is_ok_and(|st| st.st_nlink > 1)
            });
        self.redirect_before_move(node, (parent, dir.as_fd()), name, same_parent && !linked)
            .map(Some)
    }

    /// Replaces the upper directory `dir/name` by an empty one (opaque if `opaque`), in one
    /// exchange; the old one, with whatever whiteouts it held, is removed in the workdir.
    fn clear_dir(&self, dir: BorrowedFd<'_>, name: &OsStr, opaque: bool) -> io::Result<()> {
        let work = self.work()?;
        let tmp = work.temp_name();
        let st = sys::fstatat(dir, name)?;
        let built = sys::mkdirat(work.fd(), &tmp, st.st_mode & 0o7777)
            .and_then(|()| {
                if opaque {
                    self.mark_opaque(work.fd(), &tmp)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| sys::renameat2(work.fd(), &tmp, dir, name, libc::RENAME_EXCHANGE));
        let cleaned = work.remove(&tmp);
        built?;
        cleaned
    }

    fn mark_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        whiteout::set_opaque(dir, name, self.cfg.whiteout, self.cfg.xattr_ns)
    }
}

/// Exchanges `sdir/name` and `ddir/newname` in one step (RENAME_EXCHANGE).
fn swap(sdir: &OwnedFd, name: &OsStr, ddir: &OwnedFd, newname: &OsStr) -> io::Result<()> {
    sys::renameat2(
        sdir.as_fd(),
        name,
        ddir.as_fd(),
        newname,
        libc::RENAME_EXCHANGE,
    )
}
