//! The work directory (`WORKDIR/work`, as kernel overlayfs lays it out): where copy-ups and
//! new objects are built before an atomic rename puts them into the upper layer, so a crash
//! never leaves a partial object in the upper. Leftovers are removed at mount.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::acl;
use crate::index::Index;
use crate::sys;

/// Name of the temporary area inside the work directory.
pub const WORK_SUBDIR: &str = "work";

/// How the names of shared whiteout bases in the work area begin.
pub const WHITEOUT_BASE_PREFIX: &str = "#lfs-whiteout.";

#[derive(Debug)]
pub struct WorkDir {
    /// The workdir itself (what `index/` is made in).
    base: OwnedFd,
    fd: OwnedFd,
    /// The inodes index, under index=on.
    index: Option<Index>,
    counter: AtomicU64,
    /// The daemon's process id when the directory was opened (part of temp names).
    pid: u32,
    /// Who owns what the daemon creates here: its effective ids, or the directory's group
    /// if the directory is setgid.
    creates_as: (u32, u32),
}

impl WorkDir {
    /// Opens (creating if needed) `workdir/work` and removes what a previous mount left there.
    pub fn open(workdir: &Path) -> io::Result<Self> {
        let base = sys::openat2(
            std::fs::File::open("/")?.as_fd(),
            workdir,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            0,
        )?;
        match sys::mkdirat(base.as_fd(), OsStr::new(WORK_SUBDIR), 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let fd = sys::openat(
            base.as_fd(),
            OsStr::new(WORK_SUBDIR),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        // Objects are built here and then moved: they must not inherit a default ACL the
        // work directory got from its parent (kernel overlayfs removes them too).
        let target = sys::XattrTarget::fd(fd.as_fd())?;
        for name in [acl::DEFAULT, acl::ACCESS] {
            match target.remove(OsStr::new(name)) {
                Err(e)
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
                    ) =>
                {
                    return Err(e);
                }
                _ => {}
            }
        }
        let st = sys::fstat(fd.as_fd())?;
        let gid = if st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            sys::getegid()
        };
        let work = WorkDir {
            base,
            fd,
            index: None,
            counter: AtomicU64::new(0),
            pid: std::process::id(),
            creates_as: (sys::geteuid(), gid),
        };
        work.clean()?;
        Ok(work)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The workdir itself, which holds the work area and the index.
    pub fn base(&self) -> BorrowedFd<'_> {
        self.base.as_fd()
    }

    /// The inodes index, under index=on.
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// Serves `index` as the mount's inodes index.
    pub fn set_index(&mut self, index: Index) {
        self.index = Some(index);
    }

    /// A fresh name for a temporary object.
    pub fn temp_name(&self) -> OsString {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#lfs{:x}.{n:x}", self.pid))
    }

    /// A fresh name for the whiteout that overlay whiteouts are linked from (kept for the
    /// mount's life, as the kernel keeps its own; see `whiteout::SharedWhiteouts`).
    pub fn whiteout_base_name(&self) -> OsString {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("{WHITEOUT_BASE_PREFIX}{:x}.{n:x}", self.pid))
    }

    /// The owner (uid, gid) of an object the daemon has just created here.
    pub fn creates_as(&self) -> (u32, u32) {
        self.creates_as
    }

    /// Removes the temporary object `name` (a whole tree if it is a directory).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        remove_tree(self.fd(), name)
    }

    /// What the upper's filesystem lets this process do: (create 0/0 character-device
    /// whiteouts, set `trusted.*` xattrs). Without them layerfs writes AUFS whiteouts and
    /// `user.overlay.*` xattrs, as kernel overlayfs does with `userxattr`.
    pub fn probe(&self) -> io::Result<(bool, bool)> {
        let denied = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EOPNOTSUPP)
            )
        };
        let tmp = self.temp_name();
        let mknod = match sys::mknodat(self.fd(), &tmp, libc::S_IFCHR, 0) {
            Ok(()) => true,
            Err(e) if denied(&e) => false,
            Err(e) => return Err(e),
        };
        if !mknod {
            sys::mkdirat(self.fd(), &tmp, 0o700)?;
        }
        let trusted = match sys::XattrTarget::at(self.fd(), &tmp)?.set(
            OsStr::new("trusted.overlay.layerfs-probe"),
            b"",
            0,
        ) {
            Ok(()) => true,
            Err(e) if denied(&e) => false,
            Err(e) => {
                self.remove(&tmp)?;
                return Err(e);
            }
        };
        self.remove(&tmp)?;
        Ok((mknod, trusted))
    }

    /// Removes everything in the work area. Entries named `incompat` (the kernel's
    /// volatile marker) are kept.
    pub fn clean(&self) -> io::Result<()> {
        for e in sys::read_dir(self.fd())? {
            if e.name == "incompat" {
                continue;
            }
            remove_tree(self.fd(), &e.name)?;
        }
        Ok(())
    }
}

/// Removes `name` inside `dir`, a whole tree if it is a directory; never follows symlinks.
/// The walk is a loop holding one directory open and the entries left at each level, so a
/// tree of any depth is removed on a bounded stack and with two fds.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match sys::fstatat(dir, name) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return sys::unlinkat(dir, name, false);
    }
    let open_dir = |at: BorrowedFd<'_>, name: &OsStr| {
        sys::openat(
            at,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
    };
    // The directories entered below `name`, each with the entries still to remove in it.
    let mut levels: Vec<(OsString, Vec<sys::RawDirent>)> = Vec::new();
    let mut cur = open_dir(dir, name)?;
    let mut left = sys::read_dir(cur.as_fd())?;
    loop {
        if let Some(e) = left.pop() {
            match sys::unlinkat(cur.as_fd(), &e.name, false) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) if err.raw_os_error() == Some(libc::EISDIR) => {
                    let sub = open_dir(cur.as_fd(), &e.name)?;
                    let entries = sys::read_dir(sub.as_fd())?;
                    levels.push((e.name, std::mem::replace(&mut left, entries)));
                    cur = sub;
                }
                Err(err) => return Err(err),
            }
            continue;
        }
        // `cur` is empty: remove it from its parent and go on there.
        let Some((sub_name, rest)) = levels.pop() else {
            break;
        };
        let up = open_dir(cur.as_fd(), OsStr::new(".."))?;
        sys::unlinkat(up.as_fd(), &sub_name, true)?;
        cur = up;
        left = rest;
    }
    sys::unlinkat(dir, name, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_takes_a_tree_deeper_than_any_stack() {
        let t = tempfile::tempdir().unwrap();
        let root = OwnedFd::from(std::fs::File::open(t.path()).unwrap());
        // 10,000 levels, with a file and a second subdirectory every 1,000 (at the top too).
        let mut dir = root.try_clone().unwrap();
        for i in 0..10_000 {
            sys::mkdirat(dir.as_fd(), OsStr::new("d"), 0o755).unwrap();
            if i % 1000 == 0 {
                sys::mkdirat(dir.as_fd(), OsStr::new("e"), 0o755).unwrap();
                let f = sys::openat(
                    dir.as_fd(),
                    OsStr::new("f"),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                );
                drop(f.unwrap());
            }
            dir = sys::openat(
                dir.as_fd(),
                OsStr::new("d"),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .unwrap();
        }
        drop(dir);
        remove_tree(root.as_fd(), OsStr::new("d")).unwrap();
        let mut left: Vec<_> = sys::read_dir(root.as_fd()).unwrap();
        left.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            left.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            ["e", "f"]
        );
    }
}
