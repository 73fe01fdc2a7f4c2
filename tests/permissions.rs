//! Ownership and permissions: new objects belong to the caller, the kernel checks modes
//! (default_permissions), setgid directories and setuid bits behave as on the kernel.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn new_objects_belong_to_the_caller() {
    require_fuse!();
    let f = Fixture::new(1);
    fs::create_dir(f.lower(0).join("pub")).unwrap();
    fs::set_permissions(f.lower(0).join("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    put(f.lower(0), "secret", "s");
    fs::set_permissions(f.lower(0).join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = f.mount_with(&["-o", "allow_other"]);
    let d = m.p("pub");
    let out = as_user(&format!(
        "cd {} && echo hi > file && mkdir dir && ln -s file link && mkfifo fifo",
        d.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["file", "dir", "link", "fifo"] {
        assert_eq!(owner(&d.join(n)), (1000, 1000), "{n} in the mount");
        assert_eq!(
            owner(&f.upper.join("pub").join(n)),
            (1000, 1000),
            "{n} in the upper"
        );
    }
    // Modes are enforced by the kernel.
    let out = as_user(&format!("cat {}", m.p("secret").display()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_user(&format!("echo x > {}", m.p("newfile").display()));
    assert!(!out.status.success(), "root dir is 0755 root");
    let out = as_user(&format!("chown 0 {}", d.join("file").display()));
    assert!(!out.status.success(), "chown must fail");
    assert_eq!(owner(&d.join("file")), (1000, 1000));
    // Sticky directory: cannot delete another user's file.
    put(&m.path, "pub/roots", "r");
    let out = as_user(&format!("rm -f {}", d.join("roots").display()));
    assert!(!out.status.success());
}

#[test]
fn setgid_directories_and_setuid_bits() {
    require_fuse!();
    let f = Fixture::new(1);
    let g = f.lower(0).join("group");
    fs::create_dir(&g).unwrap();
    std::os::unix::fs::chown(&g, Some(0), Some(500)).unwrap();
    fs::set_permissions(&g, fs::Permissions::from_mode(0o2777)).unwrap();
    put(f.lower(0), "suid", "#!/bin/sh\n");
    fs::set_permissions(f.lower(0).join("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = f.mount_with(&["-o", "allow_other"]);
    let out = as_user(&format!(
        "cd {} && touch f && mkdir sub",
        m.p("group").display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(owner(&m.p("group/f")), (1000, 500));
    let sub = fs::metadata(m.p("group/sub")).unwrap();
    assert_eq!((sub.uid(), sub.gid()), (1000, 500));
    assert!(sub.mode() & 0o2000 != 0, "subdirectory inherits setgid");
    // A write by another user drops the setuid bit, as the kernel does.
    let out = as_user(&format!("echo x >> {}", m.p("suid").display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(m.p("suid")).unwrap().mode() & 0o4000, 0);
}
