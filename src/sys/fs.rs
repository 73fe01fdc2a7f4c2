//! File and directory system calls.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Stat, check, check_size, cstr, owned, proc_path};

/// `RESOLVE_*` flags of openat2(2).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2): opens `path` below `dir` under the given `RESOLVE_*` rules.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let c = cstr(path.as_os_str())?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    loop {
        // SAFETY: `c` is a valid C string and `how` a valid open_how of the size passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match owned(ret as libc::c_int) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            r => return r,
        }
    }
}

/// openat(2) of a single name in `dir`; callers pass `O_NOFOLLOW` unless they mean to follow.
pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid C string; the mode is passed as the variadic third argument.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// Reopens the object behind `fd` (possibly an `O_PATH` fd) through `/proc/self/fd`.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let c = proc_path(fd, None)?;
    // SAFETY: `c` is a valid C string.
    owned(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// Reads a little of the object behind `fd` (a directory if `dir`) through an fd opened
/// without `O_NOATIME`, so that its filesystem records the access as its mount's policy
/// says (the access time alone changes, as with any read).
pub fn read_to_touch(fd: BorrowedFd<'_>, dir: bool) -> io::Result<()> {
    let flags = if dir {
        libc::O_RDONLY | libc::O_DIRECTORY
    } else {
        libc::O_RDONLY
    };
    let f = reopen(fd, flags)?;
    let mut buf = [0u8; 512];
    let n = if dir {
        // SAFETY: `buf` is writable for its length; `f` is an open directory we own.
        unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                f.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    } else {
        // SAFETY: `buf` is writable for its length; `f` is an open file we own.
        unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), 1, 0) as libc::c_long }
    };
    check_size(n as libc::ssize_t).map(drop)
}

/// [`reopen`] with `O_NOATIME`, so reading through the fd leaves the object's access time
/// alone; without it where the kernel refuses it (an object this process does not own and
/// may not act for).
pub fn reopen_noatime(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    match reopen(fd, flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => reopen(fd, flags),
        r => r,
    }
}

/// [`openat`] with `O_NOATIME` where the kernel allows it, as [`reopen_noatime`].
pub fn openat_noatime(dir: BorrowedFd<'_>, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    match openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => openat(dir, name, flags, 0),
        r => r,
    }
}

/// fstatat(2) with `AT_SYMLINK_NOFOLLOW`; an empty name stats `dir` itself.
pub fn fstatat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    // SAFETY: `c` is a valid C string and `st` points to writable memory for one stat.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    fstatat(fd, OsStr::new(""))
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid C string.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
    .map(drop)
}

pub fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: both are valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `c` is a valid C string and `buf` is writable for its full length.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// linkat(2) without following a symlink source.
pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both are valid C strings.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, remove_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both are valid C strings.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// fchownat(2) with `AT_SYMLINK_NOFOLLOW`; an empty name changes `dir` itself.
pub fn fchownat(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) }).map(drop)
}

/// A timestamp to set: `None` leaves it unchanged, `Now` is the current time.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, i64),
}

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        SetTime::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        SetTime::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At(s, ns) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    }
}

/// utimensat(2) with `AT_SYMLINK_NOFOLLOW`; an empty name changes `dir` itself.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: SetTime,
    mtime: SetTime,
) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    if name.is_empty() {
        // utimensat has no AT_EMPTY_PATH; go through the fd's /proc entry instead.
        let c = proc_path(dir, None)?;
        // SAFETY: `c` is a valid C string and `times` holds two timespecs.
        return check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) })
            .map(drop);
    }
    let c = cstr(name)?;
    // SAFETY: `c` is a valid C string and `times` holds two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Whether the kernel has fchmodat2 (Linux 6.6), which changes a mode by fd or by name
/// without following a symlink; before it, chmod goes through `/proc/self/fd/N`.
static FCHMODAT2: AtomicBool = AtomicBool::new(true);

/// fchmodat2(2), or None where the kernel lacks it.
fn fchmodat2(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, flags: i32) -> Option<io::Result<()>> {
    if !FCHMODAT2.load(Ordering::Relaxed) {
        return None;
    }
    let c = match cstr(name) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: `c` is a valid C string; the other arguments are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            flags,
        )
    };
    match check(r as libc::c_int) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            FCHMODAT2.store(false, Ordering::Relaxed);
            None
        }
        r => Some(r.map(drop)),
    }
}

