//! Extended attributes, reached through `/proc/self/fd` so `O_PATH` fds work too.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use super::{check, check_size, cstr};

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
pub struct XattrTarget {
    path: CString,
    follow: bool,
}

impl XattrTarget {
    pub fn at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Self> {
        if name.is_empty() {
            return Self::fd(dir);
        }
        Ok(XattrTarget {
            path: proc_path(dir, Some(name))?,
            follow: false,
        })
    }

    pub fn fd(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(XattrTarget {
            path: proc_path(fd, None)?,
            follow: true,
        })
    }

    /// The value of xattr `name`, or ENODATA.
    pub fn get(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let n = cstr(name)?;
        let get = if self.follow {
            libc::getxattr
        } else {
            libc::lgetxattr
        };
        read_growing(256, 1 << 20, |buf| {
            // SAFETY: both strings are valid and `buf` is writable for its length.
            unsafe {
                get(
                    self.path.as_ptr(),
                    n.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        })
    }

    /// The names of all xattrs, each without its NUL.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        let list = if self.follow {
            libc::listxattr
        } else {
            libc::llistxattr
        };
        let buf = read_growing(1024, 1 << 22, |buf| {
            // SAFETY: the path is a valid C string and `buf` is writable for its length.
            unsafe { list(self.path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
        })?;
        Ok(buf
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsStr::from_bytes(s).to_os_string())
            .collect())
    }

    pub fn set(&self, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let n = cstr(name)?;
        // SAFETY: both strings are valid and `value` is readable for its length.
        check(unsafe {
            if self.follow {
                libc::setxattr(
                    self.path.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            } else {
                libc::lsetxattr(
                    self.path.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            }
        })
        .map(drop)
    }

    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let n = cstr(name)?;
        // SAFETY: both strings are valid C strings.
        check(unsafe {
            if self.follow {
                libc::removexattr(self.path.as_ptr(), n.as_ptr())
            } else {
                libc::lremovexattr(self.path.as_ptr(), n.as_ptr())
            }
        })
        .map(drop)
    }
}

/// Calls `read` with a buffer that grows on ERANGE up to `limit` bytes; returns what it read.
fn read_growing(
    initial: usize,
    limit: usize,
    mut read: impl FnMut(&mut [u8]) -> libc::ssize_t,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; initial];
    loop {
        match check_size(read(&mut buf)) {
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
