//! The on-disk formats of whiteouts and opaque directories, read in both conventions:
//! overlay (a 0/0 character device; `trusted.overlay.opaque=y` or `user.overlay.opaque=y`)
//! and AUFS/OCI (`.wh.NAME` files, `.wh..wh..opq`). No other module matches these names.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use crate::sys::{self, Stat};
use crate::workdir::WorkDir;

/// The prefix of AUFS whiteout files; names with it never show in the merged view.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The AUFS marker file of an opaque directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

const TRUSTED_PREFIX: &[u8] = b"trusted.overlay.";
const USER_PREFIX: &[u8] = b"user.overlay.";
/// layerfs's own xattrs, kept with the overlay ones so kernel overlayfs hides them too.
const OWN_PREFIX: &[u8] = b"trusted.layerfs.";
/// fuse-overlayfs's own xattrs (`origin`, `opaque`, `override_stat`, ...), found in layers
/// it wrote: layer metadata too.
const FUSE_OVERLAYFS_PREFIXES: [&[u8]; 2] = [b"user.fuseoverlayfs.", b"security.fuseoverlayfs."];
/// The opaque marker fuse-overlayfs writes as an unprivileged user, read like overlay's.
const FUSE_OVERLAYFS_OPAQUE: &str = "user.fuseoverlayfs.opaque";

/// How whiteouts and opaque markers are written into the upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// Character device 0/0 and `*.overlay.opaque` xattrs, as kernel overlayfs writes.
    Overlay,
    /// `.wh.NAME` files and `.wh..wh..opq`, as AUFS and OCI image layers use.
    Aufs,
}

/// The xattr namespace of overlay metadata written into the upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNs {
    Trusted,
    User,
}

impl XattrNs {
    fn opaque(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNs::Trusted => "trusted.overlay.opaque",
            XattrNs::User => "user.overlay.opaque",
        })
    }
}

/// Is this the stat of an overlay-format whiteout (a 0/0 character device)?
pub fn is_whiteout(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Is `name` reserved by the AUFS format (hidden from listings, refused on create)?
pub fn is_reserved_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// For an AUFS whiteout file name `.wh.X`, the hidden name `X`; `None` for other names and
/// for AUFS metadata such as `.wh..wh..opq`.
pub fn aufs_target(name: &OsStr) -> Option<&OsStr> {
    let rest = name.as_bytes().strip_prefix(WH_PREFIX)?;
    if rest.starts_with(WH_PREFIX) || rest.is_empty() {
        return None;
    }
    Some(OsStr::from_bytes(rest))
}

/// `.wh.NAME`.
pub fn aufs_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsStr::from_bytes(&v).to_os_string()
}

/// Does `dir` hold an AUFS whiteout for `name`?
pub fn has_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    exists(dir, &aufs_name(name))
}

