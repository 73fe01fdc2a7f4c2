//! Checking a `MountSpec` against the filesystem before anything is created: layers exist
//! and are directories, do not overlap, the workdir sits on the upper's filesystem, the
//! mountpoint is usable. Only after every check passes is the workdir created and cleaned.

use std::ffi::OsString;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::atime;
use crate::creds;
use crate::index::Index;
use crate::layers::Layers;
use crate::options::{Atime, MountFlags, MountSpec, Passthrough, UsageError, Uuid};
use crate::redirect::RedirectDir;
use crate::statoverride::{OverrideXattr, StatOverride};
use crate::sys;
use crate::union::FsConfig;
use crate::whiteout::{WhiteoutFormat, XattrNs};
use crate::workdir::WorkDir;

/// Environment variable (fuse-overlayfs's) asking for AUFS-style whiteouts in the upper.
pub const DISABLE_OVL_WHITEOUT_ENV: &str = "FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT";

/// fusermount3's configuration: whether other users may ask for `allow_other`.
const FUSE_CONF: &str = "/etc/fuse.conf";

fn fail<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Canonical path of an existing directory, or a one-line error naming `what`.
fn existing_dir(what: &str, p: &Path) -> Result<PathBuf, UsageError> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
            ) =>
        {
            return fail(format!(
                "{what} {}: a dead FUSE mount (transport endpoint is not connected); \
                 clear it with 'layerfs umount {}'",
                p.display(),
                p.display()
            ));
        }
        Err(e) => return fail(format!("{what} {}: {}", p.display(), plain(&e))),
    };
    if !meta.is_dir() {
        return fail(format!("{what} {}: not a directory", p.display()));
    }
    std::fs::canonicalize(p)
        .map_err(|e| UsageError(format!("{what} {}: {}", p.display(), plain(&e))))
}

/// An io::Error as a short message without the "(os error N)" suffix.
pub fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The default workdir for `upper`: a hidden sibling, `.NAME.layerfs-work`.
pub fn default_workdir(upper: &Path) -> Result<PathBuf, UsageError> {
    let (Some(parent), Some(name)) = (upper.parent(), upper.file_name()) else {
        return fail("upper layer is '/'; give --workdir");
    };
    let mut n = OsString::from(".");
    n.push(name);
    n.push(".layerfs-work");
    Ok(parent.join(n))
}

/// A mount ready to serve: layers open, workdir prepared.
pub struct Prepared {
    pub layers: Layers,
    pub work: Option<WorkDir>,
    pub config: FsConfig,
    pub mountpoint: PathBuf,
    /// The generic mount flags, defaults filled in for who is mounting.
    pub flags: MountFlags,
}

