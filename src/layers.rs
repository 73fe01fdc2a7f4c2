//! The layer stack: one optional writable upper and the read-only lowers, each held by an
//! `O_PATH` fd of its root. Every access to a layer goes through [`Layer::open`], which is
//! confined beneath that root and never follows a symlink.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::statoverride::OverrideXattr;
use crate::sys;

/// The position of a layer in the stack: 0 is the upper when there is one, then the lowers
/// from the topmost down.
pub type LayerId = u16;

/// The kernel overlayfs limit on the number of lower layers.
pub const MAX_LOWERS: usize = 500;

/// The longest relative path [`Layer::open`] hands the kernel in one call (below PATH_MAX).
const PIECE: usize = 2048;

const CONFINED: u64 = sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS;

/// Opens `rel` below the directory `at`, confined beneath it: no symlink is followed, not
/// even as the last component. A path longer than the kernel takes in one call (PATH_MAX)
/// is walked in pieces.
pub fn open_beneath(at: BorrowedFd<'_>, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW;
    if rel.as_os_str().len() < PIECE {
        return sys::openat2(at, rel, flags, 0, CONFINED);
    }
    let mut dir: Option<OwnedFd> = None;
    let mut piece = PathBuf::new();
    for c in rel.iter() {
        if !piece.as_os_str().is_empty() && piece.as_os_str().len() + c.len() + 1 >= PIECE {
            let from = dir.as_ref().map_or(at, |d| d.as_fd());
            let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            dir = Some(sys::openat2(from, &piece, dir_flags, 0, CONFINED)?);
            piece.clear();
        }
        piece.push(c);
    }
    let from = dir.as_ref().map_or(at, |d| d.as_fd());
    sys::openat2(from, &piece, flags, 0, CONFINED)
}

/// One directory of the stack.
#[derive(Debug)]
pub struct Layer {
    pub id: LayerId,
    pub path: PathBuf,
    root: OwnedFd,
    pub dev: u64,
    /// Index of this layer's filesystem among the distinct ones (see `fs_indexes`).
    fs_index: u64,
    /// Where this layer keeps owner/mode overrides, if it does.
    pub stat_override: Option<OverrideXattr>,
    /// The UUID of the layer's filesystem (all zeros where it has none), as copy-up
    /// origins record it; `None` where the kernel does not say.
    pub uuid: Option<[u8; 16]>,
    /// A readable fd of the root, opened when first needed: what `open_by_handle_at`
    /// takes to name the filesystem (it refuses `O_PATH` fds).
    readable_root: std::sync::OnceLock<Option<OwnedFd>>,
    /// For the upper under relatime/strictatime: the root of a private clone of its mount
    /// without atime flags (see [`sys::clone_mount_all_atimes`]), made when first asked
    /// for; `None` where this process may not clone mounts.
    access_root: std::sync::OnceLock<Option<OwnedFd>>,
}

impl Layer {
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Whether reads of this layer's objects can record accesses whatever the atime flags
    /// of the layer's own mount (through a private clone of it, as kernel overlayfs
    /// does); else the mount's flags limit them.
    pub fn records_every_access(&self) -> bool {
        self.access_root
            .get_or_init(|| match sys::clone_mount_all_atimes(self.root()) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::info!(
                        "access times of {} follow its mount's atime flags too \
                         (cloning the mount: {e})",
                        self.path.display()
                    );
                    None
                }
            })
            .is_some()
    }

    /// Records an access of this layer's object behind `fd` (a directory if `dir`): the
    /// object is read a little, through the private clone of the mount where there is one
    /// (reached by the object's file handle), else through `fd`'s own mount.
    pub fn touch(&self, fd: BorrowedFd<'_>, dir: bool) -> io::Result<()> {
        if let Some(Some(root)) = self.access_root.get() {
            let handle = sys::name_to_handle_at(fd, OsStr::new(""))?;
            let there = sys::open_by_handle_at(root.as_fd(), &handle)?;
            return sys::read_to_touch(there.as_fd(), dir);
        }
        sys::read_to_touch(fd, dir)
    }

    /// The object `handle` names on this layer's filesystem, as an `O_PATH` fd.
    pub fn open_handle(&self, handle: &sys::FileHandle) -> io::Result<OwnedFd> {
        let root = self
            .readable_root
            .get_or_init(|| sys::reopen(self.root(), libc::O_RDONLY | libc::O_DIRECTORY).ok());
        let root = root
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        sys::open_by_handle_at(root.as_fd(), handle)
    }

    /// Opens `rel` (relative to the layer root, "" for the root) confined beneath the root:
    /// no symlink is followed, not even as the last component.
    pub fn open(&self, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
        open_beneath(self.root(), rel, flags)
    }

    /// An `O_PATH` fd of the directory `rel` in this layer.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open(rel, libc::O_PATH | libc::O_DIRECTORY)
    }
}

