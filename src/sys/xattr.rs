//! Extended attributes of a name in a directory fd (by the `*xattrat` calls where the
//! kernel has them) or of the object behind an fd (through `/proc/self/fd`, so `O_PATH`
//! fds work too).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{check_size, cstr};

/// `/proc/self/fd/N[/name]`: how xattr and chmod calls reach an object held by an fd.
pub fn proc_path(fd: BorrowedFd<'_>, name: Option<&OsStr>) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n.as_bytes());
    }
    cstr(OsStr::from_bytes(&p))
}

/// Where an xattr call goes: a name inside a directory (not followed if a symlink)
/// or the object behind an fd.
pub struct XattrTarget<'a> {
    dir: BorrowedFd<'a>,
    /// The name in `dir`; `None` for the object of `dir` itself.
    name: Option<CString>,
}

/// Whether the kernel has the `*xattrat` calls (Linux 6.13), which reach a name in a
/// directory fd in one call; before it, calls go through `/proc/self/fd/N/name`.
static XATTRAT: AtomicBool = AtomicBool::new(true);

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// The kernel's `struct xattr_args`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

impl<'a> XattrTarget<'a> {
    pub fn at(dir: BorrowedFd<'a>, name: &OsStr) -> io::Result<Self> {
        if name.is_empty() {
            return Self::fd(dir);
        }
        Ok(XattrTarget {
            dir,
            name: Some(cstr(name)?),
        })
    }

    /// The directory `dir` itself, reached as its `.` (one `*xattrat` call, where
    /// [`Self::fd`] of an `O_PATH` fd goes through `/proc`).
    pub fn dir(dir: BorrowedFd<'a>) -> Self {
        XattrTarget {
            dir,
            name: Some(c".".to_owned()),
        }
    }

    pub fn fd(fd: BorrowedFd<'a>) -> io::Result<Self> {
        Ok(XattrTarget {
            dir: fd,
            name: None,
        })
    }

