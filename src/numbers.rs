//! The inode numbers the mount shows: the one place that makes, keeps and drops them.
//!
//! With every layer on one filesystem an object shows its real inode number, as on kernel
//! overlayfs (the numbers are unique across the layers already). Otherwise its number packs
//! the index of its layer's filesystem (among the distinct filesystems of the layers) into
//! the high 16 bits and its real inode number into the low 48, so numbers are unique across
//! layers, stable for the mount's life and shared by hard links; under `xino=on|auto` it is
//! the kernel's xino number instead: the real number with the filesystem's index (0 for
//! the upper's) in the top bits, below them one bit that marks the fresh numbers. A real
//! number that does not fit (or is 1, the FUSE root's) gets a fresh one on first sight. An upper object
//! may show another number than its own: a copy keeps the number its lower showed, and an
//! upper object reusing the real number of a deleted object that the kernel still holds
//! gets a fresh one (the kernel must never see one number stand for two objects). Those
//! upper numbers are kept until the object's last name goes.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::inode::Ino;
use crate::layers::LayerId;

const INO_BITS: u32 = 48;

/// The numbering of one mount.
#[derive(Debug)]
pub struct InoNumbers {
    /// The filesystem index of each layer, by [`LayerId`].
    fs_of: Vec<u64>,
    /// Whether layer 0 is the upper.
    has_upper: bool,
    /// Every layer is on one filesystem: real numbers are shown as they are.
    same_fs: bool,
    /// Under xino: the kernel's `xinoshift` (64 minus its xino bits); the filesystem index
    /// goes above bit `shift`, fresh numbers set bit `shift`.
    xino_shift: Option<u32>,
    /// Numbers given to (filesystem, real number) pairs that do not fit the packed form.
    overflow: DashMap<(u64, u64), Ino>,
    next_fresh: AtomicU64,
    /// Upper real inode number → the number the mount shows for it, where it differs
    /// from the packed one.
    upper_kept: DashMap<u64, Ino>,
}

impl InoNumbers {
    /// The numbering for layers whose filesystems have the indexes `fs_of` (by layer);
    /// layer 0 is the upper if `has_upper`.
    pub fn new(fs_of: Vec<u64>, has_upper: bool) -> Self {
        Self::with_xino(fs_of, has_upper, false)
    }

    /// The same, with the kernel's xino numbers (`xino=on|auto`) where the layers span
    /// filesystems.
    pub fn with_xino(fs_of: Vec<u64>, has_upper: bool, xino: bool) -> Self {
        let same_fs = fs_of.iter().all(|&f| f == 0);
        // The kernel numbers filesystems from 0, the upper's (kept even without an upper),
        // and uses ilog2(count - 1) + 2 bits.
        let fs_of: Vec<u64> = if has_upper || !xino {
            fs_of
        } else {
            fs_of.iter().map(|f| f + 1).collect()
        };
        let count = fs_of.iter().max().map_or(1, |m| m + 1);
        let xino_shift = (xino && !same_fs).then(|| 64 - ((count - 1).ilog2() + 2));
        let fresh = match xino_shift {
            Some(shift) => 1 << shift,
            None => 0xffff << INO_BITS,
        };
        InoNumbers {
            same_fs,
            xino_shift,
            fs_of,
            has_upper,
            overflow: DashMap::new(),
            next_fresh: AtomicU64::new(fresh),
            upper_kept: DashMap::new(),
        }
    }

    /// A number no object of any layer packs to.
    fn fresh(&self) -> Ino {
        self.next_fresh.fetch_add(1, Ordering::Relaxed)
    }

    /// The packed number of real inode `st_ino` in `layer`.
    fn packed(&self, layer: LayerId, st_ino: u64) -> Ino {
        let fs = self.fs_of[usize::from(layer)];
        if self.same_fs && st_ino > 1 && st_ino < (0xffff << INO_BITS) {
            return st_ino;
        }
        if let Some(shift) = self.xino_shift {
            if st_ino >> shift == 0 && (st_ino > 1 || fs > 0) {
                return st_ino | (fs << (shift + 1));
            }
            return *self
                .overflow
                .entry((fs, st_ino))
                .or_insert_with(|| self.fresh());
        }
        if !self.same_fs && st_ino < (1 << INO_BITS) && fs < 0xfffe {
            return ((fs + 1) << INO_BITS) | st_ino;
        }
        *self
            .overflow
            .entry((fs, st_ino))
            .or_insert_with(|| self.fresh())
    }

