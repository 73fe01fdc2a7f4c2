//! Everyday operations: link, symlink, mknod, readlink, statfs, fsync, truncate,
//! fallocate, big files, and the open flags.
mod common;
use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::process::Command;

#[test]
fn links_and_symlinks() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "A");
    let m = f.mount();
    fs::hard_link(m.p("a"), m.p("b")).unwrap();
    let (sa, sb) = (
        fs::metadata(m.p("a")).unwrap(),
        fs::metadata(m.p("b")).unwrap(),
    );
    assert_eq!(sa.ino(), sb.ino());
    assert_eq!(sb.nlink(), 2);
    fs::write(m.p("b"), "changed").unwrap();
    assert_eq!(read(m.p("a")), "changed");
    std::os::unix::fs::symlink("a", m.p("s")).unwrap();
    assert_eq!(fs::read_link(m.p("s")).unwrap().to_str(), Some("a"));
    assert_eq!(read(m.p("s")), "changed");
    assert!(
        fs::symlink_metadata(f.upper.join("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(errno(fs::hard_link(m.p("nope"), m.p("x"))), libc::ENOENT);
    assert_eq!(errno(fs::read_link(m.p("a"))), libc::EINVAL);
}

#[test]
fn mknod_all_types() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount_with(&["-o", "dev"]);
    let run = |args: &[&str]| {
        assert!(Command::new("mknod").args(args).status().unwrap().success());
    };
    run(&[m.p("fifo").to_str().unwrap(), "p"]);
    run(&[m.p("chr").to_str().unwrap(), "c", "1", "3"]);
    run(&[m.p("blk").to_str().unwrap(), "b", "7", "200"]);
    let sock = std::os::unix::net::UnixListener::bind(m.p("sock")).unwrap();
    drop(sock);
    let t = |n: &str| fs::symlink_metadata(m.p(n)).unwrap();
    assert!(t("fifo").file_type().is_fifo());
    assert!(t("chr").file_type().is_char_device());
    assert_eq!(t("chr").rdev(), libc::makedev(1, 3));
    assert!(t("blk").file_type().is_block_device());
    assert_eq!(t("blk").rdev(), libc::makedev(7, 200));
    assert!(t("sock").file_type().is_socket());
    assert_eq!(
        fs::symlink_metadata(f.upper.join("chr")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    // /dev/null semantics through the mount (it is mounted with dev).
    fs::write(m.p("chr"), "discarded").unwrap();
}

#[test]
fn statfs_is_the_uppers() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount();
    let out = Command::new("stat")
        .args(["-f", "-c", "%t %b %S"])
        .arg(&m.path)
        .output()
        .unwrap();
    let up = Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(&f.upper)
        .output()
        .unwrap();
    let ours = String::from_utf8(out.stdout).unwrap();
    let (magic, rest) = ours.trim().split_once(' ').unwrap();
    assert_eq!(magic, "65735546", "FUSE magic as f_type");
    assert_eq!(rest, String::from_utf8(up.stdout).unwrap().trim());
}

#[test]
fn data_operations() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "t", "0123456789");
    let m = f.mount();
    let mut h = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("t"))
        .unwrap();
    h.set_len(4).unwrap();
    h.sync_all().unwrap();
    h.sync_data().unwrap();
    h.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    h.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123");
    let ok = Command::new("fallocate")
        .args(["-l", "1M"])
        .arg(m.p("t"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(fs::metadata(m.p("t")).unwrap().len(), 1 << 20);
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("t"))
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let mut h = fs::OpenOptions::new().write(true).open(m.p("t")).unwrap();
    h.seek(SeekFrom::Start((6 << 30) - 2)).unwrap();
    h.write_all(b"zz").unwrap();
    assert_eq!(fs::metadata(m.p("t")).unwrap().len(), 6 << 30);
}

#[test]
fn open_flags() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "f", "abc");
    fs::create_dir(f.lower(0).join("d")).unwrap();
    std::os::unix::fs::symlink("f", f.lower(0).join("l")).unwrap();
    let m = f.mount();
    let mut a = fs::OpenOptions::new().append(true).open(m.p("f")).unwrap();
    a.write_all(b"d").unwrap();
    a.write_all(b"e").unwrap();
    assert_eq!(read(m.p("f")), "abcde");
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.p("f"))
        ),
        libc::EEXIST
    );
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("g"))
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("f"))
        .unwrap();
    assert_eq!(read(m.p("f")), "");
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(m.p("f"))
        ),
        libc::ENOTDIR
    );
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(m.p("d"))
        .unwrap();
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(m.p("l"))
        ),
        libc::ELOOP
    );
    assert_eq!(errno(fs::write(m.p("d"), "x")), libc::EISDIR);
}

#[test]
fn read_only_union() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "a", "top");
    put(f.lower(1), "a", "bottom");
    put(f.lower(1), "b", "b");
    let m = f.mount_read_only();
    assert_eq!(read(m.p("a")), "top");
    assert_eq!(names(&m.path), ["a", "b"]);
    assert_eq!(errno(fs::write(m.p("c"), "x")), libc::EROFS);
    assert_eq!(errno(fs::write(m.p("a"), "x")), libc::EROFS);
    assert_eq!(errno(fs::remove_file(m.p("b"))), libc::EROFS);
    assert_eq!(errno(fs::create_dir(m.p("d"))), libc::EROFS);
    assert_eq!(errno(xattr::set(m.p("a"), "user.x", b"1")), libc::EROFS);
    assert_eq!(errno(fs::rename(m.p("a"), m.p("z"))), libc::EROFS);
}

/// The mount's per-mount flags and its superblock options, from /proc/self/mountinfo.
fn mount_options(m: &Mounted<'_>) -> (Vec<String>, Vec<String>) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == m.path.to_str())
        .unwrap()
        .to_string();
    let (head, tail) = line.split_once(" - ").unwrap();
    let split = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    (
        split(head.split(' ').nth(5).unwrap()),
        split(tail.split(' ').nth(2).unwrap()),
    )
}

#[test]
fn root_mounts_let_every_user_in_with_devices_and_setuid() {
    require_fuse!();
    let f = Fixture::new(1);
    assert!(
        Command::new("mknod")
            .arg(f.lower(0).join("null"))
            .args(["c", "1", "3"])
            .status()
            .unwrap()
            .success()
    );
    // Root's defaults: as fuse-overlayfs gives itself.
    let m = f.mount();
    let (flags, sb) = mount_options(&m);
    for absent in ["nodev", "nosuid", "noexec"] {
        assert!(!flags.iter().any(|o| o == absent), "{flags:?}");
    }
    assert!(flags.iter().any(|o| o == "noatime"), "{flags:?}");
    for present in ["allow_other", "default_permissions"] {
        assert!(sb.iter().any(|o| o == present), "{sb:?}");
    }
    fs::write(m.p("null"), "x").unwrap();
    drop(m);
    // Given explicitly, the restrictions win.
    let m = f.mount_with(&["-o", "nodev,nosuid,strictatime"]);
    let (flags, sb) = mount_options(&m);
    for present in ["nodev", "nosuid"] {
        assert!(flags.iter().any(|o| o == present), "{flags:?}");
    }
    assert!(
        !flags.iter().any(|o| o == "noatime" || o == "relatime"),
        "{flags:?}"
    );
    assert!(sb.iter().any(|o| o == "allow_other"), "{sb:?}");
    assert_eq!(errno(fs::write(m.p("null"), "x")), libc::EACCES);
}
