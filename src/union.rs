//! The union core: `LayerFs` and how a name is resolved through the layers. Lookups go
//! top-down (upper, then lowers in order); a non-directory hides everything below it,
//! directories merge until an opaque one, and a whiteout ends the search.
//!
//! Every operation returns `io::Result` carrying the errno the kernel would give; the FUSE
//! adapter only translates.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::creds::{CAP_FSETID, ProcessCreds};
use crate::dirfds::{DirFds, DirKey};
use crate::dirmerge::Presence;
use crate::handles::{HandleTable, OpenDir, OpenFile};
use crate::idmap::Owners;
use crate::inode::{Ino, Inode, InodeTable, LowerAt, Place, ROOT};
use crate::layers::{self, LayerId, Layers};
use crate::metacopy;
use crate::numbers::InoNumbers;
use crate::options::{Atime, Passthrough};
use crate::redirect::{self, RedirectDir};
use crate::sys::{self, Stat, XattrTarget};
use crate::whiteout::{self, SharedWhiteouts, WhiteoutFormat, XattrNs};
use crate::workdir::WorkDir;

/// A metacopy stub whose data no lower layer has: EIO, as on the kernel.
fn metacopy_without_data(name: &OsStr) -> io::Error {
    log::warn!("metacopy stub {name:?} has no lower data");
    errno(libc::EIO)
}

/// Behaviour switches fixed at mount time.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// The format of whiteouts and opaque markers written into the upper layer.
    pub whiteout: WhiteoutFormat,
    /// The namespace of overlay xattrs written into the upper layer.
    pub xattr_ns: XattrNs,
    /// Whether fsync reaches the upper filesystem (off for `volatile` / `fsync=0`).
    pub fsync: bool,
    /// How owners are shown and stored (`uidmapping=`, `squash_to_*`).
    pub owners: Owners,
    /// Whether extended attributes are served (off for `noxattrs=1`).
    pub xattrs: bool,
    /// When reads update the access time of upper objects (`noatime`, `relatime`,
    /// `strictatime`; the kernel leaves atime of a FUSE mount to the daemon).
    pub atime: Atime,
    /// `nodiratime`: listings leave a directory's access time alone.
    pub nodiratime: bool,
    /// Which files may be passed through to the kernel (FUSE passthrough); off for
    /// `passthrough=off`, under relatime/strictatime (whose reads the daemon must see)
    /// and where the kernel would refuse it.
    pub passthrough: Passthrough,
    /// Whether directory redirects are followed and written (`redirect_dir=`).
    pub redirect: RedirectDir,
    /// `metacopy=on`: metadata changes of lower files copy up only metadata; stubs that
    /// keep their data below are followed (refused, EPERM, when off, as on the kernel).
    pub metacopy: bool,
    /// `xino=on|auto`: the kernel's xino inode numbers where layers span filesystems.
    pub xino: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            whiteout: WhiteoutFormat::Overlay,
            xattr_ns: XattrNs::Trusted,
            fsync: true,
            owners: Owners::default(),
            xattrs: true,
            atime: Atime::Never,
            nodiratime: false,
            passthrough: Passthrough::Off,
            redirect: RedirectDir::Off,
            metacopy: false,
            xino: false,
        }
    }
}

/// Who makes a request: new objects belong to them.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    /// The filesystem gid.
    pub gid: u32,
    /// The calling thread, for what the request does not carry (see [`crate::creds`]).
    pub pid: u32,
    /// The caller's umask, applied by the daemon where no default ACL applies (the kernel
    /// leaves it to the daemon under FUSE_DONT_MASK).
    pub umask: u32,
}

impl Caller {
    /// Whether the caller may keep the setgid bit of an object owned by `uid`:`gid`: it is
    /// in the group or has `CAP_FSETID` over the object (the kernel's
    /// `in_group_or_capable`). A caller gone from /proc counts as root only.
    pub fn in_group_or_fsetid(&self, uid: u32, gid: u32) -> bool {
        self.gid == gid
            || match ProcessCreds::of(self.pid) {
                Some(c) => c.in_group(gid) || c.has_cap_over(CAP_FSETID, uid, gid),
                None => self.uid == 0,
            }
    }

