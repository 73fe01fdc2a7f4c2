//! Lookups fall through the layers: non-directories hide what is below, directories merge
//! until an opaque one, whiteouts in both formats hide names.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn upper_then_lowers_in_order() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "a", "from lower0");
    put(f.lower(1), "a", "from lower1");
    put(f.lower(1), "b", "only lower1");
    put(&f.upper, "c", "upper");
    put(f.lower(0), "c", "hidden");
    let m = f.mount();
    assert_eq!(read(m.p("a")), "from lower0");
    assert_eq!(read(m.p("b")), "only lower1");
    assert_eq!(read(m.p("c")), "upper");
    assert_eq!(errno(fs::metadata(m.p("nope"))), libc::ENOENT);
}

#[test]
fn non_directory_hides_directory_below() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "x", "file");
    put(f.lower(1), "x/inner", "hidden");
    let m = f.mount();
    assert!(fs::metadata(m.p("x")).unwrap().is_file());
    assert_eq!(errno(fs::metadata(m.p("x/inner"))), libc::ENOTDIR);
}

#[test]
fn directories_merge_until_opaque() {
    require_fuse!();
    let f = Fixture::new(3);
    put(f.lower(0), "d/a", "0");
    put(f.lower(1), "d/b", "1");
    put(f.lower(2), "d/c", "2");
    xattr::set(f.lower(1).join("d"), "trusted.overlay.opaque", b"y").unwrap();
    put(f.lower(0), "e/a", "0");
    put(f.lower(1), "e/.wh..wh..opq", "");
    put(f.lower(1), "e/b", "1");
    put(f.lower(2), "e/c", "2");
    let m = f.mount();
    assert_eq!(names(&m.p("d")), ["a", "b"]);
    assert_eq!(names(&m.p("e")), ["a", "b"]);
    assert_eq!(errno(fs::metadata(m.p("d/c"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.p("e/c"))), libc::ENOENT);
}

#[test]
fn whiteouts_of_both_formats_in_lowers() {
    require_fuse!();
    let f = Fixture::new(2);
    mkwhiteout(f.lower(0), "gone");
    put(f.lower(1), "gone", "x");
    put(f.lower(0), ".wh.gone2", "");
    put(f.lower(1), "gone2", "x");
    put(f.lower(1), "kept", "x");
    let m = f.mount();
    assert_eq!(errno(fs::metadata(m.p("gone"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.p("gone2"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.p(".wh.gone2"))), libc::ENOENT);
    assert_eq!(names(&m.path), ["kept"]);
}

#[test]
fn user_xattr_opaque_is_read() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "d/a", "0");
    put(f.lower(1), "d/b", "1");
    xattr::set(f.lower(0).join("d"), "user.overlay.opaque", b"y").unwrap();
    let m = f.mount();
    assert_eq!(names(&m.p("d")), ["a"]);
}

#[test]
fn whiteouts_in_the_upper_are_read() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    put(f.lower(0), "b", "x");
    put(f.lower(0), "d/x", "x");
    mkwhiteout(&f.upper, "a");
    put(&f.upper, ".wh.b", "");
    fs::create_dir(f.upper.join("d")).unwrap();
    put(&f.upper, "d/.wh..wh..opq", "");
    let m = f.mount();
    assert_eq!(names(&m.path), ["d"]);
    assert!(names(&m.p("d")).is_empty());
}

/// A miss is cached by the kernel (a negative entry): probing a missing name again costs no
/// request, and the name appears at once when it is created through the mount.
#[test]
fn misses_are_cached_until_the_name_is_made() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "present", "p");
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=debug", &log);
    let lookups = || {
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("] lookup 1 \"missing\""))
            .count()
    };
    for _ in 0..5 {
        assert_eq!(errno(fs::metadata(m.p("missing"))), libc::ENOENT);
    }
    assert_eq!(lookups(), 1, "five probes of a missing name");
    fs::write(m.p("missing"), "now").unwrap();
    assert_eq!(read(m.p("missing")), "now");
    fs::remove_file(m.p("missing")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("missing"))), libc::ENOENT);
    drop(m);
    daemon.wait().unwrap();
}

/// What cannot change behind the mount is asked for once: the kernel keeps an entry and
/// its attributes (long timeouts), a symlink's target (CACHE_SYMLINKS) and a file's pages
/// across opens (FOPEN_KEEP_CACHE), so asking again makes no request.
#[test]
fn what_cannot_change_behind_the_mount_is_asked_for_once() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "file", "data\n");
    std::os::unix::fs::symlink("file", f.lower(0).join("link")).unwrap();
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=debug", &log);
    let ino = fs::metadata(m.p("file")).unwrap().ino();
    for _ in 0..5 {
        assert_eq!(fs::metadata(m.p("file")).unwrap().len(), 5);
        assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("file"));
        assert_eq!(read(m.p("file")), "data\n");
    }
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        (
            count("] lookup 1 \"file\""),
            count(&format!("] getattr {ino}")),
            count("] readlink "),
            count("] read ")
        ),
        // The one GETATTR follows the first read, after which the kernel drops the access
        // time it holds.
        (1, 1, 1, 1),
        "lookups, getattrs, readlinks and reads for five rounds:\n{text}"
    );
}
