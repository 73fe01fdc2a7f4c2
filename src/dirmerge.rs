//! Directory merging: the listing of a directory is the union of its layers' listings,
//! deduplicated top-down, with whiteouts hiding names in the layers below them and
//! whiteouts and layer metadata never shown.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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
    /// For a directory: the layers of the listing that hold the name or a whiteout of it,
    /// its own layer first (a lookup need not look in the others); empty otherwise.
    pub held_in: Box<[LayerId]>,
}

/// A merged listing and the layers it was read from.
#[derive(Debug)]
pub struct Listing {
    pub entries: Vec<MergedEntry>,
    /// The layers whose directory was read (a lower missing at the time was not).
    pub layers: Box<[LayerId]>,
}

/// What a current listing says of where one of its directories' names is: a lookup of
/// it may pass over a listed layer that does not hold the name.
#[derive(Clone, Copy, Debug)]
pub struct Presence<'a> {
    pub listed: &'a [LayerId],
    pub held_in: &'a [LayerId],
}

impl Presence<'_> {
    /// Whether the listing showed that `layer` holds neither the name nor a whiteout of it.
    pub fn rules_out(&self, layer: LayerId) -> bool {
        self.listed.contains(&layer) && !self.held_in.contains(&layer)
    }
}

/// One entry of a merge: the layer that shows it, the entry, and for a directory the
/// layers that hold its name (see [`MergedEntry::held_in`]).
pub type Merged = (LayerId, LayerEntry, Vec<LayerId>);

/// One entry as read from one layer.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    pub name: OsString,
    pub role: EntryRole,
    pub kind: u32,
    pub st_ino: u64,
}

/// Merges per-layer listings given top layer first: the first layer showing a name wins;
/// a whiteout hides the name in the layers below its own. A directory that wins also
/// gathers the layers below that hold its name or a whiteout of it.
pub fn merge(layers: Vec<(LayerId, Vec<LayerEntry>)>) -> Vec<Merged> {
    // Names taken by a layer above, with the index in `out` of a directory that took one.
    let mut taken: HashMap<OsString, Option<usize>> = HashMap::new();
    let mut out: Vec<Merged> = Vec::new();
    let last = layers.len().saturating_sub(1);
    let held = |out: &mut Vec<Merged>, d: Option<usize>, lid: LayerId| {
        if let Some(d) = d
            && out[d].2.last() != Some(&lid)
        {
            out[d].2.push(lid);
        }
    };
    for (i, (lid, entries)) in layers.into_iter().enumerate() {
        let mut whiteouts = Vec::new();
        for e in entries {
            match e.role {
                EntryRole::Meta => {}
                EntryRole::Whiteout => whiteouts.push(e.name),
                // Nothing below the last layer: its names need not be remembered (a huge
                // one-layer directory costs one copy).
                EntryRole::Visible if i == last => match taken.get(&e.name) {
                    None => out.push(winner(lid, e)),
                    Some(d) => held(&mut out, *d, lid),
                },
                EntryRole::Visible => match taken.entry(e.name.clone()) {
                    Entry::Occupied(o) => held(&mut out, *o.get(), lid),
                    Entry::Vacant(v) => {
                        v.insert((e.kind == libc::S_IFDIR).then_some(out.len()));
                        out.push(winner(lid, e));
                    }
                },
            }
        }
        // A whiteout hides its name only below its own layer (and the last layer's hide
        // nothing).
        for w in whiteouts {
            match taken.entry(w) {
                Entry::Occupied(o) => held(&mut out, *o.get(), lid),
                Entry::Vacant(v) if i < last => {
                    v.insert(None);
                }
                Entry::Vacant(_) => {}
            }
        }
    }
    out
}

