//! Copy-up origins (`trusted.overlay.origin`, `user.overlay.origin` where trusted xattrs
//! are not allowed) and impure directories, in kernel overlayfs's on-disk format.
//!
//! A copy-up records the file handle of the lower object it copied, so the copy keeps
//! showing the lower's inode number, also after a remount, as on the kernel. The value is
//! the kernel's `ovl_fb`: version 0, magic 0xfb, its length, flags, the handle type, the
//! lower filesystem's UUID, then the handle. The upper parent of every copy-up is marked
//! `impure` (`y`): some entries there show another inode number than their own.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::inode::Ino;
use crate::layers::{Layer, LayerId, Layers};
use crate::sys::{self, FileHandle, XattrTarget};
use crate::union::LayerFs;
use crate::whiteout::XattrNs;

const VERSION: u8 = 0;
const MAGIC: u8 = 0xfb;
/// version, magic, len, flags, type.
const HEADER: usize = 5;
/// The handle was encoded on a big-endian machine.
const FLAG_BIG_ENDIAN: u8 = 1 << 0;
/// The handle decodes on machines of either byte order.
const FLAG_ANY_ENDIAN: u8 = 1 << 1;
/// The handle names an upper object (the index directory's `upper` xattr).
const FLAG_PATH_UPPER: u8 = 1 << 2;
/// The kernel's `OVL_FH_FLAG_ALL`.
const FLAG_ALL: u8 = 0x7;

pub(crate) fn xattr_name(ns: XattrNs, what: &str) -> std::ffi::OsString {
    let prefix = match ns {
        XattrNs::Trusted => "trusted.overlay.",
        XattrNs::User => "user.overlay.",
    };
    format!("{prefix}{what}").into()
}

/// A decoded origin: the lower filesystem's UUID and the object's handle on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub uuid: [u8; 16],
    pub handle: FileHandle,
    /// The handle is of an upper object (flagged so, as the kernel flags them).
    pub upper: bool,
}

impl Origin {
    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER + 16 + self.handle.bytes.len();
        let mut flags = if cfg!(target_endian = "big") {
            FLAG_BIG_ENDIAN
        } else {
            0
        };
        if self.upper {
            flags |= FLAG_PATH_UPPER;
        }
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&[VERSION, MAGIC, len as u8, flags, self.handle.kind as u8]);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.handle.bytes);
        v
    }

    /// The origin in `v`, if it is one the kernel would accept from this machine.
    pub fn decode(v: &[u8]) -> Option<Origin> {
        if v.len() < HEADER + 16 || v.len() > usize::from(u8::MAX) {
            return None;
        }
        let (version, magic, len, flags, kind) = (v[0], v[1], v[2], v[3], v[4]);
        let ours = if cfg!(target_endian = "big") {
            FLAG_BIG_ENDIAN
        } else {
            0
        };
        let endian_ok = flags & FLAG_ANY_ENDIAN != 0 || flags & FLAG_BIG_ENDIAN == ours;
        if version != VERSION
            || magic != MAGIC
            || usize::from(len) != v.len()
            || flags & !FLAG_ALL != 0
            || !endian_ok
        {
            return None;
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&v[HEADER..HEADER + 16]);
        Some(Origin {
            uuid,
            handle: FileHandle {
                kind: i32::from(kind),
                bytes: v[HEADER + 16..].to_vec(),
            },
            upper: flags & FLAG_PATH_UPPER != 0,
        })
    }
}

/// What an origin leads to: the lower object's layer, real inode number and kind/links.
pub struct Found {
    pub layer: LayerId,
    pub st: sys::Stat,
}

/// The origin value naming the object `dir/name` of `layer` (flagged as an upper one
/// when `upper`), where its filesystem makes file handles and says its UUID (else there
/// is none, as on the kernel).
pub(crate) fn encode_for(
    layer: &Layer,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    upper: bool,
) -> Option<Vec<u8>> {
    let uuid = layer.uuid?;
    match sys::name_to_handle_at(dir, name) {
        Ok(handle) if handle.kind >= 0 && handle.kind <= 0xff => Some(
            Origin {
                uuid,
                handle,
                upper,
            }
            .encode(),
        ),
        Ok(_) => None,
        Err(e) => {
            log::debug!("no file handle for {name:?}: {e}");
            None
        }
    }
}

/// The lower object the origin `value` leads to, if it decodes on one of `layers`.
pub(crate) fn find(layers: &Layers, value: &[u8]) -> Option<Found> {
    let origin = Origin::decode(value)?;
    let layer = layers
        .all_lowers()
        .iter()
        .find(|l| l.uuid == Some(origin.uuid))?;
    let fd = match layer.open_handle(&origin.handle) {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("an origin does not decode: {e}");
            return None;
        }
    };
    let st = sys::fstat(fd.as_fd()).ok()?;
    Some(Found {
        layer: layer.id,
        st,
    })
}

