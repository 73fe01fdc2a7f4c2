//! Directory merging: the listing of a directory is the union of its layers' listings,
//! deduplicated top-down, with whiteouts hiding names in the layers below them and
//! whiteouts and layer metadata never shown.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::inode::{Ino, Inode, Place};
use crate::layers::LayerId;
use crate::metacopy;
use crate::sys;
use crate::union::{Attr, LayerFs, is_enoent};
use crate::whiteout::{self, EntryRole};

/// One entry of a merged listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedEntry {
    pub name: OsString,
    pub ino: Ino,
    /// `S_IFMT` bits.
    pub kind: u32,
    /// The layer whose object the entry shows.
    pub layer: LayerId,
}

/// One entry as read from one layer.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    pub name: OsString,
    pub role: EntryRole,
    pub kind: u32,
    pub st_ino: u64,
}

/// Merges per-layer listings given top layer first: the first layer showing a name wins;
/// a whiteout hides the name in the layers below its own.
pub fn merge(layers: Vec<(LayerId, Vec<LayerEntry>)>) -> Vec<(LayerId, LayerEntry)> {
    let mut taken: HashSet<OsString> = HashSet::new();
    let mut out = Vec::new();
    let last = layers.len().saturating_sub(1);
    for (i, (lid, entries)) in layers.into_iter().enumerate() {
        let mut whiteouts = Vec::new();
        for e in entries {
            match e.role {
                EntryRole::Meta => {}
                // Nothing below the last layer: its whiteouts hide nothing and its names
                // need not be remembered (a huge one-layer directory costs one copy).
                EntryRole::Whiteout if i < last => whiteouts.push(e.name),
                EntryRole::Whiteout => {}
                EntryRole::Visible if i == last => {
                    if !taken.contains(&e.name) {
                        out.push((lid, e));
                    }
                }
                EntryRole::Visible => {
                    if taken.insert(e.name.clone()) {
                        out.push((lid, e));
                    }
                }
            }
        }
        taken.extend(whiteouts);
    }
    out
}

fn dtype_to_kind(dtype: u8) -> Option<u32> {
    Some(match dtype {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_BLK => libc::S_IFBLK,
        _ => return None,
    })
}

impl LayerFs {
    /// Reads the entries of a directory in every layer of `place`; `open` gives its fd in
    /// a layer.
    fn layer_listings(
        &self,
        place: &Place,
        open: impl Fn(LayerId) -> io::Result<Arc<OwnedFd>>,
    ) -> io::Result<Vec<(LayerId, Vec<LayerEntry>)>> {
        let mut all = Vec::new();
        for lid in place.layers() {
            let dir = match open(lid) {
                Ok(d) => d,
                // An upper directory removed under the mount is dead and lists as empty
                // (as a removed directory does, and as on the kernel); a lower changed
                // under the mount is skipped.
                Err(e) if is_enoent(&e) && self.layers.is_upper(lid) => return Ok(Vec::new()),
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            };
            let mut entries = Vec::new();
            for raw in sys::read_dir(dir.as_fd())? {
                // Only character devices (possible whiteouts) and unknown types need a stat.
                let (kind, rdev_zero) = match dtype_to_kind(raw.dtype) {
                    Some(k) => (k, false),
                    None => match sys::fstatat(dir.as_fd(), &raw.name) {
                        Ok(st) => (st.st_mode & libc::S_IFMT, whiteout::is_whiteout(&st)),
                        Err(e) if is_enoent(&e) => continue,
                        Err(e) => return Err(e),
                    },
                };
                // A regular file may stand in for a device or fifo (owner/mode overrides).
                let kind = if kind == libc::S_IFREG && self.layers.get(lid).stat_override.is_some()
                {
                    match self.stat_at(lid, dir.as_fd(), &raw.name) {
                        Ok(st) => st.st_mode & libc::S_IFMT,
                        Err(e) if is_enoent(&e) => continue,
                        Err(e) => return Err(e),
                    }
                } else {
                    kind
                };
                let (role, target) = whiteout::classify(&raw.name, rdev_zero);
                entries.push(LayerEntry {
                    name: target.to_os_string(),
                    role,
                    kind,
                    st_ino: raw.ino,
                });
            }
            all.push((lid, entries));
        }
        Ok(all)
    }

    /// The merged listing of directory `node` (without `.` and `..`).
    /// Entries from the upper of a merged or impure directory may show their origin's
    /// number (see [`Self::upper_number`]), as their stat does.
    pub(crate) fn list_dir(&self, node: &Inode) -> io::Result<Vec<MergedEntry>> {
        let place = node.place();
        let merged = merge(self.layer_listings(&place, |lid| self.dir_fd(lid, node))?);
        let upper = if place.upper {
            let fd = self.dir_fd(0, node)?;
            (!place.lowers.is_empty() || self.is_impure(fd.as_fd())).then_some(fd)
        } else {
            None
        };
        Ok(merged
            .into_iter()
            .map(|(lid, e)| MergedEntry {
                ino: match &upper {
                    Some(dir) if self.layers.is_upper(lid) => {
                        self.upper_number(dir.as_fd(), &e.name, e.st_ino, e.kind)
                    }
                    _ => self.ino_for(lid, e.st_ino),
                },
                name: e.name,
                kind: e.kind,
                layer: lid,
            })
            .collect())
    }

