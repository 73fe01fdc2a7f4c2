//! rename: files across layers, RENAME_NOREPLACE, RENAME_EXCHANGE, EXDEV for directories
//! a lower layer holds, and the redirects `redirect_dir=on` writes instead.
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

/// A lower directory moved with redirect_dir=on costs no copy: the upper gets an empty
/// directory with a relative redirect (same parent) or an absolute one (another parent)
/// and a whiteout at the old name; its content still comes from the lower, also after a
/// remount, and new files land in the moved directory.
#[test]
fn lower_directories_move_with_redirects() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "ld/x", "x");
    put(f.lower(0), "ld/sub/y", "y");
    fs::create_dir(f.lower(0).join("other")).unwrap();
    let redirect = |rel: &str| {
        xattr::get(f.upper.join(rel), "trusted.overlay.redirect")
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    };
    {
        let m = f.mount_with(&["-o", "redirect_dir=on"]);
        fs::rename(m.p("ld"), m.p("ld2")).unwrap();
        fs::rename(m.p("ld2/sub"), m.p("other/sub2")).unwrap();
        put(&m.path, "ld2/new", "n");
        assert_eq!(names(&m.p("ld2")), ["new", "x"]);
        assert_eq!(read(m.p("other/sub2/y")), "y");
    }
    assert_eq!(redirect("ld2").as_deref(), Some("ld"));
    assert_eq!(redirect("other/sub2").as_deref(), Some("/ld/sub"));
    assert!(is_whiteout(&f.upper.join("ld")));
    assert!(is_whiteout(&f.upper.join("ld2/sub")));
    assert!(!f.upper.join("ld2/x").exists());
    let m = f.mount_with(&["-o", "redirect_dir=on"]);
    assert_eq!(names(&m.path), ["ld2", "other"]);
    assert_eq!(names(&m.p("ld2")), ["new", "x"]);
    assert_eq!(read(m.p("ld2/x")), "x");
    assert_eq!(read(m.p("other/sub2/y")), "y");
}

/// The other redirect_dir modes, as on the kernel: `off` (the default) and `follow` read
/// the redirects on disk but do not write them (EXDEV); `nofollow` refuses a lookup that
/// meets one (EPERM).
#[test]
fn redirect_modes_follow_or_refuse() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a/f", "F");
    {
        let m = f.mount_with(&["-o", "redirect_dir=on"]);
        fs::rename(m.p("a"), m.p("b")).unwrap();
    }
    for mode in [None, Some("redirect_dir=off"), Some("redirect_dir=follow")] {
        let m = match mode {
            None => f.mount(),
            Some(o) => f.mount_with(&["-o", o]),
        };
        assert_eq!(read(m.p("b/f")), "F", "{mode:?}");
        assert_eq!(
            errno(fs::rename(m.p("b"), m.p("c"))),
            libc::EXDEV,
            "{mode:?}"
        );
    }
    let m = f.mount_with(&["-o", "redirect_dir=nofollow"]);
    assert_eq!(errno(fs::metadata(m.p("b"))), libc::EPERM);
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
