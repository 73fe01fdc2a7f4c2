//! The inodes index (`index=on`), in kernel overlayfs's on-disk format: a copied-up lower
//! hard link lives at `WORKDIR/index/<origin in hex>` (the hex of its `origin` value), and
//! each of its names in the upper is a hard link of that entry. A lower name of the same
//! file met later (after a remount too) finds the entry by its origin, so every name stays
//! one inode. The union's link count is kept on the entry (`trusted.overlay.nlink`,
//! relative to the upper inode's), and the entry goes when the count reaches zero.
//!
//! At mount the upper root records the first lower root as its origin and the index
//! directory records the upper root (`trusted.overlay.upper`): an upper or an index met
//! again over other layers is refused, as the kernel refuses it. Leftovers and orphan
//! entries are cleaned as the kernel cleans them.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::copyup::CopyData;
use crate::inode::{Inode, Place};
use crate::layers::Layers;
use crate::origin::{self, Origin, xattr_name};
use crate::sys::{self, Stat, XattrTarget};
use crate::union::{LayerFs, errno};
use crate::whiteout::{self, XattrNs};
use crate::workdir::remove_tree;

/// The index directory's name in the workdir.
pub const INDEX_SUBDIR: &str = "index";

/// The union's link count of an indexed file, as `trusted.overlay.nlink` keeps it:
/// relative to the upper inode's count (`U+n`), or, while a name is being linked up, to
/// the lower's (`L+n`), so that a crash in between still counts right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nlink {
    Upper(i64),
    Lower(i64),
}

impl Nlink {
    pub fn encode(self) -> String {
        match self {
            Nlink::Upper(d) => format!("U{d:+}"),
            Nlink::Lower(d) => format!("L{d:+}"),
        }
    }

    /// The value in `v`, read as the kernel reads it (a letter, a sign, a number).
    pub fn decode(v: &[u8]) -> Option<Nlink> {
        let (&kind, rest) = v.split_first()?;
        if !matches!(rest.first(), Some(b'+' | b'-')) {
            return None;
        }
        let d: i64 = std::str::from_utf8(rest).ok()?.parse().ok()?;
        match kind {
            b'U' => Some(Nlink::Upper(d)),
            b'L' => Some(Nlink::Lower(d)),
            _ => None,
        }
    }

