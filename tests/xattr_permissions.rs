//! Owner and mode kept in override xattrs (`xattr_permissions=1|2`, layers written by
//! containers/storage with `force_mask`): shown from the xattr, checked by the kernel as
//! shown, written back to the xattr, carried through copy-up and remounts.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

const CONTAINERS: &str = "user.containers.override_stat";
const PRIVILEGED: &str = "security.fuseoverlayfs.override_stat";

fn stat(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode())
}

fn set_override(p: &Path, name: &str, value: &str) {
    xattr::set(p, name, value.as_bytes()).unwrap();
}

fn get_override(p: &Path, name: &str) -> String {
    String::from_utf8(xattr::get(p, name).unwrap().expect("override missing")).unwrap()
}

/// A lower as containers/storage writes it with force_mask: every object owned by the
/// engine (here 1000) with mode 0700/0600, the real owner and mode in the override.
fn forced_lower(root: &Path) {
    for d in ["bin", "etc", "dev", "home/u"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    put(root, "bin/sh", "#!/bin/sh\necho hi\n");
    put(root, "etc/shadow", "secret\n");
    put(root, "dev/null", "");
    let entries = [
        ("", "0:0:0755:dir"),
        ("bin", "0:0:0755:dir"),
        ("etc", "0:0:0755:dir"),
        ("dev", "0:0:0755:dir"),
        ("home", "0:0:0755:dir"),
        ("home/u", "1000:1000:0750:dir"),
        ("bin/sh", "0:0:0755:file"),
        ("etc/shadow", "0:42:0640:file"),
        ("dev/null", "0:0:0666:char-1-3"),
    ];
    for (rel, value) in entries {
        let p = root.join(rel);
        let dir = p.is_dir();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if dir { 0o700 } else { 0o600 }),
        )
        .unwrap();
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
        set_override(&p, CONTAINERS, value);
    }
}