/// chmod of the object behind `fd` (which may be `O_PATH`; it must not be a symlink).
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    if let Some(r) = fchmodat2(fd, OsStr::new(""), mode, libc::AT_EMPTY_PATH) {
        return r;
    }
    let c = proc_path(fd, None)?;
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// chmod of `name` in `dir`, never following a symlink (EOPNOTSUPP for one, as the
/// kernel says); "" is the object of `dir` itself.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    if name.is_empty() {
        return fchmod(dir, mode);
    }
    if let Some(r) = fchmodat2(dir, name, mode, libc::AT_SYMLINK_NOFOLLOW) {
        return r;
    }
    let fd = openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    if fstat(fd.as_fd())?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    fchmod(fd.as_fd(), mode)
}

/// The `ST_*` mount flags of the filesystem holding `fd` (fstatvfs's `f_flag`).
pub fn mount_flags(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let real = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` points to writable memory for one statvfs.
    check(unsafe { libc::fstatvfs(real.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() }.f_flag)
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> io::Result<libc::statfs> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` points to writable memory for one statfs.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// syncfs(2): writes out the whole filesystem holding `fd`. An `O_PATH` fd is reopened
/// first (syncfs needs a real open file).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    let real = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: plain syscall on an fd we own.
    check(unsafe { libc::syncfs(real.as_raw_fd()) }).map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) }).map(drop)
}

/// lseek(2) with `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no more data (ENXIO).
pub fn seek_data_or_hole(fd: BorrowedFd<'_>, offset: u64, hole: bool) -> io::Result<Option<u64>> {
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: plain syscall on a borrowed fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as i64, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// The FICLONE ioctl: makes `dst` share all of `src`'s data (a reflink; XFS, btrfs).
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are borrowed.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) }).map(drop)
}

/// copy_file_range(2) between explicit offsets; returns the bytes copied (0 at EOF).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut so = src_off as i64;
    let mut d = dst_off as i64;
    // SAFETY: the offset pointers are valid for the call; the fds are borrowed.
    check_size(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
    } as libc::ssize_t)
}

/// One entry of a directory as getdents returns it.
#[derive(Debug, Clone)]
pub struct RawDirent {
    pub name: OsString,
    pub ino: u64,
    pub dtype: u8,
}

/// Reads every entry of the directory `dir` (any fd of it, `O_PATH` too), `.` and `..`
/// excluded. The directory is opened again as `.` of `dir` (no path is walked) and read
/// with getdents64 straight into one buffer.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<RawDirent>> {
    let fd = openat_noatime(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: `buf` is writable for its length; `fd` is an open directory we own.
        let n = check_size(unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        } as libc::ssize_t)?;
        if n == 0 {
            return Ok(out);
        }
        parse_dirents(&buf[..n], &mut out);
    }
}

/// Appends the entries of one getdents64 result (`struct linux_dirent64` records: d_ino
/// u64, d_off i64, d_reclen u16, d_type u8, then the NUL-terminated name).
fn parse_dirents(mut buf: &[u8], out: &mut Vec<RawDirent>) {
    const NAME: usize = 19;
    while buf.len() >= NAME {
        let ino = u64::from_ne_bytes(buf[0..8].try_into().expect("8 bytes"));
        let reclen = usize::from(u16::from_ne_bytes(buf[16..18].try_into().expect("2 bytes")));
        let dtype = buf[18];
        let Some(rec) = buf.get(..reclen).filter(|_| reclen > NAME) else {
            return;
        };
        let name = &rec[NAME..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name != b"." && name != b".." {
            out.push(RawDirent {
                name: OsStr::from_bytes(name).to_os_string(),
                ino,
                dtype,
            });
        }
        buf = &buf[reclen..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry but `.` and `..`, with its type, also when the listing takes more than
    /// one getdents64 buffer, and through an `O_PATH` fd.
    #[test]
    fn read_dir_lists_everything_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut want: Vec<String> = (0..3000).map(|i| format!("{i:0>200}")).collect();
        for n in &want {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        want.push("sub".into());
        want.sort();
        let root = openat(
            std::fs::File::open("/").unwrap().as_fd(),
            dir.path().strip_prefix("/").unwrap().as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let got = read_dir(root.as_fd()).unwrap();
        let mut names: Vec<String> = got
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, want);
        let sub = got.iter().find(|e| e.name == "sub").unwrap();
        assert_eq!(sub.dtype, libc::DT_DIR);
        let ino = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(dir.path().join("sub")).unwrap(),
        );
        assert_eq!(sub.ino, ino);
    }

    /// chmod by name with fchmodat2 and with the `/proc` fallback (kernels before 6.6):
    /// the same modes, and a symlink is refused, not followed.
    #[test]
    fn chmod_at_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        for (i, native) in [true, false].into_iter().enumerate() {
            FCHMODAT2.store(native, Ordering::Relaxed);
            let mode = 0o640 + i as u32;
            chmod_at(d.as_fd(), OsStr::new("f"), mode).unwrap();
            let st = fstatat(d.as_fd(), OsStr::new("f")).unwrap();
            assert_eq!(st.st_mode & 0o7777, mode);
            let e = chmod_at(d.as_fd(), OsStr::new("l"), 0o600).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
            let st = fstatat(d.as_fd(), OsStr::new("f")).unwrap();
            assert_eq!(st.st_mode & 0o7777, mode, "the symlink was followed");
        }
        FCHMODAT2.store(true, Ordering::Relaxed);
    }
}

/// A file handle as `name_to_handle_at` gives it: its type and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    pub kind: i32,
    pub bytes: Vec<u8>,
}

