//! Access times of upper objects, as the kernel's `noatime`, `relatime` and `strictatime`
//! decide them. The kernel never updates atime on a FUSE mount itself, and layerfs reads
//! the layers with `O_NOATIME`, so these updates are the only ones: as on kernel overlayfs,
//! a read touches the upper object, never a lower one.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::options::Atime;
use crate::sys::{self, SetTime, Stat};

/// A day: relatime updates an access time at least this often.
const RELATIME_MAX_AGE: i64 = 24 * 60 * 60;

/// Whether an access at `now` (seconds, nanoseconds) updates the access time of `st`
/// under `policy` (the kernel's `relatime_need_update` rule for relatime).
pub fn needs_update(policy: Atime, st: &Stat, now: (i64, i64)) -> bool {
    let atime = (st.st_atime, st.st_atime_nsec);
    match policy {
        Atime::Never => false,
        Atime::Strict => atime != now,
        Atime::Relative => {
            (st.st_mtime, st.st_mtime_nsec) >= atime
                || (st.st_ctime, st.st_ctime_nsec) >= atime
                || now.0 - atime.0 >= RELATIME_MAX_AGE
        }
    }
}

/// Records an access of the object behind `fd` (an upper object) under `policy`.
pub fn accessed(policy: Atime, fd: BorrowedFd<'_>) -> io::Result<()> {
    if policy == Atime::Never {
        return Ok(());
    }
    let st = sys::fstat(fd)?;
    if needs_update(policy, &st, sys::now()) {
        sys::utimensat(fd, OsStr::new(""), SetTime::Now, SetTime::Omit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn stat(atime: i64, mtime: i64, ctime: i64) -> Stat {
        let root = std::fs::File::open("/").unwrap();
        let mut st = sys::fstat(root.as_fd()).unwrap();
        (st.st_atime, st.st_atime_nsec) = (atime, 0);
        (st.st_mtime, st.st_mtime_nsec) = (mtime, 0);
        (st.st_ctime, st.st_ctime_nsec) = (ctime, 0);
        st
    }

    #[test]
    fn relatime_rules() {
        let now = (1_000_000, 0);
        // Read since the last change: no update.
        assert!(!needs_update(
            Atime::Relative,
            &stat(999_000, 990_000, 990_000),
            now
        ));
        // Changed since the last read, or the last read a day ago: update.
        assert!(needs_update(
            Atime::Relative,
            &stat(990_000, 995_000, 990_000),
            now
        ));
        assert!(needs_update(
            Atime::Relative,
            &stat(990_000, 980_000, 990_000),
            now
        ));
        assert!(needs_update(
            Atime::Relative,
            &stat(900_000, 800_000, 800_000),
            now
        ));
        assert!(needs_update(
            Atime::Strict,
            &stat(999_000, 990_000, 990_000),
            now
        ));
        assert!(!needs_update(Atime::Never, &stat(0, 5, 5), now));
    }
}
