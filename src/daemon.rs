//! Mounting and serving: mount(2) of a `fuse.layerfs` filesystem on an fd of /dev/fuse,
//! then (unless in the foreground) a detached daemon that serves it, while the command
//! returns only once the filesystem answers requests, as a mount program must.
//! SIGTERM/SIGINT/SIGHUP unmount and exit; an external umount ends the daemon with 0.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::fuse::{
    Backings, FuseFs, Notifications, Served, Transport, serve_uring, widen_readahead,
};
use crate::options::{Access, Atime, MountFlags, MountSpec, UsageError};
use crate::setup::{self, Prepared, plain};
use crate::sys;
use crate::union::LayerFs;

fn fail<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Mounts `spec`; returns once the filesystem is served (by a detached daemon, or in the
/// foreground until it is unmounted).
pub fn mount(spec: &MountSpec) -> Result<(), UsageError> {
    sys::raise_nofile_limit();
    sys::set_umask(0);
    let prepared = setup::prepare(spec)?;
    let flags = prepared.flags;
    let dev_fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| UsageError(format!("cannot open /dev/fuse: {}", plain(&e))))?;
    // Root mounts with mount(2) on its own /dev/fuse fd; anyone else goes through the
    // setuid fusermount3 (in the serving process, which then holds the connection).
    let mounter = if sys::geteuid() == 0 {
        let dev_fuse = OwnedFd::from(dev_fuse);
        kernel_mount(spec, flags, &prepared.mountpoint, &dev_fuse)?;
        Mounter::Fd(dev_fuse)
    } else {
        Mounter::Fusermount
    };
    if spec.foreground {
        return serve(spec, prepared, mounter, None);
    }
    let (ready_r, ready_w) = sys::pipe().map_err(|e| UsageError(plain(&e)))?;
    match sys::fork().map_err(|e| UsageError(format!("fork: {}", plain(&e))))? {
        sys::Forked::Child => {
            drop(ready_r);
            let _ = sys::setsid();
            let code = match serve(spec, prepared, mounter, Some(ready_w)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        sys::Forked::Parent(pid) => {
            drop(ready_w);
            drop(mounter);
            let mut msg = String::new();
            let _ = File::from(ready_r).read_to_string(&mut msg);
            if msg == "ok" {
                return Ok(());
            }
            let _ = sys::umount(&prepared.mountpoint, true);
            let _ = sys::wait_child(pid);
            if msg.is_empty() {
                msg = "the daemon exited before serving the mount".into();
            }
            fail(msg)
        }
    }
}

/// How the serving process gets its FUSE connection.
enum Mounter {
    /// Already mounted with mount(2) on this /dev/fuse fd.
    Fd(OwnedFd),
    /// To be mounted through fusermount3.
    Fusermount,
}

/// The mount options fusermount3 gets for `spec` with `flags`.
fn fusermount_options(spec: &MountSpec, flags: MountFlags) -> Vec<MountOption> {
    let mut o = vec![
        MountOption::FSName(spec.fsname.clone().unwrap_or_else(|| "layerfs".into())),
        MountOption::Subtype(spec.subtype.clone().unwrap_or_else(|| "layerfs".into())),
        MountOption::DefaultPermissions,
        if flags.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        if flags.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        match flags.atime {
            Atime::Never => MountOption::NoAtime,
            Atime::Relative => MountOption::CUSTOM("relatime".into()),
            Atime::Strict => MountOption::CUSTOM("strictatime".into()),
        },
    ];
    if flags.nodiratime {
        o.push(MountOption::CUSTOM("nodiratime".into()));
    }
    if !flags.exec {
        o.push(MountOption::NoExec);
    }
    if flags.read_only {
        o.push(MountOption::RO);
    }
    o
}

fn kernel_mount(
    spec: &MountSpec,
    flags: MountFlags,
    mountpoint: &Path,
    dev_fuse: &OwnedFd,
) -> Result<(), UsageError> {
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        dev_fuse.as_raw_fd(),
        sys::getuid(),
        sys::getgid()
    );
    if flags.access != Access::Owner {
        data.push_str(",allow_other");
    }
    let mut mflags = 0u64;
    for (on, flag) in [
        (!flags.dev, libc::MS_NODEV),
        (!flags.suid, libc::MS_NOSUID),
        (!flags.exec, libc::MS_NOEXEC),
        (flags.atime == Atime::Never, libc::MS_NOATIME),
        (flags.atime == Atime::Strict, libc::MS_STRICTATIME),
        (flags.nodiratime, libc::MS_NODIRATIME),
        (flags.read_only, libc::MS_RDONLY),
    ] {
        if on {
            mflags |= flag;
        }
    }
    let fstype = format!("fuse.{}", spec.subtype.as_deref().unwrap_or("layerfs"));
    let source = spec.fsname.as_deref().unwrap_or("layerfs");
    sys::mount(OsStr::new(source), mountpoint, &fstype, mflags, &data).map_err(|e| {
        UsageError(format!(
            "cannot mount on {}: {}",
            mountpoint.display(),
            plain(&e)
        ))
    })
}

/// Serves the mounted filesystem until it is unmounted. `ready` is told "ok" (or the
/// error) once the kernel handshake is done.
fn serve(
    spec: &MountSpec,
    prepared: Prepared,
    mounter: Mounter,
    ready: Option<OwnedFd>,
) -> Result<(), UsageError> {
    let mountpoint = prepared.mountpoint.clone();
    let tell = |ready: Option<OwnedFd>, msg: &str| {
        if let Some(fd) = ready {
            let _ = File::from(fd).write_all(msg.as_bytes());
        }
    };
    let fs = match LayerFs::new(prepared.layers, prepared.work, prepared.config) {
        Ok(fs) => fs,
        Err(e) => {
            let msg = format!("cannot start: {}", plain(&e));
            tell(ready, &msg);
            let _ = sys::umount(&mountpoint, true);
            return fail(msg);
        }
    };
    // What the signal thread syncs after unmounting (the session, which would, is cut off).
    let sync_on_signal = match (&fs.cfg.fsync, fs.layers.upper()) {
        (true, Some(u)) => u.root().try_clone_to_owned().ok(),
        _ => None,
    };
    let flags = prepared.flags;
    let acl = match flags.access {
        Access::All => SessionACL::All,
        Access::RootAndOwner => SessionACL::RootAndOwner,
        Access::Owner => SessionACL::Owner,
    };
    let mut config = Config::default();
    config.n_threads = Some(spec.threads);
    config.clone_fd = true;
    // Block the stop signals before any thread starts, so only the signal thread sees them.
    if let Err(e) = sys::block_stop_signals() {
        log::warn!("cannot block signals: {e}");
    }
    let kernel = fs.kernel_slot();
    let served = Arc::new(FuseFs(
        fs,
        spec.timeout,
        Backings::default(),
        Transport::new(spec.uring),
    ));
    let started = match mounter {
        Mounter::Fd(dev_fuse) => {
            Session::from_fd(Served(Arc::clone(&served)), dev_fuse, acl, config)
        }
        Mounter::Fusermount => {
            config.mount_options = fusermount_options(spec, flags);
            config.acl = acl;
            Session::new(Served(Arc::clone(&served)), &mountpoint, &config)
        }
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("FUSE handshake failed: {}", plain(&e));
            tell(ready, &msg);
            let _ = sys::umount(&mountpoint, true);
            return fail(msg);
        }
    };
    let _ = kernel.set(Box::new(Notifications(session.notifier())));
    widen_readahead(&mountpoint);
    if served.3.uring_on() {
        // Each CPU's queue gets its share of the event-loop threads, at least two, so a
        // slow request (a copy-up, an fsync) does not hold up that CPU's others.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_cpu = spec.threads.div_ceil(cpus).max(2);
        if let Err(e) = serve_uring(Arc::clone(&served), session.as_fd(), per_cpu) {
            let msg = format!("cannot start the io_uring queues: {}", plain(&e));
            tell(ready, &msg);
            let _ = sys::umount(&mountpoint, true);
            return fail(msg);
        }
    }
    spawn_signal_thread(mountpoint.clone(), sync_on_signal);
    let detached = ready.is_some();
    tell(ready, "ok");
    if detached {
        detach_stdio();
    }
    log::info!("serving {}", mountpoint.display());
    match session.run() {
        Ok(()) => Ok(()),
        Err(e) => fail(format!("session ended: {}", plain(&e))),
    }
}