    /// Whether the caller is in group `gid` (its filesystem gid or a supplementary one).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid
            || match ProcessCreds::of(self.pid) {
                Some(c) => c.in_group(gid),
                None => self.uid == 0,
            }
    }

    /// Whether the caller has `CAP_FSETID`.
    pub fn has_fsetid(&self) -> bool {
        match ProcessCreds::of(self.pid) {
            Some(c) => c.has_cap(CAP_FSETID),
            None => self.uid == 0,
        }
    }
}

/// The attributes the mount shows for an inode: the real object's stat with the union's
/// inode number and link count.
#[derive(Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    /// The FUSE generation of the inode number.
    pub generation: u64,
    pub st: Stat,
    /// The kernel must not cache the name this was looked up by: a name of an indexed
    /// file, whose copy-up links up the name it came through (see [`Inode::place`]: the
    /// last name looked up), so each path walk to it must reach the daemon.
    pub uncached_name: bool,
    /// The kernel must not keep these attributes: a passthrough handle that may write is
    /// open, and a write through its mapping moves the times unseen (see
    /// [`Inode::times_move_unseen`]), so each stat asks the daemon until it closes.
    pub times_unseen: bool,
}

/// The result of resolving one name in a directory.
pub(crate) enum Resolved {
    Found {
        st: Box<Stat>,
        place: Place,
    },
    Missing {
        /// The whiteout in the upper layer that hides the name, if any.
        upper_whiteout: Option<WhiteoutFormat>,
    },
}

pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

pub(crate) fn is_enoent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The union filesystem core. Each part owns its state and guards its invariants behind
/// its own methods; the operation modules (namespace, rename, fileops, copyup, dirmerge,
/// xattrs) call those parts and never reach into their tables.
pub struct LayerFs {
    /// The layer roots and confined access to them.
    pub(crate) layers: Layers,
    /// The inodes the kernel knows and their lookup counts (the only place that counts).
    inodes: InodeTable,
    /// Open file handles.
    pub(crate) files: HandleTable<OpenFile>,
    /// Open directory handles and their listings.
    pub(crate) dirs: HandleTable<OpenDir>,
    /// Where new objects and copies are built; `None` for a read-only union.
    pub(crate) work: Option<WorkDir>,
    /// What the mount options decided (read-only after mount).
    pub(crate) cfg: FsConfig,
    /// The inode numbers the mount shows.
    pub(crate) numbers: InoNumbers,
    /// Where overlay whiteouts are linked from.
    pub(crate) whiteouts: SharedWhiteouts,
    /// Directory fds by layer and inode, so requests resolve names from their parent.
    dirfds: DirFds,
    /// Whether new opens of upper files may pass through (cleared when the kernel cannot).
    passthrough: AtomicBool,
    /// Whether the kernel caches writes (FUSE writeback cache, taken where passthrough is
    /// not had): set once, at FUSE init, before any open.
    writeback: AtomicBool,
    /// The kernel's caches, once a FUSE session serves this core (unset when it runs alone).
    kernel: KernelSlot,
}

/// Where a node is found one step up in a layer (see [`LayerFs::parent_fd`]).
enum Base {
    /// In this directory fd, under this name.
    Dir(Arc<OwnedFd>, OsString),
    /// In this parent node's directory, under this name.
    InParent(Arc<Inode>, OsString),
}

/// Tells the kernel about what it may have cached that the daemon changed on its own.
pub trait KernelCache: Send + Sync {
    /// The attributes of `ino` changed behind the request that the kernel sent.
    fn attributes_changed(&self, ino: Ino);
}

/// Where the FUSE session puts its [`KernelCache`] once it is up.
pub type KernelSlot = Arc<OnceLock<Box<dyn KernelCache>>>;

impl LayerFs {
    /// A union over `layers`; `work` is required when there is an upper layer.
    pub fn new(layers: Layers, work: Option<WorkDir>, cfg: FsConfig) -> io::Result<Self> {
        let passthrough = cfg.passthrough != Passthrough::Off;
        if layers.upper().is_some() && work.is_none() {
            return Err(errno(libc::EINVAL));
        }
        let mut lowers = Vec::new();
        for l in layers.lowers() {
            lowers.push(l.id);
            if whiteout::is_opaque(l.root(), OsStr::new(""))? {
                break;
            }
        }
        let root = Place {
            lowers,
            ..Place::found(ROOT, OsStr::new(""), 0, layers.upper().is_some())
        };
        let numbers =
            InoNumbers::with_xino(layers.fs_indexes(), layers.upper().is_some(), cfg.xino);
        Ok(LayerFs {
            layers,
            inodes: InodeTable::new(root),
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            work,
            cfg,
            numbers,
            whiteouts: SharedWhiteouts::default(),
            dirfds: DirFds::default(),
            passthrough: AtomicBool::new(passthrough),
            writeback: AtomicBool::new(false),
            kernel: KernelSlot::default(),
        })
    }