/// All layers.
#[derive(Debug)]
pub struct Layers {
    layers: Vec<Layer>,
    has_upper: bool,
    /// The index of the first data-only layer (all of them are at the end).
    first_data: usize,
    /// Some layer keeps owner/mode overrides (fixed at open; asked on every xattr call).
    any_override: bool,
}

impl Layers {
    /// Opens every layer root. `upper` is `None` for a read-only union. Each layer keeps
    /// the owner/mode overrides its root announces; `upper_override` (from
    /// `xattr_permissions=`) sets the upper's.
    pub fn open(
        upper: Option<&Path>,
        lowers: &[PathBuf],
        data: &[PathBuf],
        upper_override: Option<OverrideXattr>,
    ) -> io::Result<Self> {
        let mut layers = Vec::new();
        let mut devs: HashMap<u64, u64> = HashMap::new();
        // A filesystem's UUID, asked once per filesystem.
        let mut uuids: HashMap<u64, Option<[u8; 16]>> = HashMap::new();
        let slash = std::fs::File::open("/")?;
        let all = upper
            .into_iter()
            .chain(lowers.iter().map(PathBuf::as_path))
            .chain(data.iter().map(PathBuf::as_path));
        for (i, path) in all.enumerate() {
            let root = sys::openat2(slash.as_fd(), path, libc::O_PATH | libc::O_DIRECTORY, 0, 0)?;
            let st = sys::fstat(root.as_fd())?;
            let next = devs.len() as u64;
            let fs_index = *devs.entry(st.st_dev).or_insert(next);
            let stat_override = match upper_override {
                Some(o) if i == 0 && upper.is_some() => Some(o),
                _ => OverrideXattr::detect(root.as_fd())?,
            };
            let uuid = *uuids
                .entry(st.st_dev)
                .or_insert_with(|| sys::fs_uuid(root.as_fd()).ok());
            layers.push(Layer {
                id: i as LayerId,
                path: path.to_path_buf(),
                root,
                dev: st.st_dev,
                fs_index,
                stat_override,
                uuid,
                readable_root: std::sync::OnceLock::new(),
                access_root: std::sync::OnceLock::new(),
            });
        }
        Ok(Layers {
            any_override: layers.iter().any(|l| l.stat_override.is_some()),
            first_data: layers.len() - data.len(),
            layers,
            has_upper: upper.is_some(),
        })
    }

    pub fn upper(&self) -> Option<&Layer> {
        if self.has_upper {
            self.layers.first()
        } else {
            None
        }
    }

    /// The upper layer, or EROFS for a read-only union.
    pub fn writable(&self) -> io::Result<&Layer> {
        self.upper()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))
    }

    /// Whether any layer keeps owner/mode overrides.
    pub fn any_override(&self) -> bool {
        self.any_override
    }

    pub fn is_upper(&self, id: LayerId) -> bool {
        self.has_upper && id == 0
    }

    /// The lower layers that merge into the namespace (data-only ones excluded).
    pub fn lowers(&self) -> &[Layer] {
        &self.layers[usize::from(self.has_upper)..self.first_data]
    }

    /// The data-only layers, topmost first: they only serve metacopy stubs' data.
    pub fn data_only(&self) -> &[Layer] {
        &self.layers[self.first_data..]
    }

    /// Every lower layer, data-only ones included (what origins may point into).
    pub fn all_lowers(&self) -> &[Layer] {
        &self.layers[usize::from(self.has_upper)..]
    }

    /// The merging lower layers below layer `id`, topmost first.
    pub fn below(&self, id: LayerId) -> impl Iterator<Item = LayerId> + use<> {
        let n = self.first_data;
        (usize::from(id) + 1..n).filter_map(|i| LayerId::try_from(i).ok())
    }

    pub fn get(&self, id: LayerId) -> &Layer {
        &self.layers[usize::from(id)]
    }

    /// Whether every layer is on one filesystem (inode numbers are then the real ones).
    pub fn same_fs(&self) -> bool {
        self.layers.iter().all(|l| l.fs_index == 0)
    }

    /// The topmost layer: the upper, or the first lower of a read-only union.
    pub fn top(&self) -> &Layer {
        &self.layers[0]
    }

    /// The index of each layer's filesystem among the distinct ones, by layer (what
    /// inode numbers are made of: `crate::numbers`).
    pub fn fs_indexes(&self) -> Vec<u64> {
        self.layers.iter().map(|l| l.fs_index).collect()
    }
}
