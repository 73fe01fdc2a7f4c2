//! POSIX ACLs in their xattr form (`system.posix_acl_access`, `system.posix_acl_default`):
//! what a new object inherits from its directory's default ACL, and owner mapping of the
//! ids inside. The kernel enforces the ACLs (FUSE_POSIX_ACL); the daemon builds new objects
//! in the work directory, away from their directory, so it applies inheritance itself, as
//! kernel overlayfs does for objects it builds in its workdir.

use std::ffi::OsStr;
use std::io;

use crate::idmap::Owners;

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

/// The version in the header of the xattr form.
const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

/// Entry tags.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// An ACL as its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl Acl {
    /// Parses the xattr form; EINVAL for anything else.
    pub fn parse(v: &[u8]) -> io::Result<Self> {
        if v.len() < HEADER || !(v.len() - HEADER).is_multiple_of(ENTRY) {
            return Err(invalid());
        }
        if u32::from_le_bytes(v[..HEADER].try_into().map_err(|_| invalid())?) != VERSION {
            return Err(invalid());
        }
        let entries = v[HEADER..]
            .chunks_exact(ENTRY)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Acl(entries))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    /// The access ACL and mode of a new object created with `mode` under this default
    /// ACL: each class's permissions are what both the ACL and `mode` allow (the group
    /// class through the mask when there is one). `None` for the ACL when the result says
    /// no more than the mode bits do (no named entries and no mask).
    pub fn inherit(&self, mode: u32) -> io::Result<(Option<Acl>, u32)> {
        let mut acl = self.clone();
        let mut perms = mode & 0o777;
        let mut extended = false;
        let (mut group_obj, mut mask) = (None, None);
        for (i, e) in acl.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((perms >> 6) & 7) as u16;
                    perms = (perms & !0o700) | (u32::from(e.perm) << 6);
                }
                OTHER => {
                    e.perm &= (perms & 7) as u16;
                    perms = (perms & !0o007) | u32::from(e.perm);
                }
                USER | GROUP => extended = true,
                GROUP_OBJ => group_obj = Some(i),
                MASK => {
                    mask = Some(i);
                    extended = true;
                }
                _ => return Err(io::Error::from_raw_os_error(libc::EIO)),
            }
        }
        // The group class bits of the mode are the mask's, or the owning group's.
        let class = mask
            .or(group_obj)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let e = &mut acl.0[class];
        e.perm &= ((perms >> 3) & 7) as u16;
        perms = (perms & !0o070) | (u32::from(e.perm) << 3);
        let mode = (mode & !0o777) | perms;
        Ok((extended.then_some(acl), mode))
    }

    /// The same ACL with named users' and groups' ids passed through `uid` and `gid`.
    fn map_ids(mut self, uid: impl Fn(u32) -> u32, gid: impl Fn(u32) -> u32) -> Self {
        for e in &mut self.0 {
            match e.tag {
                USER => e.id = uid(e.id),
                GROUP => e.id = gid(e.id),
                _ => {}
            }
        }
        self
    }
}

/// Is `name` one of the two ACL xattrs?
pub fn is_acl_xattr(name: &OsStr) -> bool {
    name == OsStr::new(ACCESS) || name == OsStr::new(DEFAULT)
}

/// The ACL value `stored` in a layer as the mount shows it (ids mapped as owners are).
pub fn shown(owners: &Owners, stored: Vec<u8>) -> Vec<u8> {
    if *owners == Owners::default() {
        return stored;
    }
    match Acl::parse(&stored) {
        Ok(a) => a
            .map_ids(|u| owners.show(u, 0).0, |g| owners.show(0, g).1)
            .encode(),
        Err(_) => stored,
    }
}

/// The ACL value `shown` through the mount as a layer stores it.
pub fn stored(owners: &Owners, shown: &[u8]) -> io::Result<Vec<u8>> {
    if *owners == Owners::default() {
        return Ok(shown.to_vec());
    }
    Ok(Acl::parse(shown)?
        .map_ids(|u| owners.store_uid(u), |g| owners.store_gid(g))
        .encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
    }

    #[test]
    fn round_trip() {
        let a = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 0, 0),
        ]);
        assert_eq!(Acl::parse(&a.encode()).unwrap(), a);
        assert!(Acl::parse(b"\x01\0\0\0").is_err());
        assert!(Acl::parse(b"\x02\0\0\0\x01").is_err());
    }

    #[test]
    fn inheritance_masks_with_the_mode() {
        // default:user::rwx, user:1000:rwx, group::r-x, mask::rwx, other::r-x
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let (a, mode) = d.inherit(libc::S_IFREG | 0o666).unwrap();
        assert_eq!(mode, libc::S_IFREG | 0o664);
        let a = a.unwrap();
        assert_eq!(a.0[0].perm, 6);
        assert_eq!(a.0[1].perm, 7, "named entries are not masked by the mode");
        assert_eq!(a.0[3].perm, 6, "the mask takes the mode's group bits");
        assert_eq!(a.0[4].perm, 4);
        // setuid/setgid bits pass through.
        assert_eq!(
            d.inherit(libc::S_IFDIR | 0o2777).unwrap().1,
            libc::S_IFDIR | 0o2775
        );
    }

    #[test]
    fn a_minimal_default_acl_gives_only_a_mode() {
        let d = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 0, 0), (OTHER, 0, 0)]);
        let (a, mode) = d.inherit(0o644).unwrap();
        assert_eq!((a, mode), (None, 0o600));
    }

    #[test]
    fn ids_follow_the_owner_mapping() {
        let owners = Owners {
            uids: crate::idmap::IdMap::parse("0:100000:65536").unwrap(),
            gids: crate::idmap::IdMap::parse("0:200000:65536").unwrap(),
            ..Owners::default()
        };
        let a = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 5),
            (GROUP, 5, 6),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let shown_v = shown(&owners, a.encode());
        let s = Acl::parse(&shown_v).unwrap();
        assert_eq!((s.0[1].id, s.0[2].id), (100005, 200006));
        assert_eq!(stored(&owners, &shown_v).unwrap(), a.encode());
    }
}
