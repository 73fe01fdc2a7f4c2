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
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: both strings are valid and `buf` is writable for its length.
            let r = unsafe {
                if self.follow {
                    libc::getxattr(
                        self.path.as_ptr(),
                        n.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                } else {
                    libc::lgetxattr(
                        self.path.as_ptr(),
                        n.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                }
            };
            match check_size(r) {
                Ok(len) => {
                    buf.truncate(len);
                    return Ok(buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The names of all xattrs, each without its NUL.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: the path is a valid C string and `buf` is writable for its length.
            let r = unsafe {
                if self.follow {
                    libc::listxattr(self.path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                } else {
                    libc::llistxattr(self.path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
            };
            match check_size(r) {
                Ok(len) => {
                    buf.truncate(len);
                    return Ok(buf
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| OsStr::from_bytes(s).to_os_string())
                        .collect());
                }
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 22 => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => return Err(e),
            }
        }
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
