//! Ownership and mode kept in an xattr instead of the inode, as containers/storage's
//! `force_mask` and fuse-overlayfs's `xattr_permissions=` do for rootless containers: the
//! real file belongs to the user running the engine, and `uid:gid:mode[:type]` in the
//! xattr says what the container sees.
//!
//! A layer uses this when its root carries one of the three override xattrs (checked in
//! fuse-overlayfs's order) or, for the upper, when `xattr_permissions=1|2` asks for it.
//! While any layer uses overrides, their xattrs are layer metadata: hidden from and
//! refused to users like overlay's own.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::layers::LayerId;
use crate::sys::{self, Stat, XattrTarget};
use crate::union::LayerFs;

/// Which xattr a layer keeps its overrides in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideXattr {
    /// `security.fuseoverlayfs.override_stat` (`xattr_permissions=1`).
    Privileged,
    /// `user.containers.override_stat` (`xattr_permissions=2`, containers/storage).
    Containers,
    /// `user.fuseoverlayfs.override_stat` (read only; older fuse-overlayfs wrote it).
    User,
}

const ALL: [OverrideXattr; 3] = [
    OverrideXattr::Privileged,
    OverrideXattr::Containers,
    OverrideXattr::User,
];

impl OverrideXattr {
    pub fn name(self) -> &'static OsStr {
        OsStr::new(match self {
            OverrideXattr::Privileged => "security.fuseoverlayfs.override_stat",
            OverrideXattr::Containers => "user.containers.override_stat",
            OverrideXattr::User => "user.fuseoverlayfs.override_stat",
        })
    }

    /// The kind `xattr_permissions=V` asks for: `Ok(None)` for 0.
    pub fn from_option(v: &str) -> Result<Option<Self>, String> {
        match v {
            "0" => Ok(None),
            "1" => Ok(Some(OverrideXattr::Privileged)),
            "2" => Ok(Some(OverrideXattr::Containers)),
            _ => Err(format!(
                "option 'xattr_permissions' takes 0, 1 or 2, not '{v}'"
            )),
        }
    }

    /// The kind a layer root announces, if any.
    pub fn detect(root: BorrowedFd<'_>) -> io::Result<Option<Self>> {
        let target = XattrTarget::dir(root);
        // One listing of the names rather than a read of each kind.
        let present = match target.list() {
            Ok(p) => p,
            Err(e) if sys::xattr_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        for kind in ALL
            .into_iter()
            .filter(|k| present.iter().any(|p| p == k.name()))
        {
            match target.get(kind.name()) {
                Ok(_) => return Ok(Some(kind)),
                Err(e) if sys::xattr_absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Is `name` one of the override xattrs?
pub fn is_override_xattr(name: &OsStr) -> bool {
    ALL.iter().any(|k| k.name() == name)
}

/// The object type an override may give a regular file (how an unprivileged engine keeps
/// device nodes, fifos and sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Pipe,
    Socket,
    Block(u32, u32),
    Char(u32, u32),
}

impl Kind {
    fn of(st: &Stat) -> Self {
        let (maj, min) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Pipe,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFBLK => Kind::Block(maj, min),
            libc::S_IFCHR => Kind::Char(maj, min),
            _ => Kind::File,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let dev = |rest: &str| -> Option<(u32, u32)> {
            let (a, b) = rest.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        Some(match s {
            "file" => Kind::File,
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            "pipe" => Kind::Pipe,
            "socket" => Kind::Socket,
            _ => {
                if let Some(rest) = s.strip_prefix("block-") {
                    let (a, b) = dev(rest)?;
                    Kind::Block(a, b)
                } else {
                    let (a, b) = dev(s.strip_prefix("char-")?)?;
                    Kind::Char(a, b)
                }
            }
        })
    }

    fn encode(self) -> String {
        match self {
            Kind::File => "file".into(),
            Kind::Dir => "dir".into(),
            Kind::Symlink => "symlink".into(),
            Kind::Pipe => "pipe".into(),
            Kind::Socket => "socket".into(),
            Kind::Block(a, b) => format!("block-{a}-{b}"),
            Kind::Char(a, b) => format!("char-{a}-{b}"),
        }
    }

    /// The `S_IFMT` bits and rdev of a type a regular file can stand in for.
    fn special(self) -> Option<(u32, u64)> {
        Some(match self {
            Kind::Pipe => (libc::S_IFIFO, 0),
            Kind::Socket => (libc::S_IFSOCK, 0),
            Kind::Block(a, b) => (libc::S_IFBLK, libc::makedev(a, b)),
            Kind::Char(a, b) => (libc::S_IFCHR, libc::makedev(a, b)),
            _ => return None,
        })
    }
}

/// One override: `uid:gid:mode[:type]`, mode in octal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatOverride {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (07777).
    pub mode: u32,
    pub kind: Option<Kind>,
}

impl StatOverride {
    pub fn parse(v: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
        let mut parts = s.split(':');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        let kind = match parts.next() {
            None => None,
            Some(k) => Some(Kind::parse(k)?),
        };
        if parts.next().is_some() || mode > 0o7777 {
            return None;
        }
        Some(StatOverride {
            uid,
            gid,
            mode,
            kind,
        })
    }

    /// The override that makes an object show as `st`.
    pub fn of_stat(st: &Stat) -> Self {
        StatOverride {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            kind: Some(Kind::of(st)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{}:{}:0{:o}", self.uid, self.gid, self.mode);
        if let Some(k) = self.kind {
            s.push(':');
            s.push_str(&k.encode());
        }
        s.into_bytes()
    }

    /// `st` as the override shows it. A type other than the real one is taken only for a
    /// regular file standing in for a device, fifo or socket.
    pub fn apply(&self, st: &mut Stat) {
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        let mut fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFREG
            && let Some((f, rdev)) = self.kind.and_then(Kind::special)
        {
            fmt = f;
            st.st_rdev = rdev;
            st.st_size = 0;
        }
        st.st_mode = fmt | self.mode;
    }
}

/// The real mode of an object whose mode lives in an override: the wanted permission
/// bits, widened so the daemon (its real owner) can always use it.
fn real_mode(shown: &Stat) -> u32 {
    let perm = shown.st_mode & 0o777;
    if shown.st_mode & libc::S_IFMT == libc::S_IFDIR {
        perm | 0o700
    } else {
        perm | 0o600
    }
}

impl LayerFs {
    /// Whether any layer keeps overrides (their xattrs are then layer metadata).
    pub(crate) fn overrides_active(&self) -> bool {
        self.layers.any_override()
    }

    /// Applies the override of the object at `target` in `layer` to its real stat `st`.
    /// A malformed override is logged and ignored: the object shows its real stat.
    pub(crate) fn apply_override<'a>(
        &self,
        layer: LayerId,
        target: impl FnOnce() -> io::Result<XattrTarget<'a>>,
        st: &mut Stat,
    ) -> io::Result<()> {
        let Some(kind) = self.layers.get(layer).stat_override else {
            return Ok(());
        };
        let value = match target().and_then(|t| t.get(kind.name())) {
            Ok(v) => v,
            Err(e) if sys::xattr_absent(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        match StatOverride::parse(&value) {
            Some(ov) => ov.apply(st),
            None => log::warn!(
                "ignoring malformed {:?} {:?}",
                kind.name(),
                String::from_utf8_lossy(&value)
            ),
        }
        Ok(())
    }

    /// The stat of `dir/name` in `layer` as the mount shows it (override applied).
    pub(crate) fn stat_at(
        &self,
        layer: LayerId,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<Stat> {
        let mut st = sys::fstatat(dir, name)?;
        self.apply_override(layer, || XattrTarget::at(dir, name), &mut st)?;
        Ok(st)
    }

    /// Whether the upper keeps owner and mode in overrides (then chown/chmod write the
    /// override instead of the inode).
    pub(crate) fn upper_keeps_overrides(&self) -> bool {
        self.upper_override().is_some()
    }

    fn upper_override(&self) -> Option<OverrideXattr> {
        self.layers.upper().and_then(|u| u.stat_override)
    }

    /// Writes the upper override of `dir/name` so it shows as `shown`; `Ok(false)` when
    /// the upper keeps no overrides or the object cannot carry one (user xattrs on
    /// symlinks and devices): the caller then changes the inode itself.
    pub(crate) fn store_override(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        shown: &Stat,
    ) -> io::Result<bool> {
        let Some(kind) = self.upper_override() else {
            return Ok(false);
        };
        let value = StatOverride::of_stat(shown).encode();
        match XattrTarget::at(dir, name)?.set(kind.name(), &value, 0) {
            Ok(()) => Ok(true),
            Err(e) if sys::xattr_absent(&e) => {
                log::debug!("{name:?} cannot keep {:?}: {e}", kind.name());
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the new upper object `dir/name` (just built in the work directory), created
    /// with permission bits `created`, the owner and mode of `shown`: in the upper's override when it keeps them there (the
    /// real mode then only widened so the daemon can use the object), else by chown and
    /// chmod (skipped when the mode is already right).
    pub(crate) fn give_owner_mode(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        shown: &Stat,
        created: u32,
    ) -> io::Result<()> {
        let stored = self.store_override(dir, name, shown)?;
        let owner = self.work()?.creates_as();
        if !stored && (shown.st_uid, shown.st_gid) != owner {
            crate::copyup::chown(dir, name, shown.st_uid, shown.st_gid)?;
        }
        let mode = if stored {
            real_mode(shown)
        } else {
            shown.st_mode & 0o7777
        };
        if shown.st_mode & libc::S_IFMT != libc::S_IFLNK && mode != created {
            sys::chmod_at(dir, name, mode)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A stat with `mode` (the rest from "/": Stat has no safe constructor).
    fn stat(mode: u32) -> Stat {
        let root = std::fs::File::open("/").unwrap();
        let mut st = sys::fstat(root.as_fd()).unwrap();
        st.st_mode = mode;
        st
    }

    #[test]
    fn parse_and_encode() {
        let o = StatOverride::parse(b"0:0:0755").unwrap();
        assert_eq!((o.uid, o.gid, o.mode, o.kind), (0, 0, 0o755, None));
        let o = StatOverride::parse(b"1000:100:4755:file").unwrap();
        assert_eq!(o.kind, Some(Kind::File));
        assert_eq!(o.mode, 0o4755);
        let o = StatOverride::parse(b"0:0:666:char-1-3").unwrap();
        assert_eq!(o.kind, Some(Kind::Char(1, 3)));
        assert_eq!(o.encode(), b"0:0:0666:char-1-3");
        for bad in [
            &b""[..],
            b"0:0",
            b"a:0:755",
            b"0:0:9",
            b"0:0:17777",
            b"0:0:755:disk",
            b"0:0:755:char-1",
            b"0:0:755:file:x",
        ] {
            assert!(StatOverride::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn apply_keeps_real_type_unless_special() {
        let mut st = stat(libc::S_IFDIR | 0o700);
        StatOverride::parse(b"0:0:0755:file")
            .unwrap()
            .apply(&mut st);
        assert_eq!(st.st_mode, libc::S_IFDIR | 0o755);
        let mut st = stat(libc::S_IFREG | 0o600);
        StatOverride::parse(b"5:6:0620:char-4-1")
            .unwrap()
            .apply(&mut st);
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o620);
        assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (4, 1));
        assert_eq!((st.st_uid, st.st_gid), (5, 6));
        let back = StatOverride::of_stat(&st);
        assert_eq!(back.kind, Some(Kind::Char(4, 1)));
    }

    #[test]
    fn names() {
        assert!(is_override_xattr(OsStr::new(
            "user.containers.override_stat"
        )));
        assert!(!is_override_xattr(OsStr::new("user.containers.other")));
        assert_eq!(
            OverrideXattr::from_option("2"),
            Ok(Some(OverrideXattr::Containers))
        );
        assert!(OverrideXattr::from_option("3").is_err());
    }
}
