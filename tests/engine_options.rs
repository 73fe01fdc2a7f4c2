//! The options container engines pass: uid/gid mapping, squashing, noxattrs, timeout,
//! volatile, fsync=0.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn uid_and_gid_mapping() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "root-owned", "r");
    put(f.lower(0), "user-owned", "u");
    std::os::unix::fs::chown(f.lower(0).join("user-owned"), Some(1), Some(2)).unwrap();
    put(f.lower(0), "unmapped", "x");
    std::os::unix::fs::chown(f.lower(0).join("unmapped"), Some(900000), Some(900000)).unwrap();
    fs::set_permissions(f.lower(0), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = f.mount_with(&[
        "-o",
        "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1:1:100000:65536,allow_other",
    ]);
    assert_eq!(owner(&m.p("root-owned")), (1000, 1000));
    assert_eq!(owner(&m.p("user-owned")), (100000, 100001));
    assert_eq!(owner(&m.p("unmapped")), (65534, 65534));
    // Written back unmapped: a file created by (host) uid 1000 is stored as 0.
    assert_success(&as_user(&format!("echo n > {}", m.p("new").display())));
    assert_eq!(owner(&m.p("new")), (1000, 1000));
    assert_eq!(owner(&f.upper.join("new")), (0, 0));
    std::os::unix::fs::chown(m.p("root-owned"), Some(100005), Some(100006)).unwrap();
    assert_eq!(owner(&f.upper.join("root-owned")), (6, 7));
    assert_eq!(owner(&m.p("root-owned")), (100005, 100006));
}

#[test]
fn squash_and_noxattrs() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "a");
    std::os::unix::fs::chown(f.lower(0).join("a"), Some(7), Some(8)).unwrap();
    xattr::set(f.lower(0).join("a"), "user.k", b"v").unwrap();
    let m = f.mount_with(&["-o", "squash_to_root,noxattrs=1,timeout=5"]);
    assert_eq!(owner(&m.p("a")), (0, 0));
    assert_eq!(errno(xattr::get(m.p("a"), "user.k")), libc::EOPNOTSUPP);
    assert_eq!(
        errno(xattr::set(m.p("a"), "user.k", b"w")),
        libc::EOPNOTSUPP
    );
    drop(m);
    let m = f.mount_with(&["-o", "squash_to_uid=42,squash_to_gid=43"]);
    assert_eq!(owner(&m.p("a")), (42, 43));
}

#[test]
fn volatile_marks_the_workdir() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount_with(&["-o", "volatile"]);
    let fh = fs::File::create(m.p("f")).unwrap();
    fh.sync_all().unwrap();
    drop(fh);
    assert!(f.work.join("work/incompat/volatile").is_dir());
    drop(m);
    // Kept across a remount, as the kernel expects.
    let _m = f.mount_with(&["-o", "fsync=0"]);
    assert!(f.work.join("work/incompat/volatile").is_dir());
}
