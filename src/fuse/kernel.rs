//! What layerfs negotiates with the kernel (in one place, each with why), how it lets the
//! kernel cache file pages, and how the core tells the kernel about changes it made itself.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::{FopenFlags, INodeNo, InitFlags, KernelConfig, Notifier};
use log::debug;

use crate::options::Atime;
use crate::union::{KernelCache, LayerFs};

use super::FuseFs;

/// The kernel's caches as the core sees them: FUSE notifications.
pub struct Notifications(pub Notifier);

impl KernelCache for Notifications {
    fn attributes_changed(&self, ino: u64) {
        // A negative offset invalidates the attributes only, not the cached data.
        if let Err(e) = self.0.inval_inode(INodeNo(ino), -1, 0) {
            debug!("invalidating the attributes of {ino}: {e}");
        }
    }
}

/// How the kernel may cache an open file's pages: kept across opens, since every change
/// to file content goes through this mount (the layers below are not changed under it),
/// unless data was written past them (`keep`: see `Opened`); dropped at each open under
/// relatime/strictatime, so that reads reach the daemon, which records the accesses (the
/// kernel does not for FUSE).
pub(super) fn open_flags(fs: &LayerFs, keep: bool) -> FopenFlags {
    if keep && fs.cfg.atime == Atime::Never {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

/// How the kernel may cache a directory's listing: kept, and served without a READDIR,
/// until the directory changes through this mount (the kernel drops it then; the
/// daemon never changes a listing on its own), unless relatime/strictatime want listings
/// to reach the daemon, which records the accesses.
pub(super) fn opendir_flags(fs: &LayerFs) -> FopenFlags {
    if fs.cfg.atime == Atime::Never {
        FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

/// `FUSE_OVER_IO_URING`, which fuser 0.18 has no name for.
const OVER_IO_URING: u64 = 1 << 41;

/// Negotiates with the kernel at FUSE init: the capabilities below, then passthrough if
/// the mount wants it, else the writeback cache (the two exclude each other), then
/// io_uring if the mount wants it.
pub(super) fn negotiate(ffs: &FuseFs, config: &mut KernelConfig) {
    let fs = &ffs.0;
    for (flag, why) in wanted_capabilities(fs) {
        match config.add_capabilities(flag) {
            Ok(()) => debug!("negotiated {flag:?}: {why}"),
            Err(_) => log::warn!("the kernel does not offer {flag:?}; so not: {why}"),
        }
    }
    // Passthrough: upper files handed to the kernel, so their data never crosses into
    // the daemon. Backing files must not be on a stacked filesystem (depth 1), so that
    // this mount can still be a layer of an overlay.
    if fs.passthrough_on() {
        let offered = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        if offered {
            log::info!("passthrough on: upper files' data goes straight to the kernel");
        } else {
            log::warn!("the kernel does not offer FUSE passthrough");
            fs.disable_passthrough();
        }
    }
    // Not under relatime/strictatime: the kernel reads pages in to fill partial writes,
    // and the daemon would record those reads as accesses.
    if !fs.passthrough_on() && fs.cfg.atime == Atime::Never {
        match config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE) {
            Ok(()) => {
                fs.enable_writeback();
                log::info!(
                    "writeback cache on: writes are gathered in the kernel's page cache \
                     and reach the daemon in large blocks (passthrough excludes it)"
                );
            }
            Err(_) => log::warn!("the kernel does not offer the writeback cache"),
        }
    }
    if ffs.3.wanted {
        negotiate_uring(ffs, config);
    }
}

/// FUSE over io_uring, if the kernel offers it and io_uring can be set up here: asked for
/// only then, as the kernel holds every request after INIT until the queues are
/// registered. Writes are capped at the payload of a ring entry (the kernel's own cap,
/// max_pages, is the same 1 MiB by default).
fn negotiate_uring(ffs: &FuseFs, config: &mut KernelConfig) {
    let flag = InitFlags::from_bits_retain(OVER_IO_URING);
    if let Err(e) = crate::sys::uring::probe() {
        log::warn!("io_uring cannot be set up here ({e}): requests go through /dev/fuse");
    } else if config.add_capabilities(flag).is_err() {
        log::warn!(
            "the kernel does not offer FUSE over io_uring (the fuse module's enable_uring \
             parameter is off): requests go through /dev/fuse"
        );
    } else {
        let _ = config.set_max_write(super::ring::PAYLOAD_LEN as u32);
        ffs.3.set_uring();
        debug!("negotiated FUSE over io_uring");
    }
}

/// The capabilities layerfs asks the kernel for, each with why. Negotiated in one place.
pub(super) fn wanted_capabilities(fs: &LayerFs) -> Vec<(InitFlags, &'static str)> {
    let mut want = vec![(
        InitFlags::FUSE_DONT_MASK,
        "the umask reaches the daemon, which applies it only where no default ACL does",
    )];
    if fs.cfg.xattrs {
        want.push((
            InitFlags::FUSE_POSIX_ACL,
            "the kernel enforces POSIX ACLs (system.posix_acl_*) as on kernel overlayfs",
        ));
    }
    want.push((
        InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
        "listings carry each entry's attributes where the kernel expects lookups to follow \
         (a walk needs no LOOKUP per entry)",
    ));
    want.push((
        InitFlags::FUSE_PARALLEL_DIROPS,
        "lookups and listings in one directory run in parallel (the daemon locks names \
         per directory itself)",
    ));
    want.push((
        InitFlags::FUSE_ATOMIC_O_TRUNC,
        "open(O_TRUNC) reaches the daemon as one request, so truncating a lower file \
         copies up no data",
    ));
    want.push((
        InitFlags::FUSE_CACHE_SYMLINKS,
        "symlink targets are cached (a symlink never changes in place)",
    ));
    want.push((
        InitFlags::FUSE_NO_EXPORT_SUPPORT,
        "file handles are refused (name_to_handle_at fails with EOPNOTSUPP), as on kernel \
         overlayfs without nfs_export: a handle must not go stale while its file lives, \
         and the daemon forgets the objects the kernel forgets",
    ));
    want.push((
        InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        "the daemon clears setuid/setgid on write, truncate and chown (crate::privs), so \
         the kernel stops asking for security.capability before every write",
    ));
    want
}

/// The kernel's readahead for a layerfs mount, in KiB: a window of one READ of the
/// largest size (max_pages), where a new FUSE mount starts at 128 KiB and its INIT cannot
/// ask for more.
const READAHEAD_KB: u64 = 1024;

/// Widens the kernel's readahead for the FUSE mount on `mountpoint` to [`READAHEAD_KB`]
/// (after INIT, which would narrow it again), so reads of data the daemon serves come
/// in fewer, larger READs: a lower file whose pages are cached below (read by another
/// container of the image) is read through the mount 1.5-2.5x faster. Only root of the
/// initial user namespace may write the mount's sysfs entry; elsewhere (rootless) the
/// readahead stays the kernel's, said at debug level.
pub fn widen_readahead(mountpoint: &Path) {
    let widened = mount_device(mountpoint).and_then(|dev| {
        let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        let now = std::fs::read_to_string(&knob)?;
        match now.trim().parse::<u64>() {
            Ok(kb) if kb >= READAHEAD_KB => Ok(kb),
            _ => std::fs::write(&knob, READAHEAD_KB.to_string()).map(|()| READAHEAD_KB),
        }
    });
    match widened {
        Ok(kb) => debug!("readahead of {}: {kb} KiB", mountpoint.display()),
        Err(e) => debug!(
            "readahead of {} stays the kernel's: {e}",
            mountpoint.display()
        ),
    }
}

/// The device (`major:minor`) of the newest mount on `mountpoint`, from the mount table
/// (a stat of the mountpoint would ask this daemon, which may not serve yet).
fn mount_device(mountpoint: &Path) -> io::Result<String> {
    let table = std::fs::read("/proc/self/mountinfo")?;
    table
        .split(|&b| b == b'\n')
        .rev()
        .find_map(|line| {
            // ID, parent ID, major:minor, root, mount point, ...
            let mut fields = line.split(|&b| b == b' ');
            let dev = fields.nth(2)?;
            let point = unescape(fields.nth(1)?);
            (OsStr::from_bytes(&point) == mountpoint.as_os_str())
                .then(|| String::from_utf8_lossy(dev).into_owned())
        })
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

/// A mount table field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/a\040b\011c\134d"), b"/mnt/a b\tc\\d");
        assert_eq!(unescape(br"/plain\0"), b"/plain\\0");
    }

    #[test]
    fn the_root_mount_has_a_device() {
        let dev = mount_device(Path::new("/")).unwrap();
        assert!(dev.split_once(':').is_some(), "{dev}");
    }
}
