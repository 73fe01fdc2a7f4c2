//! Deleting lower objects leaves whiteouts; rmdir of merged directories; mkdir over a
//! whiteout makes an opaque directory; the AUFS format option.
mod common;
use common::*;
use std::fs;

#[test]
fn unlink_of_lower_file_leaves_chardev_whiteout() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    put(f.lower(0), "d/b", "x");
    let m = f.mount();
    fs::remove_file(m.p("a")).unwrap();
    fs::remove_file(m.p("d/b")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    assert!(is_whiteout(&f.upper.join("a")));
    assert!(is_whiteout(&f.upper.join("d/b")));
    assert!(f.lower(0).join("a").exists(), "lower untouched");
    assert!(names(&m.path).contains(&"d".to_string()));
    assert!(!names(&m.path).contains(&"a".to_string()));
}

#[test]
fn unlink_of_copied_up_file_replaces_it_with_whiteout() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    let m = f.mount();
    fs::write(m.p("a"), "changed").unwrap();
    assert!(f.upper.join("a").is_file());
    fs::remove_file(m.p("a")).unwrap();
    assert!(is_whiteout(&f.upper.join("a")));
    fs::write(m.p("new"), "n").unwrap();
    fs::remove_file(m.p("new")).unwrap();
    assert!(
        !f.upper.join("new").exists(),
        "pure upper file leaves no whiteout"
    );
}

#[test]
fn rmdir_of_merged_dir() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "d/a", "x");
    put(f.lower(1), "d/b", "x");
    fs::create_dir(f.lower(1).join("empty")).unwrap();
    let m = f.mount();
    assert_eq!(errno(fs::remove_dir(m.p("d"))), libc::ENOTEMPTY);
    fs::remove_file(m.p("d/a")).unwrap();
    fs::remove_file(m.p("d/b")).unwrap();
    assert!(names(&m.p("d")).is_empty());
    fs::remove_dir(m.p("d")).unwrap();
    fs::remove_dir(m.p("empty")).unwrap();
    assert!(is_whiteout(&f.upper.join("d")));
    assert!(is_whiteout(&f.upper.join("empty")));
    assert!(names(&m.path).is_empty());
    assert_eq!(errno(fs::remove_dir(m.p("d"))), libc::ENOENT);
}

#[test]
fn mkdir_over_whiteout_is_opaque() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "d/old", "x");
    let m = f.mount();
    fs::remove_file(m.p("d/old")).unwrap();
    fs::remove_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    assert!(names(&m.p("d")).is_empty());
    assert!(is_opaque(&f.upper.join("d")));
    fs::create_dir(m.p("fresh")).unwrap();
    assert!(!is_opaque(&f.upper.join("fresh")));
    // A file created over a whiteout replaces it.
    put(f.lower(0), "g", "lower");
    drop(m);
    let m = f.mount();
    fs::remove_file(m.p("g")).unwrap();
    fs::write(m.p("g"), "new").unwrap();
    assert_eq!(read(m.p("g")), "new");
    assert_eq!(read(f.upper.join("g")), "new");
}

#[test]
fn aufs_whiteout_option() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    put(f.lower(0), "d/x", "x");
    let m = f.mount_with(&["-o", "whiteout=aufs"]);
    fs::remove_file(m.p("a")).unwrap();
    fs::remove_file(m.p("d/x")).unwrap();
    fs::remove_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    assert!(f.upper.join(".wh.a").is_file());
    assert!(f.upper.join("d/.wh..wh..opq").is_file());
    assert_eq!(names(&m.path), ["d"]);
    assert!(names(&m.p("d")).is_empty());
    fs::write(m.p("a"), "back").unwrap();
    assert!(!f.upper.join(".wh.a").exists());
    assert_eq!(read(m.p("a")), "back");
}

#[test]
fn reserved_names_are_refused() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount();
    assert_eq!(errno(fs::write(m.p(".wh.x"), "")), libc::EINVAL);
    assert_eq!(errno(fs::create_dir(m.p(".wh.y"))), libc::EINVAL);
}

#[test]
fn fuse_overlayfs_environment_selects_aufs_whiteouts() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    let mut c = f.mount_command();
    c.env("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT", "1");
    let m = f.run_mount(c);
    fs::remove_file(m.p("a")).unwrap();
    assert!(f.upper.join(".wh.a").is_file());
    assert!(!f.upper.join("a").exists());
    assert!(names(&m.path).is_empty());
}