fn winner(lid: LayerId, e: LayerEntry) -> Merged {
    let held_in = if e.kind == libc::S_IFDIR {
        vec![lid]
    } else {
        Vec::new()
    };
    (lid, e, held_in)
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
    pub(crate) fn list_dir(&self, node: &Inode) -> io::Result<Listing> {
        let place = node.place();
        let read = self.layer_listings(&place, |lid| self.dir_fd(lid, node))?;
        let layers = read.iter().map(|(lid, _)| *lid).collect();
        let merged = merge(read);
        let upper = if place.upper {
            let fd = self.dir_fd(0, node)?;
            (!place.lowers.is_empty() || self.is_impure(fd.as_fd())).then_some(fd)
        } else {
            None
        };
        let entries = merged
            .into_iter()
            .map(|(lid, e, held_in)| MergedEntry {
                ino: match &upper {
                    Some(dir) if self.layers.is_upper(lid) => {
                        self.upper_number(dir.as_fd(), &e.name, e.st_ino, e.kind)
                    }
                    _ => self.ino_for(lid, e.st_ino),
                },
                name: e.name,
                kind: e.kind,
                layer: lid,
                held_in: held_in.into_boxed_slice(),
            })
            .collect();
        Ok(Listing { entries, layers })
    }

    /// Looks up `e`, an entry of a listing of `parent` read from `listed` at names epoch
    /// `epoch`, counting one kernel reference as [`Self::lookup`] does. While the listing
    /// is current, a non-directory is found by one stat in the layer the listing took it
    /// from (the merge has already ruled out whiteouts and the layers above), and a
    /// directory is resolved in the layers that hold its name only; anything else is
    /// resolved in full.
    pub(crate) fn lookup_listed(
        &self,
        parent: &Arc<Inode>,
        epoch: u64,
        listed: &[LayerId],
        e: &MergedEntry,
    ) -> io::Result<Attr> {
        let _names = parent.names_shared();
        // A copied-up object listed from a lower is no longer what the name shows.
        let current = parent.names_epoch() == epoch
            && (self.layers.is_upper(e.layer) || !self.node(e.ino).is_ok_and(|n| n.in_upper()));
        if !current {
            return self.lookup_in(parent, &e.name).map(|(_, a)| a);
        }
        if e.kind == libc::S_IFDIR {
            let presence = Presence {
                listed,
                held_in: &e.held_in,
            };
            return self
                .lookup_in_where(parent, &e.name, Some(presence))
                .map(|(_, a)| a);
        }
        let dir = self.dir_fd(e.layer, parent)?;
        let st = self.stat_at(e.layer, dir.as_fd(), &e.name)?;
        // Another name of a lower hard link may have been copied up, and a file may be a
        // metacopy stub (followed, or refused where stubs are not): in full.
        let stub = st.st_mode & libc::S_IFMT == libc::S_IFREG
            && metacopy::is_stub(dir.as_fd(), &e.name, self.cfg.xattr_ns)?;
        // So may an upper name of an indexed file (its index entry is looked for).
        let indexed = self.index().is_some() && st.st_nlink > 1;
        let simple = !stub && ((self.layers.is_upper(e.layer) && !indexed) || st.st_nlink == 1);
        if simple && self.ino_for(e.layer, st.st_ino) == e.ino {
            let place = Place::found(parent.ino, &e.name, e.layer, self.layers.is_upper(e.layer));
            let node = self.remember(e.ino, st.st_mode & libc::S_IFMT, place);
            return Ok(self.shown(&node, st));
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

    fn names(v: &[Merged]) -> Vec<(LayerId, String)> {
        v.iter()
            .map(|(l, e, _)| (*l, e.name.to_string_lossy().into_owned()))
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

    fn dir(name: &str) -> LayerEntry {
        LayerEntry {
            kind: libc::S_IFDIR,
            ..e(name, EntryRole::Visible)
        }
    }

    #[test]
    fn a_directory_gathers_the_layers_holding_its_name() {
        let m = merge(vec![
            (0, vec![e("f", EntryRole::Visible)]),
            (1, vec![dir("d"), dir("f"), e("d", EntryRole::Whiteout)]),
            (2, vec![e("x", EntryRole::Visible)]),
            (3, vec![e("d", EntryRole::Visible), dir("f")]),
            (4, vec![e("d", EntryRole::Whiteout)]),
        ]);
        let held: Vec<(String, Vec<LayerId>)> = m
            .iter()
            .map(|(_, e, h)| (e.name.to_string_lossy().into_owned(), h.clone()))
            .collect();
        // "f" is a file on top: no layers gathered. "d" is held by its own layer (once,
        // though a whiteout of it is there too), by 3 and by the whiteout in 4.
        assert_eq!(
            held,
            vec![
                ("f".into(), vec![]),
                ("d".into(), vec![1, 3, 4]),
                ("x".into(), vec![]),
            ]
        );
    }

    fn union(root: &std::path::Path, n: usize, fill: impl Fn(usize, &std::path::Path)) -> LayerFs {
        crate::scratch::union_in(root, n, fill).unwrap()
    }

    fn listed_names(fs: &LayerFs, dir: Ino) -> Vec<String> {
        let fh = fs.opendir(dir).unwrap();
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let batch = fs.readdir(fh, offset).unwrap();
            let Some((next, _)) = batch.last() else { break };
            offset = *next;
            out.extend(
                batch
                    .into_iter()
                    .map(|(_, e)| e.name.to_string_lossy().into_owned()),
            );
        }
        fs.releasedir(fh);
        out.sort();
        out
    }

    /// Directories looked up from a listing (readdirplus) come out as a lookup by name
    /// finds them: merged across the layers that hold them, stopped by a whiteout (both
    /// formats) or an opaque directory between, and moved by a redirect, which makes the
    /// layers below look for another name than the listing knew of.
    #[test]
    fn listed_directories_resolve_as_looked_up() {
        let mk = |l: &std::path::Path, p: &str| std::fs::create_dir_all(l.join(p)).unwrap();
        let put = |l: &std::path::Path, p: &str| std::fs::write(l.join(p), "").unwrap();
        let xattr = |l: &std::path::Path, p: &str, k: &str, v: &str| {
            let d = std::fs::File::open(l.join(p)).unwrap();
            sys::XattrTarget::dir(d.as_fd())
                .set(OsStr::new(k), v.as_bytes(), 0)
                .unwrap();
        };
        let fill = |i: usize, l: &std::path::Path| match i {
            0 => {
                for d in ["merged", "whited", "aufs", "opaque", "moved"] {
                    mk(l, d);
                    put(l, &format!("{d}/top"));
                }
                xattr(l, "opaque", "trusted.overlay.opaque", "y");
                xattr(l, "moved", "trusted.overlay.redirect", "elsewhere");
                put(l, "file-over-dir");
            }
            1 => {
                let root = std::fs::File::open(l).unwrap();
                sys::mknodat(root.as_fd(), OsStr::new("whited"), libc::S_IFCHR, 0).unwrap();
                put(l, ".wh.aufs");
                mk(l, "elsewhere");
                put(l, "elsewhere/moved-in");
                mk(l, "file-over-dir");
            }
            _ => {
                for d in ["merged", "whited", "aufs", "opaque", "moved"] {
                    mk(l, d);
                    put(l, &format!("{d}/bottom"));
                }
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let listed = union(&a, 3, fill);
        let named = union(&b, 3, fill);
        let fh = listed.opendir(crate::inode::ROOT).unwrap();
        let entries = listed.readdir(fh, 0).unwrap();
        let mut seen = Vec::new();
        for (_, e) in entries.iter().filter(|(_, e)| !is_dot(&e.name)) {
            let via_listing = listed.lookup_entry(fh, e).unwrap();
            let via_name = named.lookup(crate::inode::ROOT, &e.name).unwrap();
            let name = e.name.to_string_lossy().into_owned();
            assert_eq!(
                (via_listing.st.st_mode, via_listing.st.st_nlink),
                (via_name.st.st_mode, via_name.st.st_nlink),
                "{name}"
            );
            if via_name.st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let (l, n) = (
                    listed_names(&listed, via_listing.ino),
                    listed_names(&named, via_name.ino),
                );
                assert_eq!(l, n, "{name}");
                seen.push((name, l));
            }
        }
        listed.releasedir(fh);
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("aufs".into(), strs(&[".", "..", "top"])),
                ("elsewhere".into(), strs(&[".", "..", "moved-in"])),
                ("merged".into(), strs(&[".", "..", "bottom", "top"])),
                ("moved".into(), strs(&[".", "..", "moved-in", "top"])),
                ("opaque".into(), strs(&[".", "..", "top"])),
                ("whited".into(), strs(&[".", "..", "top"])),
            ]
        );
    }

    /// A directory copied up after the listing was read (and forgotten since, so no node
    /// remembers it) is looked up from the listing with its copy: the copy-up moves the
    /// parent's names epoch on, and the listing no longer rules out the upper.
    #[test]
    fn a_copy_up_after_the_listing_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let fs = union(dir.path(), 2, |i, l| {
            std::fs::create_dir(l.join(format!("d{i}"))).unwrap();
            std::fs::create_dir(l.join("d")).unwrap();
        });
        let root = crate::inode::ROOT;
        let fh = fs.opendir(root).unwrap();
        let entries = fs.readdir(fh, 0).unwrap();
        let (_, d) = entries.iter().find(|(_, e)| e.name == "d").unwrap();
        let found = fs.lookup(root, OsStr::new("d")).unwrap();
        let change = crate::fileops::SetAttr {
            mode: Some(0o700),
            ..Default::default()
        };
        fs.setattr(found.ino, change).unwrap();
        fs.forget(found.ino, 1);
        let again = fs.lookup_entry(fh, d).unwrap();
        assert_eq!(again.st.st_mode & 0o7777, 0o700);
        fs.releasedir(fh);
    }

    #[test]
    fn metadata_never_shows() {
        let m = merge(vec![(0, vec![e(".wh..wh..opq", EntryRole::Meta)])]);
        assert!(m.is_empty());
    }
}
