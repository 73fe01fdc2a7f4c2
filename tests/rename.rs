//! rename: files across layers, RENAME_NOREPLACE, RENAME_EXCHANGE, EXDEV for directories
//! a lower layer holds.
mod common;
use common::*;
use layerfs::sys;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;

fn rename2(m: &Mounted<'_>, a: &str, b: &str, flags: u32) -> i32 {
    let root = fs::File::open(&m.path).unwrap();
    errno(sys::renameat2(
        root.as_fd(),
        OsStr::new(a),
        root.as_fd(),
        OsStr::new(b),
        flags,
    ))
}

#[test]
fn file_across_layers() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "d1/a", "content");
    fs::create_dir(f.lower(0).join("d2")).unwrap();
    let m = f.mount();
    fs::rename(m.p("d1/a"), m.p("d2/b")).unwrap();
    assert_eq!(read(m.p("d2/b")), "content");
    assert_eq!(errno(fs::metadata(m.p("d1/a"))), libc::ENOENT);
    assert!(is_whiteout(&f.upper.join("d1/a")));
    assert_eq!(read(f.upper.join("d2/b")), "content");
    assert_eq!(read(f.lower(0).join("d1/a")), "content");
}

#[test]
fn rename_over_existing_lower_file() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "A");
    put(f.lower(0), "b", "B");
    let m = f.mount();
    fs::rename(m.p("a"), m.p("b")).unwrap();
    assert_eq!(read(m.p("b")), "A");
    assert_eq!(names(&m.path), ["b"]);
    // Back onto the whiteout left behind.
    fs::rename(m.p("b"), m.p("a")).unwrap();
    assert_eq!(names(&m.path), ["a"]);
    assert_eq!(read(m.p("a")), "A");
}

#[test]
fn noreplace_and_exchange() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "A");
    put(f.lower(0), "b", "B");
    let m = f.mount();
    assert_eq!(rename2(&m, "a", "b", libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(rename2(&m, "a", "c", libc::RENAME_EXCHANGE), libc::ENOENT);
    assert_eq!(rename2(&m, "a", "b", libc::RENAME_EXCHANGE), 0);
    assert_eq!(read(m.p("a")), "B");
    assert_eq!(read(m.p("b")), "A");
    assert_eq!(rename2(&m, "a", "c", libc::RENAME_NOREPLACE), 0);
    assert_eq!(names(&m.path), ["b", "c"]);
}

#[test]
fn lower_directories_get_exdev_upper_ones_move() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "ld/x", "x");
    let m = f.mount();
    assert_eq!(errno(fs::rename(m.p("ld"), m.p("ld2"))), libc::EXDEV);
    fs::create_dir(m.p("ud")).unwrap();
    put(&m.path, "ud/y", "y");
    fs::rename(m.p("ud"), m.p("ud2")).unwrap();
    assert_eq!(read(m.p("ud2/y")), "y");
    assert!(!f.upper.join("ud").exists());
    // `mv` falls back to copying.
    let ok = std::process::Command::new("mv")
        .arg(m.p("ld"))
        .arg(m.p("moved"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(read(m.p("moved/x")), "x");
    assert_eq!(errno(fs::metadata(m.p("ld"))), libc::ENOENT);
}

#[test]
fn directory_over_empty_merged_directory_becomes_opaque() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "target/old", "x");
    let m = f.mount();
    fs::remove_file(m.p("target/old")).unwrap();
    fs::create_dir(m.p("src")).unwrap();
    put(&m.path, "src/new", "n");
    fs::rename(m.p("src"), m.p("target")).unwrap();
    assert_eq!(names(&m.p("target")), ["new"]);
    assert!(is_opaque(&f.upper.join("target")));
    assert_eq!(errno(fs::rename(m.p("target"), m.p("b"))), 0);
    assert!(is_whiteout(&f.upper.join("target")));
}

#[test]
fn errors_match_the_kernel() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "file", "f");
    put(f.lower(0), "dir/x", "x");
    fs::create_dir(f.lower(0).join("empty")).unwrap();
    let m = f.mount();
    assert_eq!(errno(fs::rename(m.p("nope"), m.p("x"))), libc::ENOENT);
    assert_eq!(errno(fs::rename(m.p("file"), m.p("dir"))), libc::EISDIR);
    fs::create_dir(m.p("u")).unwrap();
    assert_eq!(errno(fs::rename(m.p("u"), m.p("file"))), libc::ENOTDIR);
    assert_eq!(errno(fs::rename(m.p("u"), m.p("dir"))), libc::ENOTEMPTY);
    fs::rename(m.p("u"), m.p("empty")).unwrap();
    assert!(is_opaque(&f.upper.join("empty")));
}