    /// The number the mount shows for real inode `st_ino` of `layer`. `held_deleted(n)`
    /// says whether the kernel still holds number `n` for an object that is gone.
    pub fn shown(&self, layer: LayerId, st_ino: u64, held_deleted: impl Fn(Ino) -> bool) -> Ino {
        if !(self.has_upper && layer == 0) {
            return self.packed(layer, st_ino);
        }
        if let Some(n) = self.upper_kept.get(&st_ino) {
            return *n;
        }
        let n = self.packed(layer, st_ino);
        if held_deleted(n) {
            return *self
                .upper_kept
                .entry(st_ino)
                .or_insert_with(|| self.fresh());
        }
        n
    }

    /// The number kept for the upper object with real number `upper_ino`, if any.
    pub fn kept(&self, upper_ino: u64) -> Option<Ino> {
        self.upper_kept.get(&upper_ino).map(|n| *n)
    }

    /// The upper object with real number `upper_ino` (a copy, before it gets its name)
    /// shows `ino` from now on.
    pub fn keep(&self, upper_ino: u64, ino: Ino) {
        self.upper_kept.insert(upper_ino, ino);
    }

    /// The upper object with real number `upper_ino` is gone (its last name went, or its
    /// copy-up failed): a new object reusing the real number gets a number of its own.
    pub fn release(&self, upper_ino: u64) {
        self.upper_kept.remove(&upper_ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_per_filesystem_and_kept_across_copy_up() {
        let n = InoNumbers::new(vec![0, 1, 0], true);
        let never = |_| false;
        assert_eq!(n.shown(1, 5, never), (2 << INO_BITS) | 5);
        assert_eq!(n.shown(2, 5, never), (1 << INO_BITS) | 5);
        assert_eq!(n.shown(0, 5, never), (1 << INO_BITS) | 5);
        n.keep(9, n.shown(1, 5, never));
        assert_eq!(n.shown(0, 9, never), (2 << INO_BITS) | 5);
        n.release(9);
        assert_eq!(n.shown(0, 9, never), (1 << INO_BITS) | 9);
    }

    #[test]
    fn big_and_reused_numbers_get_fresh_ones() {
        let n = InoNumbers::new(vec![0, 1], true);
        let big = n.shown(1, 1 << 50, |_| false);
        assert_eq!(big >> INO_BITS, 0xffff);
        assert_eq!(n.shown(1, 1 << 50, |_| false), big);
        let reused = n.shown(0, 7, |_| true);
        assert_ne!(reused, (1 << INO_BITS) | 7);
        assert_eq!(n.shown(0, 7, |_| false), reused, "kept until released");
        assert_ne!(reused, big);
    }

    #[test]
    fn xino_numbers_are_the_kernels() {
        // Upper on one filesystem, two lowers on two others: 3 filesystems, 3 xino bits.
        let n = InoNumbers::with_xino(vec![0, 1, 2], true, true);
        assert_eq!(n.shown(1, 2, |_| false), 0x4000_0000_0000_0002);
        assert_eq!(n.shown(2, 2, |_| false), 0x8000_0000_0000_0002);
        assert_eq!(n.shown(0, 0xaa88f5, |_| false), 0xaa88f5);
        let big = n.shown(1, 1 << 62, |_| false);
        assert_eq!(
            big >> 61,
            1,
            "fresh numbers have the bit below the fsid bits"
        );
        // Two filesystems: 2 bits; no upper: the lowers' filesystems count from 1.
        let two = InoNumbers::with_xino(vec![0, 1], true, true);
        assert_eq!(two.shown(1, 5, |_| false), (1 << 63) | 5);
        let ro = InoNumbers::with_xino(vec![0, 1], false, true);
        assert_eq!(ro.shown(0, 5, |_| false), (1 << 62) | 5);
        assert_eq!(ro.shown(1, 5, |_| false), (2 << 62) | 5);
        // One filesystem: real numbers, xino or not.
        let one = InoNumbers::with_xino(vec![0, 0], true, true);
        assert_eq!(one.shown(1, 5, |_| false), 5);
    }

    #[test]
    fn one_filesystem_shows_real_numbers() {
        let n = InoNumbers::new(vec![0, 0, 0], true);
        assert_eq!(n.shown(1, 5, |_| false), 5);
        assert_eq!(n.shown(0, 9, |_| false), 9);
        n.keep(9, 5);
        assert_eq!(n.shown(0, 9, |_| false), 5);
        assert_eq!(n.kept(9), Some(5));
        let one = n.shown(2, 1, |_| false);
        assert_eq!(one >> INO_BITS, 0xffff, "1 is the FUSE root's");
        let reused = n.shown(0, 7, |_| true);
        assert_ne!(reused, 7);
    }
}