    /// Whether new opens of upper files pass their data through to the kernel.
    pub fn passthrough_on(&self) -> bool {
        self.passthrough.load(Ordering::Acquire)
    }

    /// Whether the kernel caches writes and flushes them later (see the field).
    pub fn writeback_on(&self) -> bool {
        self.writeback.load(Ordering::Acquire)
    }

    /// The kernel caches writes from now on (said at FUSE init, before any open).
    pub fn enable_writeback(&self) {
        self.writeback.store(true, Ordering::Release);
    }

    /// No passthrough from now on (the kernel does not offer it or refused a file); logged
    /// once.
    pub fn disable_passthrough(&self) {
        if self.passthrough.swap(false, Ordering::AcqRel) {
            log::info!("passthrough off: file data goes through the daemon and the page cache");
        }
    }

    /// The slot for the kernel's caches; the daemon fills it once the session is up.
    pub fn kernel_slot(&self) -> KernelSlot {
        Arc::clone(&self.kernel)
    }

    /// Tells the kernel (if one is listening) that the attributes of `ino` changed.
    pub(crate) fn attributes_changed(&self, ino: Ino) {
        if let Some(k) = self.kernel.get() {
            k.attributes_changed(ino);
        }
    }

    pub(crate) fn node(&self, ino: Ino) -> io::Result<Arc<Inode>> {
        self.inodes.get(ino)
    }

    /// The node of the object `st` at `place`: the known one, or one the kernel is not
    /// told of (no lookup counted).
    pub(crate) fn node_for(&self, st: &Stat, place: Place) -> io::Result<Arc<Inode>> {
        let ino = self.ino_of(st, &place)?;
        Ok(self
            .inodes
            .existing_or_transient(ino, st.st_mode & libc::S_IFMT, place))
    }

    /// The node `ino` at `place`, handed to the kernel: one more lookup counted.
    pub(crate) fn remember(&self, ino: Ino, kind: u32, place: Place) -> Arc<Inode> {
        self.inodes.remember(ino, kind, place)
    }

    pub(crate) fn work(&self) -> io::Result<&WorkDir> {
        self.work.as_ref().ok_or_else(|| errno(libc::EROFS))
    }

    /// The inode number shown for the object with real inode `st_ino` in layer `layer`.
    pub(crate) fn ino_for(&self, layer: LayerId, st_ino: u64) -> Ino {
        self.numbers.shown(layer, st_ino, |n| {
            self.inodes.get(n).is_ok_and(|old| old.is_deleted())
        })
    }

    /// An `O_PATH` fd of the directory holding `node` in `layer`, and the node's name in it
    /// ("" for the root, whose fd is the layer root itself).
    pub(crate) fn parent_fd(
        &self,
        layer: LayerId,
        node: &Inode,
    ) -> io::Result<(Arc<OwnedFd>, OsString)> {
        match self.base_of(layer, node)? {
            Base::Dir(fd, name) => Ok((fd, name)),
            Base::InParent(parent, name) => Ok((self.dir_fd(layer, &parent)?, name)),
        }
    }

    /// Where `node` (not the root) is found in `layer` one step up: an fd that needs no
    /// walk (the index, a redirect's path from the layer root), or its parent node.
    fn base_of(&self, layer: LayerId, node: &Inode) -> io::Result<Base> {
        if node.ino == ROOT {
            return Ok(Base::Dir(self.dir_fd(layer, node)?, OsString::new()));
        }
        // An indexed file is its index entry in the upper, whichever its names are.
        if self.layers.is_upper(layer)
            && let Some(index) = self.index()
            && let Some(entry) = node.index_entry()
        {
            return Ok(Base::Dir(index.shared_fd(), entry));
        }
        let (parent, at) = node.located(layer).ok_or_else(|| errno(libc::ENOENT))?;
        match at {
            LowerAt::Name(n) => Ok(Base::InParent(self.node(parent)?, n)),
            LowerAt::Path(p) => {
                let (fd, n) = self.layer_path_base(layer, &p)?;
                Ok(Base::Dir(fd, n))
            }
        }
    }

