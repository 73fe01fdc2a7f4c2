//! Metadata-only copy-up (`metacopy=on`), in kernel overlayfs's on-disk format: the upper
//! file is a sparse stub of the lower's size carrying `trusted.overlay.metacopy` (an empty
//! value: no fs-verity digest), with its origin and, once its path differs from the
//! lower's, a redirect to it. The data stays in the lower until the first open for
//! writing or truncation copies it into the stub, which then loses the xattr.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::XattrTarget;
use crate::whiteout::XattrNs;

fn xattr_name(ns: XattrNs) -> &'static OsStr {
    OsStr::new(match ns {
        XattrNs::Trusted => "trusted.overlay.metacopy",
        XattrNs::User => "user.overlay.metacopy",
    })
}

/// Whether the regular file `dir/name` is a metacopy stub.
pub fn is_stub(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNs) -> io::Result<bool> {
    Ok(XattrTarget::at(dir, name)?
        .get_if_any(xattr_name(ns))?
        .is_some())
}

/// Marks the file `dir/name` (being built in the work directory) a metacopy stub.
pub fn mark(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNs) -> io::Result<()> {
    XattrTarget::at(dir, name)?.set(xattr_name(ns), b"", 0)
}

/// The stub `dir/name` now holds its data.
pub fn unmark(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNs) -> io::Result<()> {
    match XattrTarget::at(dir, name)?.remove(xattr_name(ns)) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        r => r,
    }
}
