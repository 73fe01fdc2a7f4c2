//! Awkward names and paths behave as on the kernel; the daemon never follows a symlink
//! inside a layer, even one swapped in behind its back.
mod common;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[test]
fn long_odd_and_non_utf8_names() {
    require_fuse!();
    let f = Fixture::new(1);
    let long = "L".repeat(255);
    put(f.lower(0), &long, "long");
    let odd = OsStr::from_bytes(b"new\nline \xff\xfe bytes");
    fs::write(f.lower(0).join(odd), "odd").unwrap();
    let m = f.mount();
    assert_eq!(read(m.p(&long)), "long");
    fs::write(m.p(&long), "changed").unwrap();
    assert_eq!(read(f.upper.join(&long)), "changed");
    assert_eq!(
        errno(fs::write(m.p(&"M".repeat(256)), "")),
        libc::ENAMETOOLONG
    );
    assert_eq!(fs::read(m.path.join(odd)).unwrap(), b"odd");
    let listed: Vec<_> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.iter().any(|n| n == odd));
    let odd2 = OsStr::from_bytes(b"\x80\x81 created");
    fs::write(m.path.join(odd2), "x").unwrap();
    fs::rename(m.path.join(odd), m.path.join(OsStr::from_bytes(b"ren\xff"))).unwrap();
    assert!(f.upper.join(odd2).exists());
    assert!(
        fs::symlink_metadata(f.upper.join(odd)).is_ok(),
        "whiteout for the old name"
    );
    std::os::unix::fs::symlink("../../../../etc/passwd", m.p("dots")).unwrap();
    assert_eq!(
        fs::read_link(f.upper.join("dots")).unwrap(),
        PathBuf::from("../../../../etc/passwd")
    );
}

#[test]
fn deep_paths() {
    require_fuse!();
    let f = Fixture::new(1);
    let mut rel = PathBuf::new();
    for i in 0..200 {
        rel.push(format!("d{i:03}xxxxxxxxxxxx"));
    }
    fs::create_dir_all(f.lower(0).join(&rel)).unwrap();
    fs::write(f.lower(0).join(&rel).join("leaf"), "deep").unwrap();
    let m = f.mount();
    assert_eq!(read(m.path.join(&rel).join("leaf")), "deep");
    fs::write(m.path.join(&rel).join("leaf"), "written").unwrap();
    assert_eq!(read(f.upper.join(&rel).join("leaf")), "written");
}

#[test]
fn symlink_swapped_into_the_upper_is_not_followed() {
    require_fuse!();
    let f = Fixture::new(1);
    let outside = f.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    put(f.lower(0), "d/x", "lower");
    put(f.lower(0), "e/y", "lower");
    let m = f.mount();
    // The kernel has looked the directories up as lower-only.
    assert_eq!(read(m.p("d/x")), "lower");
    assert_eq!(read(m.p("e/y")), "lower");
    // Someone plants symlinks in the upper where copy-up will create the parents.
    std::os::unix::fs::symlink(&outside, f.upper.join("d")).unwrap();
    std::os::unix::fs::symlink("../outside", f.upper.join("e")).unwrap();
    let r1 = fs::write(m.p("d/x"), "escaped?");
    let r2 = fs::write(m.p("e/y"), "escaped?");
    assert!(r1.is_err() && r2.is_err(), "{r1:?} {r2:?}");
    assert!(names(&outside).is_empty(), "wrote outside the layers");
    // And a symlink planted in a lower directory is never followed when resolving paths.
    fs::remove_file(f.upper.join("d")).unwrap();
    fs::remove_file(f.upper.join("e")).unwrap();
    drop(m);
    fs::remove_dir_all(f.lower(0).join("e")).unwrap();
    std::os::unix::fs::symlink(&outside, f.lower(0).join("e")).unwrap();
    fs::write(outside.join("secret"), "s").unwrap();
    let m = f.mount();
    assert!(
        fs::symlink_metadata(m.p("e"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::os::unix::fs::lchown(m.p("e"), Some(3), Some(3)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(&outside).unwrap()),
        0,
        "chown went through the symlink"
    );
}
