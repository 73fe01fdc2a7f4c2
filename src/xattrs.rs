//! Extended attributes through the mount: read from the object the mount shows, written to
//! the upper layer after a copy-up. Overlay's and layerfs's own xattrs are hidden from
//! listings and refused (EOPNOTSUPP, as kernel overlayfs answers for them).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::acl;
use crate::fileops::SetAttr;
use crate::union::Caller;

use crate::copyup::CopyData;
use crate::inode::{Ino, Inode};
use crate::statoverride;
use crate::sys::XattrTarget;
use crate::union::{LayerFs, errno};
use crate::whiteout;

impl LayerFs {
    /// Is `name` layer metadata: overlay's and layerfs's own xattrs, and the owner/mode
    /// overrides while a layer uses them?
    pub(crate) fn is_internal_xattr(&self, name: &OsStr) -> bool {
        whiteout::is_internal_xattr(name)
            || (self.overrides_active() && statoverride::is_override_xattr(name))
    }

    /// EOPNOTSUPP when the mount serves no xattrs (`noxattrs=1`) or `name` is internal.
    fn xattr_allowed(&self, name: Option<&OsStr>) -> io::Result<()> {
        if !self.cfg.xattrs || name.is_some_and(|n| self.is_internal_xattr(n)) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    fn shown_target(
        &self,
        node: &Inode,
    ) -> io::Result<(std::sync::Arc<std::os::fd::OwnedFd>, OsString)> {
        let top = node.place().top().ok_or_else(|| errno(libc::ENOENT))?;
        self.object_fd(top, node)
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> io::Result<Vec<u8>> {
        self.xattr_allowed(Some(name))?;
        let node = self.node(ino)?;
        let (dir, n) = self.shown_target(&node)?;
        let value = XattrTarget::at(dir.as_fd(), &n)?.get(name)?;
        Ok(if acl::is_acl_xattr(name) {
            acl::shown(&self.cfg.owners, value)
        } else {
            value
        })
    }

    pub fn listxattr(&self, ino: Ino) -> io::Result<Vec<OsString>> {
        self.xattr_allowed(None)?;
        let node = self.node(ino)?;
        let (dir, n) = self.shown_target(&node)?;
        let mut names = XattrTarget::at(dir.as_fd(), &n)?.list()?;
        names.retain(|x| !self.is_internal_xattr(x));
        Ok(names)
    }

    pub fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> io::Result<()> {
        self.xattr_allowed(Some(name))?;
        self.layers.writable()?;
        let node = self.node(ino)?;
        self.copy_up_for_xattrs(&node)?;
        let (dir, n) = self.object_fd(0, &node)?;
        if !acl::is_acl_xattr(name) {
            return XattrTarget::at(dir.as_fd(), &n)?.set(name, value, flags);
        }
        let value = acl::stored(&self.cfg.owners, value)?;
        XattrTarget::at(dir.as_fd(), &n)?.set(name, &value, flags)?;
        if name == OsStr::new(acl::ACCESS) {
            self.acl_kills_setgid(&node, dir.as_fd(), &n, caller)?;
        }
        Ok(())
    }

    /// After an access ACL is set (which also sets the mode's group bits): the setgid bit
    /// goes unless the caller is in the file's group or has `CAP_FSETID`, as the kernel's
    /// `posix_acl_update_mode` decides. The upper filesystem decided for the daemon, who
    /// may keep it, so this decides for the caller.
    fn acl_kills_setgid(
        &self,
        node: &Inode,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        caller: Caller,
    ) -> io::Result<()> {
        let st = self.stat_at(0, dir, name)?;
        let (uid, gid) = self.cfg.owners.show(st.st_uid, st.st_gid);
        if st.st_mode & libc::S_ISGID == 0 || caller.in_group_or_fsetid(uid, gid) {
            return Ok(());
        }
        let change = SetAttr {
            mode: Some(st.st_mode & 0o7777 & !libc::S_ISGID),
            ..SetAttr::default()
        };
        self.setattr(node.ino, change).map(drop)
    }

    /// The copy-up before an xattr changes: none where the object is in the upper
    /// already, so an indexed file's name is not linked up for it, as on the kernel
    /// (which changes the xattrs of the inode's upper, whichever names it has).
    fn copy_up_for_xattrs(&self, node: &std::sync::Arc<crate::inode::Inode>) -> io::Result<()> {
        if node.in_upper() {
            return Ok(());
        }
        self.copy_up(node, CopyData::Metacopy)
    }

    pub fn removexattr(&self, ino: Ino, name: &OsStr) -> io::Result<()> {
        self.xattr_allowed(Some(name))?;
        self.layers.writable()?;
        let node = self.node(ino)?;
        // Copying up only to find the xattr missing would be wasted work.
        self.getxattr(ino, name)?;
        self.copy_up_for_xattrs(&node)?;
        let (dir, n) = self.object_fd(0, &node)?;
        XattrTarget::at(dir.as_fd(), &n)?.remove(name)
    }
}