impl LayerFs {
    /// The origin value for the lower object `dir/name` of `layer` (see [`encode_for`]).
    pub(crate) fn origin_of(
        &self,
        layer: LayerId,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Option<Vec<u8>> {
        encode_for(self.layers.get(layer), dir, name, false)
    }

    /// Records `origin` on the object `dir/name` being built in the work directory.
    pub(crate) fn set_origin(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        origin: &[u8],
    ) -> io::Result<()> {
        XattrTarget::at(dir, name)?.set(&xattr_name(self.cfg.xattr_ns, "origin"), origin, 0)
    }

    /// Marks the upper directory `dir` impure, as the kernel does before an entry in it
    /// shows a number other than its own (a failure to is no error, as there).
    pub(crate) fn mark_impure(&self, dir: BorrowedFd<'_>) {
        let target = match XattrTarget::at(dir, OsStr::new(".")) {
            Ok(t) => t,
            Err(_) => return,
        };
        let name = xattr_name(self.cfg.xattr_ns, "impure");
        if target.get(&name).is_ok_and(|v| v == b"y") {
            return;
        }
        if let Err(e) = target.set(&name, b"y", 0) {
            log::debug!("cannot mark a directory impure: {e}");
        }
    }

    /// Before the upper object `dir/name` gets a name in the upper directory `to` (a
    /// link, or a move to another directory): `to` is marked impure if the object
    /// records an origin, as the kernel does.
    pub(crate) fn impure_for(&self, dir: BorrowedFd<'_>, name: &OsStr, to: BorrowedFd<'_>) {
        let has = XattrTarget::at(dir, name)
            .and_then(|t| t.get(&xattr_name(self.cfg.xattr_ns, "origin")))
            .is_ok();
        if has {
            self.mark_impure(to);
        }
    }

    /// Whether the upper directory `dir` is marked impure.
    pub(crate) fn is_impure(&self, dir: BorrowedFd<'_>) -> bool {
        XattrTarget::at(dir, OsStr::new("."))
            .and_then(|t| t.get(&xattr_name(self.cfg.xattr_ns, "impure")))
            .is_ok_and(|v| v == b"y")
    }

    /// The origin value the upper object `dir/name` records, if any.
    pub(crate) fn origin_value(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
        XattrTarget::at(dir, name)
            .ok()?
            .get(&xattr_name(self.cfg.xattr_ns, "origin"))
            .ok()
    }

    /// The number an upper object `dir/name` with real inode number `st_ino` and type
    /// `kind` (`S_IFMT` bits) shows: the one it was given in this mount, else its origin's
    /// when that is a file with one link or an indexed file, or a directory (with all
    /// layers on one filesystem, or xino), as the kernel shows them, else its own.
    pub(crate) fn upper_number(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st_ino: u64,
        kind: u32,
    ) -> Ino {
        if let Some(n) = self.numbers.kept(st_ino) {
            return n;
        }
        // As the kernel: a non-directory always shows its origin's number (mapped to the
        // origin's layer), a directory only where numbers of all layers are comparable
        // (one filesystem, or xino).
        if (kind != libc::S_IFDIR || self.layers.same_fs() || self.cfg.xino)
            && let Some(value) = self.origin_value(dir, name)
            && let Some(found) = find(&self.layers, &value)
            && found.st.st_mode & libc::S_IFMT == kind
            && (kind == libc::S_IFDIR
                || found.st.st_nlink == 1
                || self.indexed_as(&value, st_ino).is_some())
        {
            let n = self.ino_for(found.layer, found.st.st_ino);
            self.numbers.keep(st_ino, n);
            return n;
        }
        self.ino_for(0, st_ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_kernel_wrote_it() {
        // A kernel overlayfs origin for an ext4 file (null filesystem UUID, FILEID_INO32_GEN).
        let kernel = [
            0x00, 0xfb, 0x1d, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x62,
            0x00, 0xa3, 0x00, 0xfe, 0x47, 0x59, 0xac,
        ];
        let o = Origin::decode(&kernel).unwrap();
        assert_eq!(o.handle.kind, 1);
        assert_eq!(
            o.handle.bytes,
            [0x62, 0x00, 0xa3, 0x00, 0xfe, 0x47, 0x59, 0xac]
        );
        assert_eq!(o.uuid, [0; 16]);
        assert_eq!(o.encode(), kernel);
        let mut bad = kernel;
        bad[1] = 0xfa;
        assert!(Origin::decode(&bad).is_none());
        assert!(Origin::decode(&kernel[..20]).is_none());
        let mut short = kernel.to_vec();
        short.pop();
        assert!(Origin::decode(&short).is_none());
    }
}