    /// Runs `at` (an `*xattrat` call on the directory fd and name, not following a
    /// symlink) where the kernel has those calls, else `by_path` on the `/proc` path
    /// (following it only for the object of an fd).
    fn call(
        &self,
        at: impl FnOnce(libc::c_int, &CString) -> libc::c_long,
        by_path: impl FnOnce(&CString, bool) -> libc::c_long,
    ) -> io::Result<usize> {
        if let Some(name) = &self.name
            && XATTRAT.load(Ordering::Relaxed)
        {
            match check_size(at(self.dir.as_raw_fd(), name) as libc::ssize_t) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    XATTRAT.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        let name = self
            .name
            .as_deref()
            .map(|n| OsStr::from_bytes(n.to_bytes()));
        let path = proc_path(self.dir, name)?;
        check_size(by_path(&path, self.name.is_none()) as libc::ssize_t)
    }

    /// The value of xattr `name`, or ENODATA.
    pub fn get(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let n = cstr(name)?;
        read_growing(256, 1 << 20, |buf| {
            let size = buf.len();
            let ptr = buf.as_mut_ptr();
            self.call(
                |dir, path| {
                    let mut args = XattrArgs {
                        value: ptr as u64,
                        size: size as u32,
                        flags: 0,
                    };
                    // SAFETY: the strings are valid, `args` points at `buf`, writable for
                    // `size` bytes, and its size is passed.
                    unsafe {
                        libc::syscall(
                            SYS_GETXATTRAT,
                            dir,
                            path.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                            n.as_ptr(),
                            &mut args as *mut XattrArgs,
                            std::mem::size_of::<XattrArgs>(),
                        )
                    }
                },
                |path, follow| {
                    let get = if follow {
                        libc::getxattr
                    } else {
                        libc::lgetxattr
                    };
                    // SAFETY: both strings are valid and `buf` is writable for its length.
                    unsafe { get(path.as_ptr(), n.as_ptr(), ptr.cast(), size) as libc::c_long }
                },
            )
        })
    }

    /// The value of xattr `name`, or `None` where the object has none (or its filesystem
    /// keeps none, or refuses this namespace: see [`xattr_absent`]).
    pub fn get_if_any(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        match self.get(name) {
            Ok(v) => Ok(Some(v)),
            Err(e) if xattr_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names of all xattrs, each without its NUL.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        let buf = read_growing(1024, 1 << 22, |buf| {
            let (ptr, size) = (buf.as_mut_ptr(), buf.len());
            self.call(
                // SAFETY: the path is a valid C string and `buf` is writable for `size`.
                |dir, path| unsafe {
                    libc::syscall(
                        SYS_LISTXATTRAT,
                        dir,
                        path.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                        ptr,
                        size,
                    )
                },
                |path, follow| {
                    let list = if follow {
                        libc::listxattr
                    } else {
                        libc::llistxattr
                    };
                    // SAFETY: the path is a valid C string and `buf` is writable for `size`.
                    unsafe { list(path.as_ptr(), ptr.cast(), size) as libc::c_long }
                },
            )
        })?;
        Ok(buf
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsStr::from_bytes(s).to_os_string())
            .collect())
    }

    pub fn set(&self, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let n = cstr(name)?;
        self.call(
            |dir, path| {
                let args = XattrArgs {
                    value: value.as_ptr() as u64,
                    size: value.len() as u32,
                    flags: flags as u32,
                };
                // SAFETY: the strings are valid, `args` points at `value`, readable for
                // its length, and its size is passed.
                unsafe {
                    libc::syscall(
                        SYS_SETXATTRAT,
                        dir,
                        path.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                        n.as_ptr(),
                        &args as *const XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    )
                }
            },
            |path, follow| {
                let set = if follow {
                    libc::setxattr
                } else {
                    libc::lsetxattr
                };
                // SAFETY: both strings are valid and `value` is readable for its length.
                unsafe {
                    set(
                        path.as_ptr(),
                        n.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        flags,
                    ) as libc::c_long
                }
            },
        )
        .map(drop)
    }

    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let n = cstr(name)?;
        self.call(
            // SAFETY: both strings are valid C strings.
            |dir, path| unsafe {
                libc::syscall(
                    SYS_REMOVEXATTRAT,
                    dir,
                    path.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    n.as_ptr(),
                )
            },
            |path, follow| {
                let remove = if follow {
                    libc::removexattr
                } else {
                    libc::lremovexattr
                };
                // SAFETY: both strings are valid C strings.
                unsafe { remove(path.as_ptr(), n.as_ptr()) as libc::c_long }
            },
        )
        .map(drop)
    }
}

/// Calls `read` with a buffer that grows on ERANGE up to `limit` bytes; returns what it read.
fn read_growing(
    initial: usize,
    limit: usize,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; initial];
    loop {
        match read(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < limit => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether an xattr call failed because the xattr is not there to be had: absent
/// (ENODATA), not kept by the filesystem (EOPNOTSUPP), or a namespace this process may not
/// read (EPERM, e.g. `trusted.*` without CAP_SYS_ADMIN).
pub fn xattr_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) | Some(libc::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Both ways of reaching a name's xattrs give the same answers (the `/proc` way is
    /// what kernels before 6.13 get). Other tests may run meanwhile: either way is right.
    #[test]
    fn xattrat_and_proc_paths_agree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        for xattrat in [true, false] {
            XATTRAT.store(xattrat, Ordering::Relaxed);
            let t = XattrTarget::at(d.as_fd(), OsStr::new("f")).unwrap();
            let k = OsStr::new("user.k");
            t.set(k, b"v1", 0).unwrap();
            assert_eq!(t.get(k).unwrap(), b"v1");
            assert_eq!(t.list().unwrap(), vec![OsString::from("user.k")]);
            let big = vec![7u8; 3000];
            t.set(k, &big, 0).unwrap();
            assert_eq!(t.get(k).unwrap(), big, "grown past the first buffer");
            t.remove(k).unwrap();
            assert_eq!(t.get(k).unwrap_err().raw_os_error(), Some(libc::ENODATA));
            // A symlink is not followed: user xattrs are not allowed on it.
            let l = XattrTarget::at(d.as_fd(), OsStr::new("l")).unwrap();
            assert_eq!(
                l.set(k, b"x", 0).unwrap_err().raw_os_error(),
                Some(libc::EPERM)
            );
            assert!(t.get(k).is_err(), "the symlink's target was changed");
        }
        XATTRAT.store(true, Ordering::Relaxed);
    }
}
