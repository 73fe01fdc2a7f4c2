//! The setuid and setgid bits a change clears, as the kernel's VFS decides them on kernel
//! overlayfs. With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves this to the daemon (and in
//! return stops asking it for `security.capability` before every write):
//!
//! - a write, truncate or fallocate by a caller without `CAP_FSETID` clears setuid, and
//!   setgid when the file is group-executable or the caller is not in its group;
//! - a chown of a non-directory clears setuid, and setgid when the file is
//!   group-executable or the caller is neither in its group nor has `CAP_FSETID`.

use crate::union::Caller;

/// What kind of change is made to a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Its content: write, truncate, fallocate, open with `O_TRUNC`.
    Data,
    /// Its owner or group.
    Chown,
}

/// The mode a file with `mode`, owned by `uid`:`gid` (as shown), has after `change` by
/// `caller`, or `None` when the change clears nothing. For a data change the caller is
/// known (`checked`, as the kernel's write flag says) or checked here to lack `CAP_FSETID`.
pub fn after(
    change: Change,
    mode: u32,
    (uid, gid): (u32, u32),
    caller: &Caller,
    checked: bool,
) -> Option<u32> {
    if mode & libc::S_IFMT == libc::S_IFDIR || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    if change == Change::Data && !checked && caller.has_fsetid() {
        return None;
    }
    let mut new = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 {
        let exec = mode & libc::S_IXGRP != 0;
        let keeps = match change {
            Change::Data => caller.in_group(gid),
            Change::Chown => caller.in_group_or_fsetid(uid, gid),
        };
        if exec || !keeps {
            new &= !libc::S_ISGID;
        }
    }
    (new != mode).then_some(new & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller whose process is gone, so only its ids count (uid 0 counts as capable).
    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: u32::MAX,
            umask: 0,
        }
    }

    #[test]
    fn data_changes() {
        let user = caller(1000, 1000);
        let f = libc::S_IFREG;
        assert_eq!(
            after(Change::Data, f | 0o4755, (0, 0), &user, true),
            Some(0o755)
        );
        assert_eq!(
            after(Change::Data, f | 0o2755, (0, 1000), &user, true),
            Some(0o755)
        );
        // setgid without group-execute stays for a group member, goes for anyone else.
        assert_eq!(
            after(Change::Data, f | 0o2644, (0, 1000), &user, true),
            None
        );
        assert_eq!(
            after(Change::Data, f | 0o2644, (0, 500), &user, true),
            Some(0o644)
        );
        assert_eq!(after(Change::Data, f | 0o644, (0, 0), &user, true), None);
        assert_eq!(
            after(Change::Data, libc::S_IFDIR | 0o2755, (0, 0), &user, true),
            None
        );
        // Unchecked: root (CAP_FSETID) keeps both.
        assert_eq!(
            after(Change::Data, f | 0o6755, (0, 0), &caller(0, 0), false),
            None
        );
    }

    #[test]
    fn chown_clears_even_for_root() {
        let root = caller(0, 0);
        let f = libc::S_IFREG;
        assert_eq!(
            after(Change::Chown, f | 0o6755, (0, 500), &root, false),
            Some(0o755)
        );
        assert_eq!(
            after(Change::Chown, f | 0o6644, (0, 500), &root, false),
            Some(0o2644)
        );
        let user = caller(1000, 1000);
        assert_eq!(
            after(Change::Chown, f | 0o2644, (0, 500), &user, false),
            Some(0o644)
        );
    }
}
