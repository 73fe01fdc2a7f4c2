//! Thin wrappers over the Linux system calls layerfs needs: the only module with `unsafe`.
//!
//! Every wrapper takes borrowed fds and byte names (`&OsStr`, `&Path`), returns
//! `io::Result` carrying the real errno, and never follows a symlink unless its name says so.
//! `fs` holds file and directory calls, `xattr` extended attributes, `process` mounting,
//! forking and signals.
#![allow(unsafe_code)]

mod fs;
mod process;
pub mod uring;
mod xattr;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub use fs::*;
pub use process::*;
pub use xattr::*;

pub use libc::stat as Stat;

/// Turns a libc return value into `io::Result`, reading errno on -1.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A name or path as a C string; an interior NUL is EINVAL, as the kernel would say.
pub fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
