//! Credentials the kernel does not send with a request but some of its rules need: the
//! calling process's supplementary groups and capabilities, read from `/proc/PID/status`
//! on the rare paths that need them (as libfuse's `fuse_req_getgroups` does).

/// `CAP_FSETID`: keeps setgid bits another user's change would clear.
pub const CAP_FSETID: u32 = 4;

/// What `/proc/PID/status` says of a process's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCreds {
    groups: Vec<u32>,
    effective_caps: u64,
}

impl ProcessCreds {
    /// The credentials of thread or process `pid`, if it still exists.
    pub fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
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
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.groups.contains(&gid)
    }

    pub fn has_cap(&self, cap: u32) -> bool {
        self.effective_caps & (1 << cap) != 0
    }
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
        assert!(ProcessCreds::of(std::process::id()).is_some());
    }
}
