//! Directory redirects (`redirect_dir=`), in kernel overlayfs's on-disk format: an upper
//! directory that a lower layer holds under another name carries `trusted.overlay.redirect`
//! (`user.overlay.redirect` where trusted xattrs are not allowed). A relative value is the
//! name the lower layers hold it by in the same parent; an absolute one (`/a/b`) is its
//! path from every lower layer's root. Lookups below follow it; a rename of such a
//! directory writes it instead of failing with EXDEV.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::inode::{Ino, Inode, LowerAt, ROOT};
use crate::layers::LayerId;
use crate::sys::XattrTarget;
use crate::union::{LayerFs, errno};
use crate::whiteout::XattrNs;

/// The longest absolute redirect the kernel writes (its `redirect_max` default); a longer
/// one makes the rename fail with EXDEV, as there.
pub const REDIRECT_MAX: usize = 256;

/// What `redirect_dir=` says: whether redirects are followed and whether renames write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectDir {
    /// `off`, the default: renames of lower directories fail with EXDEV; redirects already
    /// on disk are followed (as the kernel's `redirect_always_follow` default does).
    Off,
    /// `nofollow`: as `off`, and a lookup that meets a redirect fails with EPERM.
    NoFollow,
    /// `follow`: redirects are followed, never written.
    Follow,
    /// `on`: followed, and written by renames of directories a lower layer holds.
    On,
}

impl RedirectDir {
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "off" => RedirectDir::Off,
            "nofollow" => RedirectDir::NoFollow,
            "follow" => RedirectDir::Follow,
            "on" => RedirectDir::On,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RedirectDir::Off => "off",
            RedirectDir::NoFollow => "nofollow",
            RedirectDir::Follow => "follow",
            RedirectDir::On => "on",
        }
    }

    pub fn follows(self) -> bool {
        self != RedirectDir::NoFollow
    }

    pub fn writes(self) -> bool {
        self == RedirectDir::On
    }
}

fn xattr_name(ns: XattrNs) -> &'static OsStr {
    OsStr::new(match ns {
        XattrNs::Trusted => "trusted.overlay.redirect",
        XattrNs::User => "user.overlay.redirect",
    })
}

/// Whether `value` is a redirect the kernel accepts: a single name, or `/` followed by
/// non-empty names separated by single slashes.
pub(crate) fn valid(value: &[u8]) -> bool {
    let plain = |n: &[u8]| !n.is_empty() && n != b"." && n != b"..";
    match value.strip_prefix(b"/") {
        Some(path) => path.split(|&b| b == b'/').all(plain),
        None => !value.contains(&b'/') && plain(value),
    }
}

/// The redirect of the directory `dir/name`, if it has one (EINVAL for a value the kernel
/// would call invalid).
pub fn read(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNs) -> io::Result<Option<OsString>> {
    match XattrTarget::at(dir, name)?.get_if_any(xattr_name(ns))? {
        Some(v) if valid(&v) => Ok(Some(OsString::from_vec(v))),
        Some(v) => {
            log::warn!("invalid redirect {:?} on {name:?}", OsStr::from_bytes(&v));
            Err(errno(libc::EINVAL))
        }
        None => Ok(None),
    }
}

/// Gives the upper directory `dir/name` the redirect `value`; EXDEV if the filesystem will
/// not keep it (the rename then fails as without redirects, as on the kernel).
pub fn write(dir: BorrowedFd<'_>, name: &OsStr, value: &OsStr, ns: XattrNs) -> io::Result<()> {
    XattrTarget::at(dir, name)?
        .set(xattr_name(ns), value.as_bytes(), 0)
        .map_err(|e| {
            log::warn!("cannot set the redirect of {name:?}: {e}");
            errno(libc::EXDEV)
        })
}

/// Where the layers below look a directory up once `redirect` is found on it while
/// looking it up at `at`: a relative redirect replaces the last name, an absolute one
/// starts again from the layers' roots.
pub fn follow(at: &LowerAt, redirect: &OsStr) -> LowerAt {
    let bytes = redirect.as_bytes();
    if let Some(path) = bytes.strip_prefix(b"/") {
        return LowerAt::Path(PathBuf::from(OsStr::from_bytes(path)));
    }
    match at {
        LowerAt::Name(_) => LowerAt::Name(redirect.to_os_string()),
        LowerAt::Path(p) => LowerAt::Path(p.with_file_name(redirect)),
    }
}

pub fn is_absolute(redirect: &OsStr) -> bool {
    redirect.as_bytes().first() == Some(&b'/')
}

/// A moved directory's new redirect, and where its lower layers hold it from its new place.
pub struct Redirected {
    pub redirect: OsString,
    pub lower_at: Vec<LowerAt>,
}