fn spawn_signal_thread(mountpoint: PathBuf, upper: Option<OwnedFd>) {
    let r = std::thread::Builder::new()
        .name("layerfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = sys::wait_stop_signal() {
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                unmount_detached(&mountpoint);
                if let Some(fd) = upper
                    && let Err(e) = sys::syncfs(fd.as_fd())
                {
                    log::error!("syncing the upper layer: {e}");
                }
                std::process::exit(0);
            }
        });
    if let Err(e) = r {
        log::warn!("cannot start the signal thread: {e}");
    }
}

/// Detaches the mount: umount2 as root, fusermount3 otherwise.
fn unmount_detached(mountpoint: &Path) {
    if sys::umount(mountpoint, true).is_ok() {
        return;
    }
    let ok = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        log::warn!("unmount of {} failed", mountpoint.display());
    }
}

/// Points stdin/stdout/stderr at /dev/null so callers waiting on our output see EOF.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = sys::dup_onto(null.as_fd(), fd);
        }
    }
}

/// `layerfs umount MOUNTPOINT`: unmounts (through fusermount3 when not root).
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), UsageError> {
    match sys::umount(mountpoint, lazy) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && sys::geteuid() != 0 => {
            let mut c = std::process::Command::new("fusermount3");
            c.arg("-u");
            if lazy {
                c.arg("-z");
            }
            let out = c
                .arg("--")
                .arg(mountpoint)
                .output()
                .map_err(|e| UsageError(format!("fusermount3: {}", plain(&e))))?;
            if out.status.success() {
                Ok(())
            } else {
                let msg = String::from_utf8_lossy(&out.stderr);
                fail(format!(
                    "cannot unmount {}: {}",
                    mountpoint.display(),
                    msg.trim()
                ))
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !lazy => fail(format!(
            "{}: busy (files are open there); use --lazy to detach it now",
            mountpoint.display()
        )),
        Err(e) => fail(format!(
            "cannot unmount {}: {}",
            mountpoint.display(),
            plain(&e)
        )),
    }
}