#[test]
fn containers_overrides_are_shown_checked_and_written() {
    require_fuse!();
    let f = Fixture::new(1);
    forced_lower(f.lower(0));
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = f.mount_with(&["-o", "xattr_permissions=2,allow_other,dev"]);

    assert_eq!(stat(&m.p("bin/sh")), (0, 0, 0o100755));
    assert_eq!(stat(&m.p("etc/shadow")), (0, 42, 0o100640));
    assert_eq!(stat(&m.p("home/u")), (1000, 1000, 0o40750));
    assert_eq!(stat(&m.p("")), (0, 0, 0o40755));
    let null = fs::symlink_metadata(m.p("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    // readdir agrees with stat on the type.
    let found = run(
        "find",
        &[m.p("dev").as_os_str(), "-type".as_ref(), "c".as_ref()],
    );
    assert!(String::from_utf8_lossy(&found.stdout).contains("dev/null"));

    // The kernel checks access against the shown owner and mode.
    assert_success(&as_user(&format!("cat {}", m.p("bin/sh").display())));
    assert!(
        !as_user(&format!("cat {}", m.p("etc/shadow").display()))
            .status
            .success()
    );
    assert_success(&as_user(&format!("ls {}", m.p("home/u").display())));

    // Overrides are layer metadata: hidden and refused.
    assert!(xattr::list(m.p("bin/sh")).unwrap().all(|n| n != CONTAINERS));
    assert_eq!(
        errno(xattr::get(m.p("bin/sh"), CONTAINERS)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(xattr::set(m.p("bin/sh"), CONTAINERS, b"0:0:04755")),
        libc::EOPNOTSUPP
    );

    // chown/chmod write the override; the real inode keeps the daemon's owner.
    std::os::unix::fs::chown(m.p("bin/sh"), Some(5), Some(6)).unwrap();
    fs::set_permissions(m.p("bin/sh"), fs::Permissions::from_mode(0o4711)).unwrap();
    assert_eq!(stat(&m.p("bin/sh")), (5, 6, 0o104711));
    assert_eq!(
        get_override(&f.upper.join("bin/sh"), CONTAINERS),
        "5:6:04711:file"
    );
    // The real inode never carries setuid/setgid from an override.
    let real = fs::metadata(f.upper.join("bin/sh")).unwrap();
    assert_eq!((real.uid(), real.mode() & 0o7600), (0, 0o600));
    assert_eq!(read(m.p("bin/sh")), "#!/bin/sh\necho hi\n");

    // New objects: the creator's owner in the override.
    assert_success(&as_user(&format!(
        "umask 027; echo x > {0}/new && mkdir {0}/newdir",
        m.p("home/u").display()
    )));
    assert_eq!(stat(&m.p("home/u/new")), (1000, 1000, 0o100640));
    assert_eq!(stat(&m.p("home/u/newdir")), (1000, 1000, 0o40750));
    assert_eq!(
        get_override(&f.upper.join("home/u/new"), CONTAINERS),
        "1000:1000:0640:file"
    );
    assert_eq!(fs::metadata(f.upper.join("home/u/new")).unwrap().uid(), 0);
    // The upper root says it keeps overrides, so it reads back the same as a lower.
    assert!(xattr::get(&f.upper, CONTAINERS).unwrap().is_some());
    drop(m);

    let upper_as_lower = format!("{}:{}", f.upper.display(), f.lower(0).display());
    let mut c = std::process::Command::new(BIN);
    c.args(["mount", &upper_as_lower, "--read-only"])
        .arg(&f.mnt);
    let m = f.run_mount(c);
    assert_eq!(stat(&m.p("bin/sh")), (5, 6, 0o104711));
    assert_eq!(stat(&m.p("home/u/new")), (1000, 1000, 0o100640));
    assert_eq!(stat(&m.p("etc/shadow")), (0, 42, 0o100640));
}

#[test]
fn overrides_copied_up_into_a_plain_upper_become_real() {
    require_fuse!();
    let f = Fixture::new(1);
    forced_lower(f.lower(0));
    let m = f.mount_with(&["-o", "dev"]);
    assert_eq!(stat(&m.p("etc/shadow")), (0, 42, 0o100640));
    // A copy-up without xattr_permissions gives the upper real owners and modes.
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("etc/shadow"))
        .unwrap();
    let real = fs::metadata(f.upper.join("etc/shadow")).unwrap();
    assert_eq!((real.uid(), real.gid(), real.mode()), (0, 42, 0o100640));
    assert!(
        xattr::get(f.upper.join("etc/shadow"), CONTAINERS)
            .unwrap()
            .is_none()
    );
    assert_eq!(stat(&m.p("etc/shadow")), (0, 42, 0o100640));
    // The stand-in device becomes a real one.
    std::os::unix::fs::chown(m.p("dev/null"), Some(0), Some(0)).unwrap();
    let dev = fs::symlink_metadata(f.upper.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(
        (dev.rdev(), dev.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
}

#[test]
fn privileged_overrides() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "a");
    let m = f.mount_with(&["-o", "xattr_permissions=1"]);
    assert_eq!(stat(&m.p("a")).0, 0);
    std::os::unix::fs::chown(m.p("a"), Some(7), Some(8)).unwrap();
    assert_eq!(stat(&m.p("a")), (7, 8, 0o100644));
    assert_eq!(
        get_override(&f.upper.join("a"), PRIVILEGED),
        "7:8:0644:file"
    );
    assert_eq!(fs::metadata(f.upper.join("a")).unwrap().uid(), 0);
    assert!(xattr::get(&f.upper, PRIVILEGED).unwrap().is_some());
    // A symlink cannot always carry the xattr; it still gets its owner.
    std::os::unix::fs::symlink("a", m.p("l")).unwrap();
    std::os::unix::fs::lchown(m.p("l"), Some(9), Some(9)).unwrap();
    assert_eq!(stat(&m.p("l")).0, 9);
}

#[test]
fn bad_xattr_permissions_values() {
    let f = Fixture::new(1);
    for v in ["3", "", "yes"] {
        let out = f
            .mount_command()
            .args(["-o", &format!("xattr_permissions={v}")])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("xattr_permissions"), "{err}");
    }
    assert!(!is_mounted(&f.mnt));
    assert!(xattr::list(&f.upper).unwrap().next().is_none());
}