/// Validates `spec` and opens everything; on error nothing has been created.
pub fn prepare(spec: &MountSpec) -> Result<Prepared, UsageError> {
    spec.check()?;
    let privileged = sys::geteuid() == 0;
    if !privileged {
        spec.check_unprivileged(std::fs::read_to_string(FUSE_CONF).ok().as_deref())?;
    }
    let flags = spec.flags(privileged);
    let mut lowers = Vec::new();
    for l in spec.lowers.iter().chain(&spec.data_lowers) {
        let c = existing_dir("lower layer", l)?;
        if lowers.contains(&c) {
            return fail(format!("lower layer {} is given twice", l.display()));
        }
        lowers.push(c);
    }
    let mountpoint = existing_dir("mountpoint", &spec.mountpoint)?;
    let upper = match &spec.upper {
        None => None,
        Some(u) => {
            let c = existing_dir("upper layer", u)?;
            for l in &lowers {
                if c == *l {
                    return fail(format!("upper layer {} is also a lower layer", u.display()));
                }
                if overlaps(&c, l) {
                    return fail(format!(
                        "upper layer {} and lower layer {} overlap (one is inside the other)",
                        u.display(),
                        l.display()
                    ));
                }
            }
            Some(c)
        }
    };
    let mut create_workdir = None;
    let workdir = match (&upper, &spec.workdir) {
        (None, _) => None,
        (Some(u), Some(w)) => {
            let c = existing_dir("workdir", w)?;
            check_workdir(u, &c, &lowers)?;
            Some(c)
        }
        (Some(u), None) => {
            let w = default_workdir(u)?;
            match std::fs::symlink_metadata(&w) {
                Ok(_) => {
                    let c = existing_dir("workdir", &w)?;
                    check_workdir(u, &c, &lowers)?;
                    Some(c)
                }
                Err(_) => {
                    let parent = w.parent().unwrap_or(Path::new("/"));
                    if dev_of(parent)? != dev_of(u)? {
                        return fail(format!(
                            "upper layer {} is the root of its filesystem; give --workdir",
                            u.display()
                        ));
                    }
                    create_workdir = Some(w.clone());
                    Some(w)
                }
            }
        }
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return fail(format!("cannot open /dev/fuse: {}", plain(&e)));
    }

    // Every check passed: from here on, create what is missing.
    if let Some(w) = &create_workdir {
        private_dir(false)
            .create(w)
            .map_err(|e| UsageError(format!("workdir {}: {}", w.display(), plain(&e))))?;
    }
    let opened = open_layers(spec, upper.as_deref(), &lowers, workdir.as_deref());
    if opened.is_err()
        && let Some(w) = &create_workdir
    {
        let _ = std::fs::remove_dir_all(w);
    }
    let (layers, work) = opened?;
    let probed = match &work {
        Some(w) => w
            .probe()
            .map_err(|e| UsageError(format!("workdir: {}", plain(&e))))?,
        None => (true, true),
    };
    let whiteout = if std::env::var_os(DISABLE_OVL_WHITEOUT_ENV).is_some() {
        WhiteoutFormat::Aufs
    } else {
        match (spec.whiteout, probed.0) {
            (Some(WhiteoutFormat::Overlay), false) => {
                return fail(
                    "whiteout=overlay needs mknod of 0/0 devices in the upper, which is not permitted here",
                );
            }
            (Some(w), _) => w,
            (None, true) => WhiteoutFormat::Overlay,
            (None, false) => WhiteoutFormat::Aufs,
        }
    };
    let xattr_ns = if probed.1 {
        XattrNs::Trusted
    } else {
        XattrNs::User
    };
    // As the kernel's `userxattr`: redirects and metacopy are for trusted xattrs only (a
    // user who can write the upper's user xattrs could forge them to reach any lower file).
    let (redirect, metacopy) = match (xattr_ns, spec.redirect_dir) {
        (XattrNs::Trusted, _) => (spec.redirect(), spec.metacopy),
        (XattrNs::User, Some(r @ (RedirectDir::On | RedirectDir::Follow))) => {
            if let Some(w) = &create_workdir {
                let _ = std::fs::remove_dir_all(w);
            }
            return fail(format!(
                "redirect_dir={} needs trusted.* xattrs in the upper, which this process may not set",
                r.name()
            ));
        }
        (XattrNs::User, _) if spec.metacopy => {
            if let Some(w) = &create_workdir {
                let _ = std::fs::remove_dir_all(w);
            }
            return fail(
                "metacopy=on needs trusted.* xattrs in the upper, which this process may not set",
            );
        }
        (XattrNs::User, _) => (RedirectDir::NoFollow, false),
    };
    if let (Some(u), XattrNs::Trusted) = (layers.upper(), xattr_ns) {
        keep_uuid(u.root(), spec.uuid);
    }
    let mut work = work;
    if spec.index {
        let refuse = |msg: String| {
            if let Some(w) = &create_workdir {
                let _ = std::fs::remove_dir_all(w);
            }
            fail(msg)
        };
        match (&mut work, xattr_ns) {
            (None, _) => log::info!("index=on is of no use without an upper layer: ignored"),
            (Some(_), XattrNs::User) => {
                return refuse(
                    "index=on needs trusted.* xattrs in the upper, which this process may not set"
                        .into(),
                );
            }
            (Some(w), XattrNs::Trusted) => match Index::prepare(&layers, w.base(), xattr_ns) {
                Ok(Some(index)) => w.set_index(index),
                Ok(None) => {}
                Err(msg) => return refuse(msg),
            },
        }
    }
    let atime = match layers.upper() {
        Some(_) if flags.atime == Atime::Never => Atime::Never,
        Some(u) if u.records_every_access() => flags.atime,
        Some(u) => atime::effective(flags.atime, sys::mount_flags(u.root()).unwrap_or(0)),
        None => Atime::Never,
    };
    Ok(Prepared {
        layers,
        work,
        config: FsConfig {
            whiteout,
            xattr_ns,
            fsync: spec.fsync,
            owners: spec.owners.clone(),
            xattrs: spec.xattrs,
            passthrough: passthrough(spec, &flags),
            atime,
            nodiratime: flags.nodiratime,
            redirect,
            metacopy,
            xino: spec.xino,
        },
        mountpoint,
        flags,
    })
}