    /// The union's count given the upper and the lower inode's own; `None` where it
    /// comes to nothing positive (the kernel then falls back to the real count).
    pub fn count(self, upper: u64, lower: u64) -> Option<u64> {
        let (real, d) = match self {
            Nlink::Upper(d) => (upper, d),
            Nlink::Lower(d) => (lower, d),
        };
        // A crafted value may be any i64: the sum is taken without overflow.
        let n = i128::from(real) + i128::from(d);
        (n > 0).then(|| u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// An index entry's name: the hex of the origin value, as the kernel names it.
pub fn entry_name(origin: &[u8]) -> OsString {
    let mut s = String::with_capacity(origin.len() * 2);
    for b in origin {
        s.push_str(&format!("{b:02x}"));
    }
    s.into()
}

/// The origin value an index entry's name stands for, if it is one.
pub fn entry_origin(name: &OsStr) -> Option<Vec<u8>> {
    let hex = name.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let value: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect();
    value.filter(|v| Origin::decode(v).is_some())
}

/// Checks that the object `fd` (`what`, for messages) records `value` as xattr `name`, or
/// records it there if it has none, as the kernel ties the upper root and the index at
/// mount. `Err(None)`: it records another value; `Err(Some(msg))`: it could not be read
/// or written.
fn verify_or_set(
    fd: BorrowedFd<'_>,
    name: &OsStr,
    value: &[u8],
    what: &str,
) -> Result<(), Option<String>> {
    let failed = |e: io::Error| Some(format!("index=on: {what}: {}", crate::setup::plain(&e)));
    let target = XattrTarget::fd(fd).map_err(failed)?;
    match target.get_if_any(name).map_err(failed)? {
        None => target.set(name, value, 0).map_err(failed),
        Some(v) if v == value => Ok(()),
        Some(_) => Err(None),
    }
}

/// The open index directory of a mount with `index=on`.
#[derive(Debug)]
pub struct Index {
    fd: Arc<OwnedFd>,
    /// Held while a union link count is read and rewritten around a change of the upper
    /// inode's links (a link-up, the removal of a name), so two such changes of one file
    /// never interleave.
    counting: Mutex<()>,
}

impl Index {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The index directory's fd, shared.
    pub fn shared_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
    }

    /// See the field.
    pub(crate) fn counting(&self) -> MutexGuard<'_, ()> {
        self.counting.lock()
    }

    /// Prepares the index of a mount over `layers` whose workdir is `workdir` (an fd of
    /// it), as the kernel does at mount: the upper root's origin checked (or recorded), the
    /// index directory made and tied to the upper root, its leftovers and orphans removed.
    /// `Ok(None)` where a layer gives no file handles: the kernel then mounts with
    /// index=off, and so does layerfs, saying why. `Err` is a one-line reason to refuse
    /// the mount.
    pub fn prepare(
        layers: &Layers,
        workdir: BorrowedFd<'_>,
        ns: XattrNs,
    ) -> Result<Option<Index>, String> {
        let upper = layers.upper().ok_or("index=on needs an upper layer")?;
        let Some(lower) = layers.lowers().first() else {
            return Ok(None);
        };
        let io =
            |what: &str, e: io::Error| format!("index=on: {what}: {}", crate::setup::plain(&e));
        for l in layers.all_lowers().iter().chain([upper]) {
            let handle = origin::encode_for(l, l.root(), OsStr::new(""), false);
            let decodes = handle
                .as_deref()
                .and_then(Origin::decode)
                .is_some_and(|o| l.open_handle(&o.handle).is_ok());
            if !decodes {
                log::warn!(
                    "{} does not support file handles (none this process can open), falling back to index=off",
                    l.path.display()
                );
                return Ok(None);
            }
        }
        let root_origin = origin::encode_for(lower, lower.root(), OsStr::new(""), false)
            .ok_or("index=on: the first lower layer gives no file handle")?;
        let mismatch = format!(
            "index=on: upper layer {} was made over other lower layers (its root's origin is not {}); mount with index=off",
            upper.path.display(),
            lower.path.display()
        );
        verify_or_set(
            upper.root(),
            &xattr_name(ns, "origin"),
            &root_origin,
            "the upper root",
        )
        .map_err(|e| e.unwrap_or(mismatch))?;
        let mode = if sys::geteuid() == 0 { 0 } else { 0o700 };
        match sys::mkdirat(workdir, OsStr::new(INDEX_SUBDIR), mode) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(io("making WORKDIR/index", e)),
        }
        let fd = sys::openat(
            workdir,
            OsStr::new(INDEX_SUBDIR),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io("WORKDIR/index", e))?;
        let upper_fh = origin::encode_for(upper, upper.root(), OsStr::new(""), true)
            .ok_or("index=on: the upper layer gives no file handle")?;
        let mismatch = format!(
            "index=on: WORKDIR/index belongs to another upper layer than {}; delete it or mount with index=off",
            upper.path.display()
        );
        verify_or_set(
            fd.as_fd(),
            &xattr_name(ns, "upper"),
            &upper_fh,
            "WORKDIR/index",
        )
        .map_err(|e| e.unwrap_or(mismatch))?;
        let index = Index {
            fd: Arc::new(fd),
            counting: Mutex::new(()),
        };
        index.clean(layers, ns)?;
        Ok(Some(index))
    }