fn exists(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match sys::fstatat(dir, name) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENAMETOOLONG)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Is the directory `name` inside `parent` opaque, in either format?
/// An empty `name` asks of the directory `parent` itself.
pub fn is_opaque(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let target = if name.is_empty() {
        sys::XattrTarget::dir(parent)
    } else {
        sys::XattrTarget::at(parent, name)?
    };
    let names = [
        XattrNs::Trusted.opaque(),
        XattrNs::User.opaque(),
        OsStr::new(FUSE_OVERLAYFS_OPAQUE),
    ];
    // One listing of the names, then a read of each marker that is there: most
    // directories carry none.
    let present = match target.list() {
        Ok(p) => p,
        Err(e) if ignorable_xattr_error(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    for xattr in names.into_iter().filter(|x| present.iter().any(|p| p == x)) {
        match target.get(xattr) {
            Ok(v) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if ignorable_xattr_error(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if name.is_empty() {
        return exists(parent, OsStr::new(OPAQUE_MARKER));
    }
    let dir = sys::openat(
        parent,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    exists(dir_fd(&dir), OsStr::new(OPAQUE_MARKER))
}

fn dir_fd(fd: &std::os::fd::OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

fn ignorable_xattr_error(e: &io::Error) -> bool {
    sys::xattr_absent(e) || e.raw_os_error() == Some(libc::EACCES)
}

/// Creates a whiteout for `name` in `dir`.
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr, format: WhiteoutFormat) -> io::Result<()> {
    match format {
        WhiteoutFormat::Overlay => sys::mknodat(dir, name, libc::S_IFCHR, 0),
        WhiteoutFormat::Aufs => make_empty_file(dir, &aufs_name(name)),
    }
}

/// Creates a whiteout for `name` in `dir` by building it at `work/tmp` and renaming it in,
/// so it belongs to the daemon as the kernel's do (a setgid `dir` would give one made in
/// place its group). Nothing is left at `tmp`.
pub fn make_whiteout_via(
    work: BorrowedFd<'_>,
    tmp: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    format: WhiteoutFormat,
) -> io::Result<()> {
    let target = match format {
        WhiteoutFormat::Overlay => name.to_os_string(),
        WhiteoutFormat::Aufs => aufs_name(name),
    };
    // An overlay whiteout is the device itself; an AUFS one an empty file named for it.
    let made = match format {
        WhiteoutFormat::Overlay => make_whiteout(work, tmp, format),
        WhiteoutFormat::Aufs => make_empty_file(work, tmp),
    };
    let placed =
        made.and_then(|()| sys::renameat2(work, tmp, dir, &target, libc::RENAME_NOREPLACE));
    if placed.is_err() {
        let _ = sys::unlinkat(work, tmp, false);
    }
    placed
}

/// Overlay whiteouts made as hard links of one whiteout kept in the work directory, as
/// kernel overlayfs makes them: a link costs no new inode (on ext4 here a new inode costs
/// 10 to 40 times a link). A base that has as many links as its filesystem allows
/// (EMLINK) is replaced by a fresh one; where links cannot be made, whiteouts are made one
/// by one. AUFS whiteouts (`.wh.` files) are always made one by one: image tools would
/// export linked ones as hard links.
#[derive(Debug, Default)]
pub struct SharedWhiteouts {
    /// The work-directory name of the current base.
    base: parking_lot::Mutex<Option<OsString>>,
    /// Links of a base failed other than by EMLINK: whiteouts are made one by one.
    unlinkable: std::sync::atomic::AtomicBool,
}

impl SharedWhiteouts {
    /// Places a whiteout for `name` in `dir` (under `.wh.NAME` for AUFS), or EEXIST: a link
    /// of the base in `work` (made there when there is none yet).
    pub fn place(
        &self,
        work: &WorkDir,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        format: WhiteoutFormat,
    ) -> io::Result<()> {
        let one_by_one = || make_whiteout_via(work.fd(), &work.temp_name(), dir, name, format);
        if format == WhiteoutFormat::Aufs {
            return one_by_one();
        }
        self.link(work, dir, name).unwrap_or_else(one_by_one)
    }

    /// A new overlay whiteout at `tmp` in `work` (to replace an object by a rename).
    pub fn at_temp(&self, work: &WorkDir, tmp: &OsStr) -> io::Result<()> {
        self.link(work, work.fd(), tmp)
            .unwrap_or_else(|| make_whiteout(work.fd(), tmp, WhiteoutFormat::Overlay))
    }

    /// Links the base as `dir/target`; `None` where whiteouts cannot be links.
    fn link(&self, work: &WorkDir, dir: BorrowedFd<'_>, target: &OsStr) -> Option<io::Result<()>> {
        use std::sync::atomic::Ordering;
        if self.unlinkable.load(Ordering::Relaxed) {
            return None;
        }
        let mut tried_fresh = false;
        loop {
            let base = {
                let mut base = self.base.lock();
                match &*base {
                    Some(b) => b.clone(),
                    None => {
                        let b = work.whiteout_base_name();
                        if let Err(e) = make_whiteout(work.fd(), &b, WhiteoutFormat::Overlay) {
                            return Some(Err(e));
                        }
                        *base = Some(b.clone());
                        tried_fresh = true;
                        b
                    }
                }
            };
            match sys::linkat(work.fd(), &base, dir, target) {
                // The base is full (or gone): once more with a fresh one; the old one leaves
                // the work directory (its links stay whiteouts).
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMLINK) | Some(libc::ENOENT))
                        && !tried_fresh =>
                {
                    let mut current = self.base.lock();
                    if current.as_ref() == Some(&base) {
                        *current = None;
                        let _ = sys::unlinkat(work.fd(), &base, false);
                    }
                }
                // Not a link's failure but the directory's: said as it is.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EEXIST)
                            | Some(libc::ENOENT)
                            | Some(libc::EMLINK)
                            | Some(libc::ENOSPC)
                            | Some(libc::EDQUOT)
                            | Some(libc::EROFS)
                            | Some(libc::EIO)
                    ) =>
                {
                    return Some(Err(e));
                }
                Err(e) => {
                    log::info!("whiteouts cannot be links of one here ({e}): made one by one");
                    self.unlinkable.store(true, Ordering::Relaxed);
                    return None;
                }
                Ok(()) => return Some(Ok(())),
            }
        }
    }
}

fn make_empty_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    sys::openat(
        dir,
        name,
        libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_TRUNC,
        0o644,
    )
    .map(drop)
}

/// Marks the directory `name` inside `parent` opaque.
pub fn set_opaque(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    format: WhiteoutFormat,
    ns: XattrNs,
) -> io::Result<()> {
    match format {
        WhiteoutFormat::Overlay => sys::XattrTarget::at(parent, name)?.set(ns.opaque(), b"y", 0),
        WhiteoutFormat::Aufs => {
            let dir = sys::openat(
                parent,
                name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            make_empty_file(dir_fd(&dir), OsStr::new(OPAQUE_MARKER))
        }
    }
}

/// Is this xattr name overlay or layerfs metadata, hidden from and refused to users?
pub fn is_internal_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    [TRUSTED_PREFIX, USER_PREFIX, OWN_PREFIX]
        .iter()
        .chain(&FUSE_OVERLAYFS_PREFIXES)
        .any(|p| b.starts_with(p))
}

/// The kind of an entry as directory merging needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRole {
    /// A whiteout hiding `name` in lower layers.
    Whiteout,
    /// Layer metadata that never shows (`.wh..wh..opq` and other `.wh..wh.` names).
    Meta,
    /// A real entry.
    Visible,
}

/// Classifies a directory entry: `(role, name it concerns)`. `chr_whiteout` tells whether
/// the entry is a 0/0 character device (the caller stats only character devices).
pub fn classify(name: &OsStr, chr_whiteout: bool) -> (EntryRole, &OsStr) {
    if chr_whiteout {
        return (EntryRole::Whiteout, name);
    }
    if is_reserved_name(name) {
        return match aufs_target(name) {
            Some(t) => (EntryRole::Whiteout, t),
            None => (EntryRole::Meta, name),
        };
    }
    (EntryRole::Visible, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    /// Whiteouts are links of one base; a base with as many links as the filesystem
    /// allows is replaced by a fresh one, and the whiteouts made before stay whiteouts.
    #[test]
    fn shared_whiteouts_are_links_of_one_base_until_it_is_full() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(t.path().join("wd")).unwrap();
        let work = WorkDir::open(&t.path().join("wd")).unwrap();
        let area = t.path().join("wd/work");
        let u = std::fs::File::open(&upper).unwrap();
        let shared = SharedWhiteouts::default();
        let place =
            |name: &str| shared.place(&work, u.as_fd(), OsStr::new(name), WhiteoutFormat::Overlay);
        place("a").unwrap();
        place("b").unwrap();
        let meta = |n: &str| std::fs::symlink_metadata(upper.join(n)).unwrap();
        let (a, b) = (meta("a"), meta("b"));
        assert!(is_whiteout(
            &sys::fstatat(u.as_fd(), OsStr::new("a")).unwrap()
        ));
        assert_eq!(
            (a.ino(), a.nlink()),
            (b.ino(), 3),
            "a, b and the base are one inode"
        );
        assert_eq!(place("a").unwrap_err().raw_os_error(), Some(libc::EEXIST));
        let bases = || -> Vec<_> {
            std::fs::read_dir(&area)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        };
        let base = bases().pop().unwrap();
        // Fill the base up (ext4 allows 65,000 links; a filesystem without a limit, none).
        let mut full = false;
        for i in 0..70_000 {
            match std::fs::hard_link(&base, t.path().join(format!("x{i}"))) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        if !full {
            eprintln!("no link limit on this filesystem: the full base is not exercised");
            return;
        }
        place("c").unwrap();
        assert_ne!(meta("c").ino(), a.ino(), "a fresh base");
        assert!(is_whiteout(
            &sys::fstatat(u.as_fd(), OsStr::new("c")).unwrap()
        ));
        assert!(is_whiteout(
            &sys::fstatat(u.as_fd(), OsStr::new("a")).unwrap()
        ));
        assert!(!base.exists(), "the full base left the work directory");
        assert_eq!(bases().len(), 1);
    }

    #[test]
    fn aufs_names() {
        assert_eq!(aufs_target(OsStr::new(".wh.foo")), Some(OsStr::new("foo")));
        assert_eq!(aufs_target(OsStr::new(".wh..wh..opq")), None);
        assert_eq!(aufs_target(OsStr::new(".wh.")), None);
        assert_eq!(aufs_target(OsStr::new("foo")), None);
        assert_eq!(aufs_name(OsStr::new("a b")), OsString::from(".wh.a b"));
    }

    #[test]
    fn classify_entries() {
        assert_eq!(
            classify(OsStr::new("x"), true),
            (EntryRole::Whiteout, OsStr::new("x"))
        );
        assert_eq!(
            classify(OsStr::new(".wh.x"), false),
            (EntryRole::Whiteout, OsStr::new("x"))
        );
        assert_eq!(
            classify(OsStr::new(OPAQUE_MARKER), false).0,
            EntryRole::Meta
        );
        assert_eq!(classify(OsStr::new(".whx"), false).0, EntryRole::Visible);
    }

    #[test]
    fn internal_xattrs() {
        assert!(is_internal_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(is_internal_xattr(OsStr::new("user.overlay.origin")));
        assert!(is_internal_xattr(OsStr::new("trusted.layerfs.x")));
        assert!(is_internal_xattr(OsStr::new("user.fuseoverlayfs.origin")));
        assert!(is_internal_xattr(OsStr::new(
            "security.fuseoverlayfs.override_stat"
        )));
        assert!(!is_internal_xattr(OsStr::new("user.fuseoverlayfsx")));
        assert!(!is_internal_xattr(OsStr::new("user.mime")));
        assert!(!is_internal_xattr(OsStr::new("trusted.overlayx")));
    }

    #[test]
    fn whiteout_stat_and_dirs() {
        let t = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(t.path()).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&dir);
        make_whiteout(fd, OsStr::new("gone"), WhiteoutFormat::Overlay).unwrap();
        assert!(is_whiteout(&sys::fstatat(fd, OsStr::new("gone")).unwrap()));
        make_whiteout(fd, OsStr::new("gone2"), WhiteoutFormat::Aufs).unwrap();
        assert!(has_aufs_whiteout(fd, OsStr::new("gone2")).unwrap());
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::create_dir(t.path().join("e")).unwrap();
        assert!(!is_opaque(fd, OsStr::new("d")).unwrap());
        set_opaque(
            fd,
            OsStr::new("d"),
            WhiteoutFormat::Overlay,
            XattrNs::Trusted,
        )
        .unwrap();
        set_opaque(fd, OsStr::new("e"), WhiteoutFormat::Aufs, XattrNs::Trusted).unwrap();
        assert!(is_opaque(fd, OsStr::new("d")).unwrap());
        assert!(is_opaque(fd, OsStr::new("e")).unwrap());
        std::fs::create_dir(t.path().join("f")).unwrap();
        xattr::set(t.path().join("f"), FUSE_OVERLAYFS_OPAQUE, b"y").unwrap();
        assert!(is_opaque(fd, OsStr::new("f")).unwrap());
    }
}