    /// An `O_PATH` fd of directory `dir`'s object in `layer` (ENOENT where the layer has
    /// none): from the cache, else opened by name from its nearest cached ancestor (see
    /// `dirfds`). The walk up is a loop, so a tree of any depth is reached on a bounded
    /// stack; see [`Self::open_down`] for what the walk down keeps.
    pub(crate) fn dir_fd(&self, layer: LayerId, dir: &Inode) -> io::Result<Arc<OwnedFd>> {
        // The directories still to open, `dir` first, each with its name in its parent.
        let mut below: Vec<(DirKey, OsString)> = Vec::new();
        let mut held: Option<Arc<Inode>> = None;
        let from = loop {
            let cur = held.as_deref().unwrap_or(dir);
            let key = (layer, cur.ino, cur.serial(), cur.generation());
            if let Some(fd) = self.dirfds.get(&key) {
                if below.is_empty() {
                    return Ok(fd);
                }
                break fd;
            }
            if cur.ino == ROOT {
                let fd = self.layers.get(layer).open_dir(Path::new(""))?;
                let fd = self.dirfds.insert(key, fd);
                if below.is_empty() {
                    return Ok(fd);
                }
                break fd;
            }
            match self.base_of(layer, cur)? {
                Base::Dir(pfd, name) => {
                    below.push((key, name));
                    break pfd;
                }
                Base::InParent(parent, name) => {
                    below.push((key, name));
                    held = Some(parent);
                }
            }
        };
        self.open_down(layer, from, below)
    }

    /// Opens the directories of `below` (the deepest first, each with its name in the next)
    /// down from `from`, the fd of the directory above the last of them, and returns the
    /// deepest's fd. Only the deepest and those 2, 4, 8, ... levels above it are opened one
    /// by one and kept in the cache (the rest is passed over within one openat2 of their
    /// path), so a long walk leaves a short ladder in the cache instead of flushing it,
    /// and walking up a deep tree one level at a time stays linear.
    fn open_down(
        &self,
        layer: LayerId,
        mut from: Arc<OwnedFd>,
        below: Vec<(DirKey, OsString)>,
    ) -> io::Result<Arc<OwnedFd>> {
        let mut path = PathBuf::new();
        for (i, (key, name)) in below.into_iter().enumerate().rev() {
            path.push(name);
            if i != 0 && !i.is_power_of_two() {
                continue;
            }
            let fd = layers::open_beneath(from.as_fd(), &path, libc::O_PATH | libc::O_DIRECTORY)?;
            path.clear();
            from = self.keep_dir_fd(layer, key, fd)?;
        }
        Ok(from)
    }

    /// Keeps `fd` as the object of `key` in `layer`, unless the upper shows another object
    /// there for a moment (a rename racing with this request): then it is used once.
    fn keep_dir_fd(&self, layer: LayerId, key: DirKey, fd: OwnedFd) -> io::Result<Arc<OwnedFd>> {
        if self.layers.is_upper(layer) {
            let st = sys::fstat(fd.as_fd())?;
            if self.ino_for(layer, st.st_ino) != key.1 {
                return Ok(Arc::new(fd));
            }
        }
        Ok(self.dirfds.insert(key, fd))
    }

    /// Whether a stub found in the upper (`upper`) or in a lower may be followed: an upper
    /// one only under metacopy=on, as on the kernel (data-only layers alone allow only the
    /// lower ones that point into them).
    fn stub_allowed(&self, upper: bool) -> bool {
        self.cfg.metacopy || (!upper && !self.layers.data_only().is_empty())
    }

