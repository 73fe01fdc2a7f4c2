//! Mounting, processes and signals.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::{check, cstr};

/// mount(2).
pub fn mount(
    source: &OsStr,
    target: &Path,
    fstype: &str,
    flags: u64,
    data: &str,
) -> io::Result<()> {
    let s = cstr(source)?;
    let t = cstr(target.as_os_str())?;
    let f = cstr(OsStr::new(fstype))?;
    let d = cstr(OsStr::new(data))?;
    // SAFETY: all four are valid C strings.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags as libc::c_ulong,
            d.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// umount2(2); `detach` is `MNT_DETACH` (a lazy unmount).
pub fn umount(target: &Path, detach: bool) -> io::Result<()> {
    let t = cstr(target.as_os_str())?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: `t` is a valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// What fork(2) returned to this side.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// fork(2). Only call while the process has a single thread.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees no other threads exist, so the child is consistent.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() }).map(drop)
}

/// dup2(2) of `fd` onto the raw descriptor `target` (used only for 0, 1 and 2).
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 atomically replaces `target`; callers pass only the standard streams.
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) }).map(drop)
}

/// pipe2(2) with `O_CLOEXEC`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded; both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// waitpid(2): waits for the child `pid` to exit and returns its status.
pub fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
    Ok(status)
}

/// The signals that end the daemon.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_sigset() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset only touches the initialised set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for s in STOP_SIGNALS {
            libc::sigaddset(set.as_mut_ptr(), s);
        }
        set.assume_init()
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it spawns later).
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_sigset();
    // SAFETY: `set` is an initialised sigset.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits for one of the blocked stop signals and returns its number.
pub fn wait_stop_signal() -> io::Result<i32> {
    let set = stop_sigset();
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` a valid out-pointer.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}

/// Raises the soft limit of open files to the hard limit.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer; setrlimit reads the same struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sets the process umask (the daemon uses 0 so created modes are exactly as asked).
pub fn set_umask(mask: u32) {
    // SAFETY: umask only changes process state and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// The realtime clock as (seconds, nanoseconds), as timestamps are kept.
pub fn now() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

/// The process's effective (uid, gid), read once: the daemon never changes them.
pub fn effective_ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| (geteuid(), getegid()))
}

pub fn getgid() -> u32 {
    // SAFETY: getgid cannot fail.
    unsafe { libc::getgid() }
}

/// The `capget`/`capset` header and data (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

thread_local! {
    /// The calling thread's capabilities, read once: an [`FsIds`] puts them back.
    static THREAD_CAPS: std::cell::Cell<Option<[CapData; 2]>> = const { std::cell::Cell::new(None) };
}

fn thread_caps() -> io::Result<[CapData; 2]> {
    if let Some(caps) = THREAD_CAPS.get() {
        return Ok(caps);
    }
    let mut head = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut caps = [CapData::default(); 2];
    // SAFETY: `head` and `caps` are the version-3 header and two data words capget fills.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut head, caps.as_mut_ptr()) as libc::c_int })?;
    THREAD_CAPS.set(Some(caps));
    Ok(caps)
}

fn set_thread_caps(caps: &[CapData; 2]) -> io::Result<()> {
    let mut head = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads the header and two data words; pid 0 is the calling thread.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut head, caps.as_ptr()) as libc::c_int })
        .map(drop)
}

/// setfsuid/setfsgid of the calling thread only (the raw calls: no libc broadcast to the
/// other threads); returns the previous id.
fn set_fs_id(group: bool, id: u32) -> u32 {
    let call = if group {
        libc::SYS_setfsgid
    } else {
        libc::SYS_setfsuid
    };
    // SAFETY: setfsuid/setfsgid take an id and only change the calling thread's credentials.
    unsafe { libc::syscall(call, id) as u32 }
}

/// The calling thread acting on files as `uid`:`gid` (its fsuid and fsgid) with its
/// capabilities kept, until dropped: kernel overlayfs creates upper objects so, with the
/// caller's ids and the mounter's capabilities, and the object is born with its owner.
pub struct FsIds {
    uid: u32,
    gid: u32,
    caps: [CapData; 2],
}

impl FsIds {
    /// Switches the calling thread's fsuid and fsgid; EPERM if the kernel did not take them.
    pub fn switch(uid: u32, gid: u32) -> io::Result<FsIds> {
        let caps = thread_caps()?;
        let guard = FsIds {
            uid: set_fs_id(false, uid),
            gid: set_fs_id(true, gid),
            caps,
        };
        // An id that is not taken reads back unchanged (-1 is never a valid id).
        if set_fs_id(false, u32::MAX) != uid || set_fs_id(true, u32::MAX) != gid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        // A non-zero fsuid drops the file capabilities from the effective set.
        set_thread_caps(&guard.caps)?;
        Ok(guard)
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        set_fs_id(false, self.uid);
        set_fs_id(true, self.gid);
        if let Err(e) = set_thread_caps(&self.caps) {
            log::error!("restoring the thread's capabilities failed: {e}");
        }
    }
}

/// `N` random bytes from the kernel (`getrandom`).
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled rest of `buf`, which lives
        // across the call.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), N - got, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A thread switched to 1000:1000 creates as that owner, still with the capabilities
    /// to write where only root may (a 0700 root directory), and is itself again after.
    #[test]
    fn fs_ids_switch_only_the_owner_of_what_is_made() {
        if geteuid() != 0 {
            eprintln!("needs root: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            {
                let _ids = FsIds::switch(1000, 1000).unwrap();
                std::fs::write(d.join("theirs"), "x").unwrap();
            }
            std::fs::write(d.join("mine"), "x").unwrap();
        })
        .join()
        .unwrap();
        let owner = |n: &str| {
            let m = std::fs::metadata(dir.path().join(n)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner("theirs"), (1000, 1000));
        assert_eq!(owner("mine"), (0, 0));
    }
}