/// `struct file_handle` with room for the kernel's largest handle (MAX_HANDLE_SZ).
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: libc::c_int,
    f_handle: [u8; 128],
}

/// The file handle of `dir/name` (not following a symlink; `name` "" is `dir` itself).
/// EOPNOTSUPP where the filesystem cannot make handles.
pub fn name_to_handle_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileHandle> {
    let c = cstr(name)?;
    let mut h = RawHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: `h` is a file_handle with `handle_bytes` of room after its header; `c` is
    // NUL-terminated; `mount_id` is a valid out-pointer; the fd is borrowed.
    check(unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c.as_ptr(),
            (&mut h as *mut RawHandle).cast(),
            &mut mount_id,
            flags,
        )
    })?;
    let n = (h.handle_bytes as usize).min(h.f_handle.len());
    Ok(FileHandle {
        kind: h.handle_type,
        bytes: h.f_handle[..n].to_vec(),
    })
}

/// Opens the object `handle` names on the filesystem of `mount_fd` (needs
/// CAP_DAC_READ_SEARCH), as an `O_PATH` fd.
pub fn open_by_handle_at(mount_fd: BorrowedFd<'_>, handle: &FileHandle) -> io::Result<OwnedFd> {
    if handle.bytes.len() > 128 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut h = RawHandle {
        handle_bytes: handle.bytes.len() as u32,
        handle_type: handle.kind,
        f_handle: [0; 128],
    };
    h.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `h` is a complete file_handle; the kernel only reads it; the fd is borrowed.
    owned(unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&mut h as *mut RawHandle).cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })
}

/// The UUID of the filesystem `fd` is on (FS_IOC_GETFSUUID); all zeros where it has none.
/// A directory is opened as its `.`, anything else through `/proc`.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let mut u = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    let fd = match openat(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => reopen(fd, libc::O_RDONLY)?,
        r => r?,
    };
    // SAFETY: FS_IOC_GETFSUUID fills a `struct fsuuid2` (a length byte and 16 bytes).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFSUUID, &mut u) })?;
    let mut out = [0; 16];
    let n = usize::from(u.len).min(16);
    out[..n].copy_from_slice(&u.uuid[..n]);
    Ok(out)
}

/// A private clone of the mount `root` is on, rooted at `root`, detached from every
/// namespace, with no atime flags (`noatime`, `relatime`, `nodiratime` cleared), as
/// kernel overlayfs clones its upper mount: reads through it record every access, and the
/// overlay's own policy decides when to read. A readable fd of its root.
pub fn clone_mount_all_atimes(root: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
    /// MOUNT_ATTR__ATIME (the atime mode bits) and MOUNT_ATTR_NODIRATIME.
    const ATIME_BITS: u64 = 0x70 | 0x80;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_long | libc::AT_EMPTY_PATH as libc::c_long;
    // SAFETY: the path is a valid empty C string; the fd is borrowed for the call.
    let tree = owned(unsafe {
        libc::syscall(libc::SYS_open_tree, root.as_raw_fd(), c"".as_ptr(), flags) as libc::c_int
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_STRICTATIME,
        attr_clr: ATIME_BITS,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a complete mount_attr of the size passed; the kernel only reads it.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as libc::c_int
    })?;
    openat(
        tree.as_fd(),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
}