    /// Removes what the kernel removes at mount: leftovers of an interrupted copy-up
    /// (`#` names), entries whose origin no longer decodes or is not what they are named
    /// after (stale), and files no name of the union holds any more (orphans). An entry
    /// the kernel would not trust refuses the mount, as there.
    fn clean(&self, layers: &Layers, ns: XattrNs) -> Result<(), String> {
        let entries = sys::read_dir(self.fd()).map_err(|e| format!("index=on: {e}"))?;
        for e in entries {
            if e.name.as_bytes().starts_with(b"#") {
                remove_tree(self.fd(), &e.name).map_err(|e| format!("index=on: {e}"))?;
                continue;
            }
            match self.verify(layers, ns, &e.name) {
                Ok(true) => {}
                Ok(false) => {
                    log::info!("removing the stale or orphan index entry {:?}", e.name);
                    remove_tree(self.fd(), &e.name).map_err(|e| format!("index=on: {e}"))?;
                }
                Err(why) => {
                    return Err(format!(
                        "index=on: index entry {:?}: {why}; delete WORKDIR/index or mount with index=off",
                        e.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the entry `name` stays (`false`: stale or orphan), or why it cannot be
    /// trusted.
    fn verify(&self, layers: &Layers, ns: XattrNs, name: &OsStr) -> Result<bool, String> {
        let value = entry_origin(name).ok_or("not an origin file handle")?;
        let st = match sys::fstatat(self.fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
            Err(e) => return Err(e.to_string()),
        };
        // Whiteouts (left by nfs_export) and directories are not checked without
        // nfs_export, as on the kernel.
        if whiteout::is_whiteout(&st) || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Ok(true);
        }
        let target = XattrTarget::at(self.fd(), name).map_err(|e| e.to_string())?;
        let recorded = target
            .get_if_any(&xattr_name(ns, "origin"))
            .map_err(|e| e.to_string())?
            .ok_or("it records no origin")?;
        if recorded != value {
            return Ok(false);
        }
        if st.st_nlink == 1 {
            let Some(found) = origin::find(layers, &value) else {
                return Ok(false);
            };
            if found.st.st_nlink == 1 {
                return Ok(false);
            }
            let nlink = target
                .get_if_any(&xattr_name(ns, "nlink"))
                .ok()
                .flatten()
                .and_then(|v| Nlink::decode(&v));
            let count = nlink.and_then(|n| n.count(st.st_nlink, found.st.st_nlink));
            return Ok(count.is_some());
        }
        Ok(true)
    }
}

impl LayerFs {
    /// The mount's index, under index=on.
    pub(crate) fn index(&self) -> Option<&Index> {
        self.work.as_ref()?.index()
    }

    /// The index's counting lock, for a change of the names of the object at `place`
    /// if it is indexed.
    pub(crate) fn counting_for(&self, place: &Place) -> Option<MutexGuard<'_, ()>> {
        place.index.as_ref()?;
        Some(self.index()?.counting())
    }

    /// Whether a copy-up of `st` (a lower object's real stat) goes through the index: a
    /// non-directory with more than one link, under index=on.
    pub(crate) fn indexes(&self, st: &Stat) -> bool {
        self.index().is_some() && st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_nlink > 1
    }

    /// The index entry of the lower object `dir/name` of `layer` (by its origin), and its
    /// stat where it exists. EIO for an entry of another type than the object, as the
    /// kernel answers ("bad index found").
    pub(crate) fn index_entry(
        &self,
        layer: crate::layers::LayerId,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<Option<(OsString, Option<Stat>)>> {
        let Some(index) = self.index() else {
            return Ok(None);
        };
        let Some(origin) = self.origin_of(layer, dir, name) else {
            return Ok(None);
        };
        let entry = entry_name(&origin);
        let found = match sys::fstatat(index.fd(), &entry) {
            Ok(e) if e.st_mode & libc::S_IFMT == st.st_mode & libc::S_IFMT => Some(e),
            Ok(_) => {
                log::warn!("bad index entry {entry:?} for {name:?}: another type");
                return Err(errno(libc::EIO));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(e),
        };
        Ok(Some((entry, found)))
    }

    /// Under index=on, for the non-directory `parent/name` just resolved to `st` at
    /// `place`: its index entry, where it is a copied-up lower hard link. Found by the
    /// origin of an upper name, or of a lower one, which then shows the entry's object.
    pub(crate) fn find_index(
        &self,
        parent: &Inode,
        name: &OsStr,
        st: &mut Stat,
        place: &mut Place,
    ) -> io::Result<()> {
        let Some(index) = self.index() else {
            return Ok(());
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR
            || st.st_nlink < 2
            || place.metacopy && !place.upper
        {
            return Ok(());
        }
        if place.upper {
            let dir = self.dir_fd(0, parent)?;
            place.index = self.upper_index_entry(dir.as_fd(), name, st);
            return Ok(());
        }
        let Some(&lower) = place.lowers.first() else {
            return Ok(());
        };
        let (dir, leaf) = self.lookup_base(lower, parent, &place.at(lower))?;
        let Some((entry, Some(mut est))) = self.index_entry(lower, dir.as_fd(), &leaf, st)? else {
            return Ok(());
        };
        self.apply_override(0, || XattrTarget::at(index.fd(), &entry), &mut est)?;
        place.metacopy = est.st_mode & libc::S_IFMT == libc::S_IFREG
            && crate::metacopy::is_stub(index.fd(), &entry, self.cfg.xattr_ns)?;
        // The inode's redirect (a stub moved or linked under another name), for its moves.
        place.redirect = crate::redirect::read(index.fd(), &entry, self.cfg.xattr_ns)?;
        *st = est;
        place.index = Some(entry);
        Ok(())
    }

    /// The index entry of the upper object `dir/name` (real stat `st`), where it is an
    /// indexed file: one that records an origin whose index entry is this same inode.
    pub(crate) fn upper_index_entry(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
    ) -> Option<OsString> {
        self.index()?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR || st.st_nlink < 2 {
            return None;
        }
        let origin = self.origin_value(dir, name)?;
        self.indexed_as(&origin, st.st_ino)
    }

    /// The index entry for `origin`, where it is the upper inode `st_ino`.
    pub(crate) fn indexed_as(&self, origin: &[u8], st_ino: u64) -> Option<OsString> {
        let entry = entry_name(origin);
        let e = sys::fstatat(self.index()?.fd(), &entry).ok()?;
        (e.st_ino == st_ino).then_some(entry)
    }

    /// Before the lower name `parent/name` (the object `st` at `place`) of a file that
    /// goes through the index is removed or replaced: the file is copied up into the
    /// index if it is not there yet, so that the union link count has a place, and the
    /// name linked up, as on the kernel (which does both for the same reasons). The
    /// name's new stat and place, or `None` where nothing was to do.
    pub(crate) fn index_before_unlink(
        &self,
        parent: &std::sync::Arc<Inode>,
        name: &OsStr,
        st: &Stat,
        place: &Place,
    ) -> io::Result<Option<(Stat, Place)>> {
        if place.upper || !(place.index.is_some() || self.indexes(st)) {
            return Ok(None);
        }
        if place.index.is_none() {
            let node = self.node_for(st, place.clone())?;
            self.copy_up(&node, CopyData::Metacopy)?;
        }
        // The name is linked up so that its removal takes an upper link along with the
        // union count, which then stays right whenever a crash comes.
        self.link_up_name(parent, name, st, place)?;
        self.found(parent, name)
    }

    /// Before the name `parent/name` (the object `st` at `place`) moves: where it is a
    /// lower name of an indexed file, it gets its upper name first, as the kernel links it
    /// up (a file copied up just now through this name has it already).
    pub(crate) fn link_up_name(
        &self,
        parent: &std::sync::Arc<Inode>,
        name: &OsStr,
        st: &Stat,
        place: &Place,
    ) -> io::Result<()> {
        if place.upper || !(place.index.is_some() || self.indexes(st)) {
            return Ok(());
        }
        match self.found(parent, name)? {
            Some((_, place)) if !place.upper && place.index.is_some() => {
                self.link_from_index(parent, name, &place).map(drop)
            }
            _ => Ok(()),
        }
    }

    /// Links the lower name `parent/name` (at `place`) of a file the index holds up from
    /// its entry (the upper parent made first), so that it is the
    /// indexed inode. `false` where the index holds no such file.
    pub(crate) fn link_from_index(
        &self,
        parent: &std::sync::Arc<Inode>,
        name: &OsStr,
        place: &Place,
    ) -> io::Result<bool> {
        let (Some(index), Some(&lower)) = (self.index(), place.lowers.first()) else {
            return Ok(false);
        };
        let (dir, leaf) = self.lookup_base(lower, parent, &place.at(lower))?;
        let lst = sys::fstatat(dir.as_fd(), &leaf)?;
        let Some((entry, Some(_))) = self.index_entry(lower, dir.as_fd(), &leaf, &lst)? else {
            return Ok(false);
        };
        self.copy_up(parent, CopyData::Full)?;
        let udir = self.dir_fd(0, parent)?;
        self.mark_impure(udir.as_fd());
        match self.link_up((index.fd(), &entry), (udir.as_fd(), name), lst.st_nlink) {
            // Linked up by a concurrent lookup of the same name.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(true),
            r => r.map(|()| true),
        }
    }

    /// The link count the union shows for the file of index entry `entry` (its upper
    /// inode's stat `st`), from its `nlink` xattr, as the kernel counts it.
    pub(crate) fn union_nlink(&self, entry: &OsStr, st: &Stat) -> Option<u64> {
        let dir = self.index()?.fd();
        let nlink = Nlink::decode(&self.nlink_value(dir, entry)?)?;
        let lower = match nlink {
            Nlink::Upper(_) => 0,
            Nlink::Lower(_) => {
                origin::find(&self.layers, &self.origin_value(dir, entry)?)?
                    .st
                    .st_nlink
            }
        };
        let n = nlink.count(st.st_nlink, lower);
        if n.is_none() {
            log::warn!("bad union link count on index entry {entry:?}");
        }
        n
    }

    fn nlink_value(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
        XattrTarget::at(dir, name)
            .ok()?
            .get_if_any(&xattr_name(self.cfg.xattr_ns, "nlink"))
            .ok()
            .flatten()
    }

    /// Records the union link count `count` of the object `dir/name` relative to its
    /// upper inode's `upper` links (or, `lower` given, to the lower's).
    pub(crate) fn set_union_nlink(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        count: u64,
        upper: u64,
        lower: Option<u64>,
    ) -> io::Result<()> {
        let v = match lower {
            Some(l) => Nlink::Lower(count as i64 - l as i64),
            None => Nlink::Upper(count as i64 - upper as i64),
        };
        XattrTarget::at(dir, name)?.set(
            &xattr_name(self.cfg.xattr_ns, "nlink"),
            v.encode().as_bytes(),
            0,
        )
    }

    /// Links the indexed file `from_dir/from_name` (any of its upper names, or its index
    /// entry) as `to_dir/to_name`, a lower name of it (the lower inode having
    /// `lower_nlink` links) getting its upper name: the union count does not change, so it
    /// is recorded relative to the lower first and to the upper after, as the kernel does.
    pub(crate) fn link_up(
        &self,
        (from_dir, from_name): (BorrowedFd<'_>, &OsStr),
        (to_dir, to_name): (BorrowedFd<'_>, &OsStr),
        lower_nlink: u64,
    ) -> io::Result<()> {
        let _counting = self.index().map(|i| i.counting());
        let st = sys::fstatat(from_dir, from_name)?;
        let count = self
            .nlink_value(from_dir, from_name)
            .and_then(|v| Nlink::decode(&v))
            .and_then(|n| n.count(st.st_nlink, lower_nlink))
            .unwrap_or(lower_nlink);
        self.set_union_nlink(from_dir, from_name, count, st.st_nlink, Some(lower_nlink))?;
        if let Err(e) = sys::linkat(from_dir, from_name, to_dir, to_name) {
            self.set_union_nlink(from_dir, from_name, count, st.st_nlink, None)?;
            return Err(e);
        }
        self.set_union_nlink(from_dir, from_name, count, st.st_nlink + 1, None)
    }

    /// After an upper name of the indexed file with index entry `entry` went (its upper
    /// link and its union count went down together): where no name of the union is left,
    /// the entry goes too, as on the kernel. Where upper names are left though the count
    /// says none (a lower link added under the mount), the count is set from them
    /// instead, as the kernel does. The caller holds `Index::counting`.
    pub(crate) fn index_name_gone(&self, entry: &OsStr) {
        let Some(index) = self.index() else {
            return;
        };
        let Ok(st) = sys::fstatat(index.fd(), entry) else {
            return;
        };
        let nlink = self
            .nlink_value(index.fd(), entry)
            .and_then(|v| Nlink::decode(&v));
        match nlink {
            Some(Nlink::Upper(d)) if st.st_nlink as i64 + d <= 0 => {}
            _ => return,
        }
        let r = if st.st_nlink == 1 {
            sys::unlinkat(index.fd(), entry, false)
        } else {
            log::warn!("index entry {entry:?} still linked with no union name left");
            self.set_union_nlink(index.fd(), entry, st.st_nlink - 1, st.st_nlink, None)
        };
        if let Err(e) = r {
            log::warn!("cleaning index entry {entry:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlink_reads_and_writes_as_the_kernel() {
        assert_eq!(Nlink::decode(b"U+2"), Some(Nlink::Upper(2)));
        assert_eq!(Nlink::decode(b"L-1"), Some(Nlink::Lower(-1)));
        assert_eq!(Nlink::decode(b"U+0"), Some(Nlink::Upper(0)));
        assert_eq!(Nlink::decode(b"U2"), None);
        assert_eq!(Nlink::decode(b"X+1"), None);
        assert_eq!(Nlink::decode(b""), None);
        assert_eq!(Nlink::Upper(0).encode(), "U+0");
        assert_eq!(Nlink::Upper(-3).encode(), "U-3");
        assert_eq!(Nlink::Lower(4).encode(), "L+4");
        assert_eq!(Nlink::Upper(1).count(2, 9), Some(3));
        assert_eq!(Nlink::Lower(-1).count(2, 3), Some(2));
        assert_eq!(Nlink::Upper(-1).count(1, 0), None);
    }

    #[test]
    fn entry_names_are_the_hex_of_the_origin() {
        // The kernel's index entry for an ext4 file (null UUID, FILEID_INO32_GEN).
        let kernel = "00fb1d00010000000000000000000000000000000061e39b00b228a917";
        let origin = entry_origin(OsStr::new(kernel)).unwrap();
        assert_eq!(origin.len(), 29);
        assert_eq!(entry_name(&origin), kernel);
        assert!(entry_origin(OsStr::new("00fb")).is_none());
        assert!(entry_origin(OsStr::new(&kernel[1..])).is_none());
        assert!(entry_origin(OsStr::new("#lfs1.2")).is_none());
    }
}