    /// The data of a stub redirected to the path `at` (a `LowerAt::Path`), from the first
    /// data-only layer holding a regular file there.
    fn data_only_lookup(
        &self,
        parent: &Inode,
        at: &LowerAt,
    ) -> io::Result<Option<(LayerId, Stat)>> {
        for layer in self.layers.data_only() {
            let (dir, leaf) = match self.lookup_base(layer.id, parent, at) {
                Ok(d) => d,
                Err(e) if is_enoent(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            match sys::fstatat(dir.as_fd(), &leaf) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                    return Ok(Some((layer.id, st)));
                }
                Ok(_) => continue,
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Takes redirect `r`, found in layer `lid` (the `i`th of `layers`), for the lookups
    /// below: where they look (`at`), and for an absolute one which layers (every layer
    /// below `lid`, from its root).
    fn follow_redirect(
        &self,
        layers: &mut Vec<LayerId>,
        i: usize,
        lid: LayerId,
        at: &mut LowerAt,
        r: &OsStr,
    ) {
        *at = redirect::follow(at, r);
        if redirect::is_absolute(r) {
            layers.truncate(i);
            layers.extend(self.layers.below(lid));
        }
    }

    /// The directory of `layer` to look a name up in, and the name, for a lookup in
    /// `parent` that is at `at` in that layer.
    pub(crate) fn lookup_base(
        &self,
        layer: LayerId,
        parent: &Inode,
        at: &LowerAt,
    ) -> io::Result<(Arc<OwnedFd>, OsString)> {
        match at {
            LowerAt::Name(n) => Ok((self.dir_fd(layer, parent)?, n.clone())),
            LowerAt::Path(p) => self.layer_path_base(layer, p),
        }
    }

    /// The parent directory of `path` in `layer` (an `O_PATH` fd) and its last name.
    fn layer_path_base(&self, layer: LayerId, path: &Path) -> io::Result<(Arc<OwnedFd>, OsString)> {
        let leaf = path.file_name().ok_or_else(|| errno(libc::EINVAL))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let fd = self.layers.get(layer).open_dir(dir)?;
        Ok((Arc::new(fd), leaf.to_os_string()))
    }

    /// Where `node`'s object in `layer` is reached: as [`Self::parent_fd`], or for an
    /// unlinked node an open handle's fd (on that layer) with the name "".
    pub(crate) fn object_fd(
        &self,
        layer: LayerId,
        node: &Inode,
    ) -> io::Result<(Arc<OwnedFd>, OsString)> {
        let place = node.place();
        // An indexed file's index entry outlives the names the mount knew.
        let indexed = self.layers.is_upper(layer)
            && place.index.as_ref().is_some_and(|e| {
                self.index()
                    .is_some_and(|i| sys::fstatat(i.fd(), e).is_ok())
            });
        if !place.unlinked || indexed {
            return self.parent_fd(layer, node);
        }
        if let Some((l, fd)) = &place.held
            && *l == layer
        {
            return Ok((Arc::new(fd.as_fd().try_clone_to_owned()?), OsString::new()));
        }
        let upper = self.layers.is_upper(layer);
        let h = self
            .files
            .find(|h| h.node.ino == node.ino && h.on_upper() == upper)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let fd = h.file().as_fd().try_clone_to_owned()?;
        Ok((Arc::new(fd), OsString::new()))
    }

    /// Resolves `name` in the directory `parent` through the layers.
    pub(crate) fn resolve(&self, parent: &Inode, name: &OsStr) -> io::Result<Resolved> {
        self.resolve_where(parent, name, None)
    }

    /// As [`Self::resolve`], passing over the layers that a current listing of `parent`
    /// showed not to hold `name` (while the name is looked for as itself, before any
    /// redirect moves the lookup elsewhere).
    fn resolve_where(
        &self,
        parent: &Inode,
        name: &OsStr,
        presence: Option<Presence>,
    ) -> io::Result<Resolved> {
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if !parent.is_dir() {
            return Err(errno(libc::ENOTDIR));
        }
        let pplace = parent.place();
        let mut found: Option<(Stat, Place)> = None;
        let mut upper_whiteout = None;
        let mut layers: Vec<LayerId> = pplace.layers().collect();
        // Where the next layer holds the name: changed by the redirects met on the way.
        let mut at = LowerAt::Name(name.to_os_string());
        // A metacopy stub was found and its data is looked for below.
        let mut wants_data = false;
        let mut i = 0;
        while i < layers.len() {
            let lid = layers[i];
            i += 1;
            if let Some(p) = &presence
                && p.rules_out(lid)
                && matches!(&at, LowerAt::Name(n) if n == name)
            {
                continue;
            }
            let (dir, leaf) = match self.lookup_base(lid, parent, &at) {
                Ok(d) => d,
                // A name too long for the layer (a crafted redirect, say) is not there, as
                // the kernel's lookup has it.
                Err(e) if is_enoent(&e) || e.raw_os_error() == Some(libc::ENAMETOOLONG) => continue,
                Err(e) => return Err(e),
            };
            let st = match sys::fstatat(dir.as_fd(), &leaf) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => continue,
                Err(e) if is_enoent(&e) => {
                    if whiteout::has_aufs_whiteout(dir.as_fd(), &leaf)? {
                        if found.is_none() && self.layers.is_upper(lid) {
                            upper_whiteout = Some(WhiteoutFormat::Aufs);
                        }
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if whiteout::is_whiteout(&st) {
                if found.is_none() && self.layers.is_upper(lid) {
                    upper_whiteout = Some(WhiteoutFormat::Overlay);
                }
                break;
            }
            let upper = self.layers.is_upper(lid);
            if wants_data && let Some((shown, place)) = &mut found {
                // Below a metacopy stub: its data, a regular file (itself a stub in a lower
                // that was once an upper: followed further down).
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(metacopy_without_data(name));
                }
                if metacopy::is_stub(dir.as_fd(), &leaf, self.cfg.xattr_ns)? {
                    if let Some(r) = redirect::read(dir.as_fd(), &leaf, self.cfg.xattr_ns)? {
                        self.follow_redirect(&mut layers, i, lid, &mut at, &r);
                    }
                    continue;
                }
                place.push_lower(lid, at.clone());
                shown.st_blocks = st.st_blocks;
                wants_data = false;
                break;
            }
            let place = match &mut found {
                None => {
                    let mut st = st;
                    self.apply_override(lid, || XattrTarget::at(dir.as_fd(), &leaf), &mut st)?;
                    let mut place = Place::found(parent.ino, name, lid, upper);
                    if !upper && at != LowerAt::Name(name.to_os_string()) {
                        place.lower_at = vec![at.clone()];
                    }
                    &mut found.insert((st, place)).1
                }
                Some((_, place)) => {
                    if !is_dir(&st) {
                        break;
                    }
                    place.push_lower(lid, at.clone());
                    place
                }
            };
            if !is_dir(&st) {
                // Every regular file is checked, as the kernel checks: a stub where stubs
                // cannot be followed (a crafted layer) is refused, EPERM.
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && metacopy::is_stub(dir.as_fd(), &leaf, self.cfg.xattr_ns)?
                {
                    if !self.stub_allowed(upper) {
                        log::warn!("refusing to follow the metacopy stub {name:?} (metacopy=off)");
                        return Err(errno(libc::EPERM));
                    }
                    place.metacopy = true;
                    wants_data = true;
                    if let Some(r) = redirect::read(dir.as_fd(), &leaf, self.cfg.xattr_ns)? {
                        if upper {
                            place.redirect = Some(r.clone());
                        }
                        self.follow_redirect(&mut layers, i, lid, &mut at, &r);
                    }
                    continue;
                }
                break;
            }
            let mut absolute = false;
            let wanted = upper || i < layers.len();
            if wanted && let Some(r) = redirect::read(dir.as_fd(), &leaf, self.cfg.xattr_ns)? {
                if i < layers.len() && !self.cfg.redirect.follows() {
                    log::warn!(
                        "refusing to follow the redirect of {name:?} (redirect_dir=nofollow)"
                    );
                    return Err(errno(libc::EPERM));
                }
                absolute = redirect::is_absolute(&r);
                self.follow_redirect(&mut layers, i, lid, &mut at, &r);
                if upper {
                    place.redirect = Some(r);
                }
            }
            if i == layers.len() || (!absolute && whiteout::is_opaque(dir.as_fd(), &leaf)?) {
                break;
            }
        }
        if wants_data && let Some((shown, place)) = &mut found {
            // Data-only layers serve stubs whose redirect is absolute, by that path.
            let data = match &at {
                LowerAt::Path(_) => self.data_only_lookup(parent, &at)?,
                LowerAt::Name(_) => None,
            };
            match data {
                Some((lid, st)) => {
                    place.push_lower(lid, at.clone());
                    shown.st_blocks = st.st_blocks;
                }
                // The kernel looks data-only layers up lazily: the stub shows, its open
                // fails.
                None if matches!(at, LowerAt::Path(_)) && !self.layers.data_only().is_empty() => {
                    log::warn!("no data-only layer holds the data of {name:?}");
                    place.data_missing = true;
                }
                None => return Err(metacopy_without_data(name)),
            }
        }
        if let Some((st, place)) = &mut found {
            self.find_index(parent, name, st, place)?;
        }
        Ok(match found {
            Some((st, place)) => Resolved::Found {
                st: Box::new(st),
                place,
            },
            None => Resolved::Missing { upper_whiteout },
        })
    }

    /// Looks up `name` in `parent`, counting one kernel reference on success.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> io::Result<Attr> {
        let parent = self.node(parent)?;
        let _names = parent.names_shared();
        self.lookup_in(&parent, name).map(|(_, a)| a)
    }

    /// Resolves `name` in `parent` and records the node (one more kernel reference); the
    /// caller holds `parent.names`.
    pub(crate) fn lookup_in(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
    ) -> io::Result<(Arc<Inode>, Attr)> {
        self.lookup_in_where(parent, name, None)
    }

    /// As [`Self::lookup_in`], passing over the layers a current listing rules out (see
    /// [`Self::resolve_where`]).
    pub(crate) fn lookup_in_where(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        presence: Option<Presence>,
    ) -> io::Result<(Arc<Inode>, Attr)> {
        if whiteout::is_reserved_name(name) {
            return Err(errno(libc::ENOENT));
        }
        let mut resolved = self.resolve_where(parent, name, presence)?;
        if let Resolved::Found { st, place } = &resolved
            && !place.in_upper()
            && st.st_nlink > 1
            && !is_dir(st)
            && let Ok(node) = self.node(self.ino_for(place.lowers[0], st.st_ino))
            && node.in_upper()
        {
            // Another name of a copied-up lower hard link (index=off): link it to the copy
            // first.
            self.link_lower_name(&node, parent.ino, name)?;
            resolved = self.resolve(parent, name)?;
        }
        match resolved {
            Resolved::Found { st, place } => {
                let top = place.top().ok_or_else(|| errno(libc::ENOENT))?;
                let ino = if let (Some(entry), false, Some(index)) =
                    (&place.index, place.upper, self.index())
                {
                    self.upper_number(index.fd(), entry, st.st_ino, st.st_mode & libc::S_IFMT)
                } else if self.layers.is_upper(top) {
                    let dir = self.dir_fd(top, parent)?;
                    self.upper_number(dir.as_fd(), name, st.st_ino, st.st_mode & libc::S_IFMT)
                } else {
                    self.ino_for(top, st.st_ino)
                };
                let named = self.index().is_some()
                    && !is_dir(&st)
                    && (place.index.is_some() || (!place.upper && st.st_nlink > 1));
                let node = self.remember(ino, st.st_mode & libc::S_IFMT, place);
                let mut attr = self.shown(&node, *st);
                attr.uncached_name = named;
                Ok((node, attr))
            }
            Resolved::Missing { .. } => Err(errno(libc::ENOENT)),
        }
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if let Some(gone) = self.inodes.forget(ino, n)
            && gone.is_dir()
        {
            self.dirfds.forget(gone.ino, gone.serial());
        }
    }

    /// The attributes of `ino`; through the open handle `fh` when given, so an unlinked
    /// but open file still answers.
    pub fn getattr(&self, ino: Ino, fh: Option<u64>) -> io::Result<Attr> {
        let node = self.node(ino)?;
        if let Some(h) = fh.and_then(|fh| self.files.get(fh).ok()) {
            return Ok(self.shown(&node, self.open_file_stat(&h)?));
        }
        self.attr_of(&node)
    }

    /// The stat of the object behind an open file handle (override applied).
    fn open_file_stat(&self, h: &OpenFile) -> io::Result<Stat> {
        let file = h.file();
        let mut st = sys::fstat(file.as_fd())?;
        let layer = match (h.on_upper(), h.node.place().lowers.first()) {
            (false, Some(&l)) => l,
            _ => 0,
        };
        self.apply_override(layer, || XattrTarget::fd(file.as_fd()), &mut st)?;
        Ok(st)
    }

    pub(crate) fn attr_of(&self, node: &Inode) -> io::Result<Attr> {
        let top = node.place().top().ok_or_else(|| errno(libc::ENOENT))?;
        let st = match self.object_fd(top, node).and_then(|(dir, name)| {
            let st = self.stat_at(top, dir.as_fd(), &name)?;
            // Reached by name: make sure the name still holds this node's object.
            if name.is_empty() {
                Ok(st)
            } else {
                self.same_object(node, top, st)
            }
        }) {
            Ok(st) => st,
            // Unlinked but still open: the open file answers.
            Err(e) if is_enoent(&e) => match self.files.find(|h| h.node.ino == node.ino) {
                Some(h) => self.open_file_stat(&h)?,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        Ok(self.shown(node, st))
    }

    /// `st` if it is `node`'s object (found in `top` by its name), else ENOENT: the name
    /// now holds something else (the node was replaced in a race with this request).
    pub(crate) fn same_object(&self, node: &Inode, top: LayerId, st: Stat) -> io::Result<Stat> {
        if node.ino == ROOT || self.ino_for(top, st.st_ino) == node.ino {
            Ok(st)
        } else {
            Err(errno(libc::ENOENT))
        }
    }

    /// The stat the mount shows: the union's inode number, mapped owners, and nlink 1 for
    /// a merged directory, as kernel overlayfs reports.
    pub(crate) fn shown(&self, node: &Inode, mut st: Stat) -> Attr {
        // An indexed file counts the union's links, as on the kernel.
        if self.index().is_some()
            && let Some(entry) = node.index_entry()
            && let Some(n) = self.union_nlink(&entry, &st)
        {
            st.st_nlink = n as _;
        }
        st.st_ino = node.ino;
        // A metacopy stub counts the blocks of its data, as on the kernel.
        if node.kind() == libc::S_IFREG
            && node.is_metacopy()
            && let Some(lower) = node.place().data_layer()
            && let Ok((dir, name)) = self.parent_fd(lower, node)
            && let Ok(data) = sys::fstatat(dir.as_fd(), &name)
        {
            st.st_blocks = data.st_blocks;
        }
        (st.st_uid, st.st_gid) = self.cfg.owners.show(st.st_uid, st.st_gid);
        if node.is_dir() && node.layer_count() > 1 {
            st.st_nlink = 1;
        }
        Attr {
            ino: node.ino,
            generation: node.generation(),
            st,
            uncached_name: false,
            times_unseen: node.times_move_unseen(),
        }
    }

    /// Whether a lower layer shows something at `parent/name`, which holds the object of
    /// `place` (so that removing or moving it needs a whiteout there): as
    /// [`Self::lower_visible`], known at once for an object its lowers hold by that name.
    pub(crate) fn name_below(
        &self,
        parent: &Inode,
        name: &OsStr,
        place: &Place,
    ) -> io::Result<bool> {
        if !place.lowers.is_empty() && place.lower_at.is_empty() {
            return Ok(true);
        }
        self.lower_visible(parent, name)
    }

    /// Whether a lower layer below `parent` shows something at `name`.
    fn lower_visible(&self, parent: &Inode, name: &OsStr) -> io::Result<bool> {
        let pplace = parent.place();
        for &lid in &pplace.lowers {
            let dir = match self.dir_fd(lid, parent) {
                Ok(d) => d,
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            };
            match sys::fstatat(dir.as_fd(), name) {
                Ok(st) => return Ok(!whiteout::is_whiteout(&st)),
                Err(e) if is_enoent(&e) => {
                    if whiteout::has_aufs_whiteout(dir.as_fd(), name)? {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// At unmount: writes the upper filesystem out (as the kernel syncs the upper when an
    /// overlay is unmounted; not for `volatile`/`fsync=0`) and logs what is still known.
    pub fn shutdown(&self) {
        if self.cfg.fsync
            && let Some(u) = self.layers.upper()
            && let Err(e) = sys::syncfs(u.root())
        {
            log::error!("syncing upper layer {}: {e}", u.path.display());
        }
        log::info!(
            "unmounted: {} inodes, {} open handles",
            self.inode_count(),
            self.handle_count()
        );
    }

    /// The number of inodes the table holds (the root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The number of open file and directory handles.
    pub fn handle_count(&self) -> usize {
        self.files.len() + self.dirs.len()
    }
}

/// Refuses names a user must not create: AUFS-reserved `.wh.` names (EINVAL, as AUFS
/// does) and names over 255 bytes.
pub(crate) fn check_new_name(name: &OsStr) -> io::Result<()> {
    if name.len() > 255 {
        return Err(errno(libc::ENAMETOOLONG));
    }
    if whiteout::is_reserved_name(name) || name.as_bytes().contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}