/// Which file data may pass through to the kernel, decided (and said) once at mount.
fn passthrough(spec: &MountSpec, flags: &MountFlags) -> Passthrough {
    let why_not = if spec.passthrough == Passthrough::Off {
        Some("passthrough=off")
    } else if flags.atime != Atime::Never {
        Some("the daemon records access times under relatime/strictatime")
    } else if sys::geteuid() != 0 || !creds::in_initial_user_namespace() {
        Some("registering backing files needs root in the initial user namespace")
    } else {
        None
    };
    if let Some(why) = why_not {
        log::info!("passthrough off ({why}): file data goes through the daemon");
        return Passthrough::Off;
    }
    spec.passthrough
}

fn private_dir(recursive: bool) -> std::fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700).recursive(recursive);
    b
}

fn open_layers(
    spec: &MountSpec,
    upper: Option<&Path>,
    lowers: &[PathBuf],
    workdir: Option<&Path>,
) -> Result<(Layers, Option<WorkDir>), UsageError> {
    let (lowers, data) = lowers.split_at(lowers.len() - spec.data_lowers.len());
    let layers = Layers::open(upper, lowers, data, spec.xattr_permissions)
        .map_err(|e| UsageError(format!("opening the layers: {}", plain(&e))))?;
    if let (Some(kind), Some(u)) = (spec.xattr_permissions, layers.upper()) {
        mark_override(u.root(), kind).map_err(|e| {
            UsageError(format!(
                "xattr_permissions: cannot write {} in upper layer {}: {}",
                kind.name().to_string_lossy(),
                u.path.display(),
                plain(&e)
            ))
        })?;
    }
    let work = match workdir {
        Some(w) => {
            let err = |e: io::Error| UsageError(format!("workdir {}: {}", w.display(), plain(&e)));
            let wd = WorkDir::open(w).map_err(err)?;
            if spec.volatile {
                mark_volatile(w).map_err(err)?;
            }
            Some(wd)
        }
        None => None,
    };
    Ok((layers, work))
}

fn dev_of(p: &Path) -> Result<u64, UsageError> {
    std::fs::metadata(p)
        .map(|m| m.dev())
        .map_err(|e| UsageError(format!("{}: {}", p.display(), plain(&e))))
}

fn check_workdir(upper: &Path, work: &Path, lowers: &[PathBuf]) -> Result<(), UsageError> {
    if overlaps(upper, work) {
        return fail(format!(
            "workdir {} and upper layer {} overlap; they must be separate directories",
            work.display(),
            upper.display()
        ));
    }
    if let Some(l) = lowers.iter().find(|l| overlaps(l, work)) {
        return fail(format!(
            "workdir {} and lower layer {} overlap",
            work.display(),
            l.display()
        ));
    }
    if dev_of(upper)? != dev_of(work)? {
        return fail(format!(
            "workdir {} is not on the same filesystem as upper layer {}",
            work.display(),
            upper.display()
        ));
    }
    Ok(())
}

/// Records on the upper root that the layer keeps overrides (so it reads back the same
/// way when it later becomes a lower), unless the root already says so.
fn mark_override(root: BorrowedFd<'_>, kind: OverrideXattr) -> io::Result<()> {
    let target = sys::XattrTarget::fd(root)?;
    match target.get(kind.name()) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
            let st = sys::fstat(root)?;
            target.set(kind.name(), &StatOverride::of_stat(&st).encode(), 0)
        }
        Err(e) => Err(e),
    }
}

/// The overlay's persistent UUID in the upper root (`trusted.overlay.uuid`), made as the
/// kernel makes it: under `uuid=on` at the first mount, under `auto` only for an upper
/// no older mount used (its root not impure); a failure only loses it, as there.
fn keep_uuid(root: BorrowedFd<'_>, uuid: Uuid) {
    let Ok(target) = sys::XattrTarget::fd(root) else {
        return;
    };
    let name = std::ffi::OsStr::new("trusted.overlay.uuid");
    let made = match target.get_if_any(name) {
        Ok(Some(v)) if v.len() == 16 => return,
        Ok(_) if uuid == Uuid::Null => return,
        Ok(_) if uuid == Uuid::Auto => {
            match target.get_if_any(std::ffi::OsStr::new("trusted.overlay.impure")) {
                Ok(None) => sys::random_bytes::<16>(),
                _ => return,
            }
        }
        Ok(_) => sys::random_bytes::<16>(),
        Err(e) => Err(e),
    };
    if let Err(e) = made.and_then(|v| target.set(name, &v, 0)) {
        log::warn!("cannot keep the overlay UUID in the upper root: {e}");
    }
}

/// `WORKDIR/work/incompat/volatile`, as kernel overlayfs leaves for a volatile mount.
fn mark_volatile(workdir: &Path) -> io::Result<()> {
    private_dir(true).create(workdir.join("work/incompat/volatile"))
}