impl LayerFs {
    /// Before the directory `node`, which lower layers hold, moves from the upper
    /// `dir/name` (to a name in the same parent if `same_parent`): gives it the redirect
    /// it needs there, and says where its lowers hold it once it has moved.
    pub(crate) fn redirect_before_move(
        &self,
        node: &Inode,
        (parent, dir): (Ino, BorrowedFd<'_>),
        name: &OsStr,
        same_parent: bool,
    ) -> io::Result<Redirected> {
        let place = node.place();
        let redirect = match (
            self.redirect_for_move(node, Some((parent, name)), same_parent)?,
            place.redirect.clone(),
        ) {
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => return Err(errno(libc::EIO)),
        };
        let lower_at = place
            .lowers
            .iter()
            .map(|&lid| match place.at(lid) {
                LowerAt::Name(n) if !same_parent => {
                    Ok(LowerAt::Path(self.layer_path(lid, place.parent)?.join(n)))
                }
                at => Ok(at),
            })
            .collect::<io::Result<_>>()?;
        if place.redirect.as_ref() != Some(&redirect) {
            write(dir, name, &redirect, self.cfg.xattr_ns)?;
        }
        Ok(Redirected { redirect, lower_at })
    }

    /// Gives the metacopy stub `node` (the upper `dir/name`) an absolute redirect to its
    /// data unless it has one, as the kernel does before the stub gets another name.
    pub(crate) fn redirect_stub(
        &self,
        node: &Inode,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<()> {
        let Some(value) = self.redirect_for_move(node, None, false)? else {
            return Ok(());
        };
        write(dir, name, &value, self.cfg.xattr_ns)?;
        node.set_redirect(value);
        Ok(())
    }

    /// The path below `layer`'s root of the directory `ino`'s object there.
    pub(crate) fn layer_path(&self, layer: LayerId, mut ino: Ino) -> io::Result<PathBuf> {
        let mut names = Vec::new();
        let mut base = PathBuf::new();
        while ino != ROOT {
            let (parent, at) = self
                .node(ino)?
                .located(layer)
                .ok_or_else(|| errno(libc::ENOENT))?;
            match at {
                LowerAt::Name(n) => names.push(n),
                LowerAt::Path(p) => {
                    base = p;
                    break;
                }
            }
            ino = parent;
        }
        base.extend(names.iter().rev());
        Ok(base)
    }

    /// The redirect a directory moving from its place (`node`) needs, as the kernel
    /// computes it before the rename, or `None` if the one it has still holds. Within its
    /// parent: its name (a relative redirect). Elsewhere: its absolute path, each ancestor
    /// counted by its own redirect where it has one, up to an absolute one. `from` is the
    /// name it moves from (for a hard link, one of several), else its place's.
    pub(crate) fn redirect_for_move(
        &self,
        node: &Inode,
        from: Option<(Ino, &OsStr)>,
        same_parent: bool,
    ) -> io::Result<Option<OsString>> {
        let place = node.place();
        if let Some(r) = &place.redirect
            && (same_parent || is_absolute(r))
        {
            return Ok(None);
        }
        let (parent, name) = match from {
            Some((p, n)) => (p, n.to_os_string()),
            None => (place.parent, place.name.clone()),
        };
        if same_parent {
            return Ok(Some(name));
        }
        let mut parts: Vec<OsString> = Vec::new();
        let mut len = 0;
        let (mut ino, mut part) = (parent, place.redirect.unwrap_or(name));
        loop {
            let absolute = is_absolute(&part);
            len += part.len() + usize::from(!absolute);
            if len > REDIRECT_MAX {
                return Err(errno(libc::EXDEV));
            }
            parts.push(part);
            if absolute || ino == ROOT {
                break;
            }
            let p = self.node(ino)?.place();
            (ino, part) = (p.parent, p.redirect.unwrap_or(p.name));
        }
        let mut value = Vec::with_capacity(len);
        for part in parts.iter().rev() {
            if !is_absolute(part) {
                value.push(b'/');
            }
            value.extend_from_slice(part.as_bytes());
        }
        Ok(Some(OsString::from_vec(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_the_kernel_accepts() {
        for ok in ["a", "/a", "/a/b", "a b", "/.x/y"] {
            assert!(valid(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "/", "a/b", "//a", "/a//b", "/a/", ".", "/a/.."] {
            assert!(!valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn following_replaces_the_last_name_or_starts_from_the_root() {
        let name = |s: &str| LowerAt::Name(s.into());
        let path = |s: &str| LowerAt::Path(s.into());
        assert_eq!(follow(&name("b"), OsStr::new("a")), name("a"));
        assert_eq!(follow(&path("x/b"), OsStr::new("a")), path("x/a"));
        assert_eq!(follow(&name("b"), OsStr::new("/x/a")), path("x/a"));
        assert_eq!(follow(&path("y/b"), OsStr::new("/a")), path("a"));
    }
}
