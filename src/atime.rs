//! Access times of upper objects, as the kernel's `noatime`, `relatime` and `strictatime`
//! decide them. The kernel never updates atime on a FUSE mount itself, and layerfs reads
//! the layers with `O_NOATIME`, so these updates are the only ones: as on kernel overlayfs,
//! a read touches the upper object, never a lower one.

use std::io;
use std::os::fd::BorrowedFd;

use crate::layers::Layer;
use crate::options::Atime;
use crate::sys::{self, Stat};

/// The policy in force for upper objects where their accesses are recorded through the
/// upper's own mount (see [`Layer::records_every_access`]): the union mount's, but no
/// more than that mount's flags allow.
pub fn effective(mount: Atime, upper_flags: u64) -> Atime {
    let upper = if upper_flags & libc::ST_NOATIME != 0 {
        Atime::Never
    } else if upper_flags & libc::ST_RELATIME != 0 {
        Atime::Relative
    } else {
        Atime::Strict
    };
    let rank = |a: Atime| match a {
        Atime::Never => 0,
        Atime::Relative => 1,
        Atime::Strict => 2,
    };
    if rank(upper) < rank(mount) {
        upper
    } else {
        mount
    }
}

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

/// Records an access of `upper`'s object behind `fd` under `policy`, as kernel overlayfs
/// does: the upper filesystem updates the access time itself, on a read of the object
/// (see [`Layer::touch`]), so the change time stays as it was, where a `utimensat` would
/// move it.
pub fn accessed(policy: Atime, upper: &Layer, fd: BorrowedFd<'_>) -> io::Result<()> {
    if policy == Atime::Never {
        return Ok(());
    }
    let st = sys::fstat(fd)?;
    if needs_update(policy, &st, sys::now()) {
        upper.touch(fd, st.st_mode & libc::S_IFMT == libc::S_IFDIR)?;
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
    fn the_upper_mount_limits_the_policy() {
        assert_eq!(effective(Atime::Strict, libc::ST_RELATIME), Atime::Relative);
        assert_eq!(effective(Atime::Strict, 0), Atime::Strict);
        assert_eq!(effective(Atime::Relative, libc::ST_NOATIME), Atime::Never);
        assert_eq!(effective(Atime::Never, 0), Atime::Never);
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
            &stat(999_000, 990_000, 999_500),
            now
        ));
        assert!(needs_update(
            Atime::Relative,
            &stat(990_000, 995_000, 990_000),
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