    /// Looks up `e`, an entry of a listing of `parent` taken at names epoch `epoch`,
    /// counting one kernel reference as [`Self::lookup`] does. While the listing is
    /// current, a non-directory is found by one stat in the layer the listing took it
    /// from (the merge has already ruled out whiteouts and the layers above); anything
    /// else is resolved in full.
    pub(crate) fn lookup_listed(
        &self,
        parent: &Arc<Inode>,
        epoch: u64,
        e: &MergedEntry,
    ) -> io::Result<Attr> {
        let _names = parent.names_shared();
        if e.kind != libc::S_IFDIR && parent.names_epoch() == epoch {
            let known_upper = self.node(e.ino).is_ok_and(|n| n.in_upper());
            // A copied-up object listed from a lower is no longer what the name shows.
            if self.layers.is_upper(e.layer) || !known_upper {
                let dir = self.dir_fd(e.layer, parent)?;
                let st = self.stat_at(e.layer, dir.as_fd(), &e.name)?;
                // Another name of a lower hard link may have been copied up, and an upper
                // file may be a metacopy stub: in full.
                let maybe_stub = self.layers.is_upper(e.layer) || self.stubs_followed();
                let stub = maybe_stub
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && metacopy::is_stub(dir.as_fd(), &e.name, self.cfg.xattr_ns)?;
                // So may an upper name of an indexed file (its index entry is looked for).
                let indexed = self.index().is_some() && st.st_nlink > 1;
                let simple =
                    !stub && ((self.layers.is_upper(e.layer) && !indexed) || st.st_nlink == 1);
                if simple && self.ino_for(e.layer, st.st_ino) == e.ino {
                    let place =
                        Place::found(parent.ino, &e.name, e.layer, self.layers.is_upper(e.layer));
                    let node = self
                        .inodes
                        .remember(e.ino, st.st_mode & libc::S_IFMT, place);
                    return Ok(self.shown(&node, st));
                }
            }
        }
        self.lookup_in(parent, &e.name).map(|(_, a)| a)
    }

    /// Whether the directory of `place` in `parent` shows no entries.
    pub(crate) fn is_empty_dir(&self, parent: &Inode, place: &Place) -> io::Result<bool> {
        let open = |lid| {
            let (dir, name) = self.lookup_base(lid, parent, &place.at(lid))?;
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            Ok(Arc::new(sys::openat(dir.as_fd(), &name, flags, 0)?))
        };
        Ok(merge(self.layer_listings(place, open)?).is_empty())
    }
}

/// Whether `name` is one of the entries `.` and `..`.
pub fn is_dot(name: &OsStr) -> bool {
    name == "." || name == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, role: EntryRole) -> LayerEntry {
        LayerEntry {
            name: name.into(),
            role,
            kind: libc::S_IFREG,
            st_ino: 7,
        }
    }

    fn names(v: &[(LayerId, LayerEntry)]) -> Vec<(LayerId, String)> {
        v.iter()
            .map(|(l, e)| (*l, e.name.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn top_layer_wins_and_dedups() {
        let m = merge(vec![
            (
                0,
                vec![e("a", EntryRole::Visible), e("b", EntryRole::Visible)],
            ),
            (
                1,
                vec![e("b", EntryRole::Visible), e("c", EntryRole::Visible)],
            ),
        ]);
        assert_eq!(
            names(&m),
            vec![(0, "a".into()), (0, "b".into()), (1, "c".into())]
        );
    }

    #[test]
    fn whiteouts_hide_only_below() {
        let m = merge(vec![
            (
                0,
                vec![e("x", EntryRole::Whiteout), e("y", EntryRole::Visible)],
            ),
            (
                1,
                vec![e("x", EntryRole::Visible), e("z", EntryRole::Whiteout)],
            ),
            (
                2,
                vec![e("z", EntryRole::Visible), e("w", EntryRole::Visible)],
            ),
        ]);
        assert_eq!(names(&m), vec![(0, "y".into()), (2, "w".into())]);
    }

    #[test]
    fn whiteout_in_same_layer_does_not_hide_own_entry() {
        let m = merge(vec![(
            1,
            vec![e("q", EntryRole::Whiteout), e("q", EntryRole::Visible)],
        )]);
        assert_eq!(names(&m), vec![(1, "q".into())]);
    }

    #[test]
    fn metadata_never_shows() {
        let m = merge(vec![(0, vec![e(".wh..wh..opq", EntryRole::Meta)])]);
        assert!(m.is_empty());
    }
}
