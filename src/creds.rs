//! Credentials the kernel does not send with a request but some of its rules need: the
//! calling process's supplementary groups and capabilities, read from `/proc/PID/status`
//! on the rare paths that need them (as libfuse's `fuse_req_getgroups` does).

/// `CAP_FSETID`: keeps setgid bits another user's change would clear.
pub const CAP_FSETID: u32 = 4;

/// What `/proc/PID/status` says of a process's credentials, and where its capabilities
/// count: in the daemon's user namespace, or (for a process in another one) over the ids
/// that namespace maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCreds {
    groups: Vec<u32>,
    effective_caps: u64,
    /// `None` in the daemon's user namespace; else the uid and gid ranges it maps.
    foreign: Option<(IdRanges, IdRanges)>,
}

/// The ranges a user namespace maps, as (first id outside, count).
type IdRanges = Vec<(u32, u32)>;

/// The ranges of an `uid_map`/`gid_map` file as (first id outside, count).
fn parse_map(text: &str) -> IdRanges {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[1], f[2]))
        })
        .collect()
}

fn mapped(ranges: &[(u32, u32)], id: u32) -> bool {
    ranges
        .iter()
        .any(|&(first, n)| id >= first && u64::from(id) < u64::from(first) + u64::from(n))
}

impl ProcessCreds {
    /// The credentials of thread or process `pid`, if it still exists.
    pub fn of(pid: u32) -> Option<Self> {
        let dir = format!("/proc/{pid}");
        let mut creds = Self::parse(&std::fs::read_to_string(format!("{dir}/status")).ok()?)?;
        let ns = |d: &str| std::fs::read_link(format!("{d}/ns/user")).ok();
        if ns(&dir) != ns("/proc/self") {
            let map = |f: &str| {
                parse_map(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default())
            };
            creds.foreign = Some((map("uid_map"), map("gid_map")));
        }
        Some(creds)
    }

    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let groups = field("Groups:")?
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        let effective_caps = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
        Some(ProcessCreds {
            groups,
            effective_caps,
            foreign: None,
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.groups.contains(&gid)
    }

    /// Whether the process has `cap` in the daemon's user namespace (the kernel's
    /// `capable`).
    pub fn has_cap(&self, cap: u32) -> bool {
        self.effective_caps & (1 << cap) != 0 && self.foreign.is_none()
    }

    /// Whether the process has `cap` over an object owned by `uid`:`gid` (the kernel's
    /// `capable_wrt_inode_uidgid`: in another user namespace, both ids must be mapped).
    pub fn has_cap_over(&self, cap: u32, uid: u32, gid: u32) -> bool {
        self.effective_caps & (1 << cap) != 0
            && match &self.foreign {
                None => true,
                Some((uids, gids)) => mapped(uids, uid) && mapped(gids, gid),
            }
    }
}

/// Whether this process is in the initial user namespace (the one whose capabilities FUSE
/// passthrough needs: registering a backing file takes CAP_SYS_ADMIN there).
pub fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 100 \nCapEff:\t0000000000000010\n";
        let c = ProcessCreds::parse(s).unwrap();
        assert!(c.in_group(100) && c.in_group(27) && !c.in_group(1000));
        assert!(c.has_cap(CAP_FSETID) && !c.has_cap(0));
        let none = ProcessCreds::parse("Groups:\t\nCapEff:\t0000000000000000\n").unwrap();
        assert!(!none.in_group(0) && !none.has_cap(CAP_FSETID));
        assert!(ProcessCreds::parse("Name:\tx\n").is_none());
        let me = ProcessCreds::of(std::process::id()).unwrap();
        assert_eq!(me.foreign, None);
        let mut other = c.clone();
        other.foreign = Some((
            parse_map("         0       1000          1\n"),
            vec![(1000, 1)],
        ));
        assert!(!other.has_cap(CAP_FSETID));
        assert!(other.has_cap_over(CAP_FSETID, 1000, 1000));
        assert!(!other.has_cap_over(CAP_FSETID, 1000, 0));
    }
}
