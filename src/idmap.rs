//! Owner translation between the ids stored in the layers and the ids the mount shows
//! (fuse-overlayfs's `uidmapping=`/`gidmapping=` and `squash_to_*`): stat shows mapped
//! owners, and owners written through the mount (create, chown) are stored unmapped.

/// The id shown for a stored id that no range maps (the kernel's overflow id).
pub const OVERFLOW_ID: u32 = 65534;

/// `len` ids starting at `stored` in the layers appear as ids starting at `shown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub stored: u32,
    pub shown: u32,
    pub len: u32,
}

/// A set of ranges; empty means ids pass through unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap(Vec<IdRange>);

impl IdMap {
    /// Parses `STORED:SHOWN:LEN[:STORED:SHOWN:LEN...]` (containers/storage writes
    /// container id, host id, size).
    pub fn parse(s: &str) -> Result<Self, String> {
        let nums: Result<Vec<u32>, _> = s.split(':').map(str::parse::<u32>).collect();
        let nums = nums.map_err(|_| format!("'{s}' is not a list of numbers"))?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(format!(
                "'{s}' is not a list of ID:MAPPED-ID:LENGTH triples"
            ));
        }
        let mut ranges = Vec::new();
        for t in nums.chunks(3) {
            let r = IdRange {
                stored: t[0],
                shown: t[1],
                len: t[2],
            };
            if r.len == 0
                || r.stored.checked_add(r.len - 1).is_none()
                || r.shown.checked_add(r.len - 1).is_none()
            {
                return Err(format!("'{s}' has an empty or overflowing range"));
            }
            ranges.push(r);
        }
        Ok(IdMap(ranges))
    }

    /// The id shown for stored id `id`.
    pub fn show(&self, id: u32) -> u32 {
        if self.0.is_empty() {
            return id;
        }
        self.0
            .iter()
            .find(|r| id >= r.stored && id - r.stored < r.len)
            .map(|r| r.shown + (id - r.stored))
            .unwrap_or(OVERFLOW_ID)
    }

    /// The id to store for shown id `id`; `None` when no range maps it.
    pub fn store(&self, id: u32) -> Option<u32> {
        if self.0.is_empty() {
            return Some(id);
        }
        self.0
            .iter()
            .find(|r| id >= r.shown && id - r.shown < r.len)
            .map(|r| r.stored + (id - r.shown))
    }
}

/// How owners are shown and stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    pub uids: IdMap,
    pub gids: IdMap,
    /// `squash_to_uid=` / `squash_to_root`: every object is shown with this owner.
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
}

impl Owners {
    /// The (uid, gid) shown for stored owners.
    pub fn show(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            self.squash_uid.unwrap_or_else(|| self.uids.show(uid)),
            self.squash_gid.unwrap_or_else(|| self.gids.show(gid)),
        )
    }

    /// The stored uid for a shown uid; an id no range maps is stored as the overflow id,
    /// as fuse-overlayfs does.
    pub fn store_uid(&self, uid: u32) -> u32 {
        self.uids.store(uid).unwrap_or(OVERFLOW_ID)
    }

    pub fn store_gid(&self, gid: u32) -> u32 {
        self.gids.store(gid).unwrap_or(OVERFLOW_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_map() {
        let m = IdMap::parse("0:1000:1:1:100000:65536").unwrap();
        assert_eq!(m.show(0), 1000);
        assert_eq!(m.show(1), 100000);
        assert_eq!(m.show(65536), 165535);
        assert_eq!(m.show(70000), OVERFLOW_ID);
        assert_eq!(m.store(1000), Some(0));
        assert_eq!(m.store(100005), Some(6));
        assert_eq!(m.store(5), None);
        assert_eq!(IdMap::default().show(42), 42);
    }

    #[test]
    fn bad_maps() {
        for s in ["", "1:2", "a:b:c", "0:0:0", "4294967295:0:2", "1:2:3:4"] {
            assert!(IdMap::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn squash_wins() {
        let o = Owners {
            uids: IdMap::parse("0:1000:10").unwrap(),
            squash_gid: Some(0),
            ..Owners::default()
        };
        assert_eq!(o.show(3, 77), (1003, 0));
        assert_eq!(o.store_uid(1003), 3);
        assert_eq!(o.store_uid(5), OVERFLOW_ID);
    }
}
