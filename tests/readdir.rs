//! readdir: merged, deduplicated, whiteouts hidden, `.` and `..` present, offsets stable
//! while the directory changes.
mod common;
use common::*;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};

#[test]
fn merged_and_deduplicated() {
    require_fuse!();
    let f = Fixture::new(2);
    put(&f.upper, "d/u", "");
    put(f.lower(0), "d/a", "");
    put(f.lower(0), "d/u", "");
    put(f.lower(1), "d/b", "");
    put(f.lower(1), "d/a", "");
    mkwhiteout(f.lower(0), "d/gone");
    put(f.lower(1), "d/gone", "");
    put(f.lower(0), "d/.wh.gone2", "");
    put(f.lower(1), "d/gone2", "");
    put(f.lower(0), "d/.wh..wh..opq2", "");
    let m = f.mount();
    assert_eq!(names(&m.p("d")), ["a", "b", "u"]);
    let out = std::process::Command::new("ls")
        .arg("-a")
        .arg(m.p("d"))
        .output()
        .unwrap();
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listed, [".", "..", "a", "b", "u"]);
}

#[test]
fn listing_inode_numbers_match_stat() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "a", "");
    put(f.lower(1), "b", "");
    fs::create_dir(f.lower(1).join("c")).unwrap();
    let m = f.mount();
    for e in fs::read_dir(&m.path).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.ino(), fs::symlink_metadata(e.path()).unwrap().ino());
    }
}

#[test]
fn offsets_stable_while_directory_changes() {
    require_fuse!();
    let f = Fixture::new(1);
    let long = "x".repeat(200);
    for i in 0..600 {
        put(f.lower(0), &format!("d/{long}{i:04}"), "");
    }
    let m = f.mount();
    let mut it = fs::read_dir(m.p("d")).unwrap();
    let mut seen = HashSet::new();
    // Read a first chunk, then change the directory, then read on.
    for _ in 0..100 {
        seen.insert(it.next().unwrap().unwrap().file_name());
    }
    for i in 0..50 {
        fs::write(m.p(&format!("d/new{i}")), "").unwrap();
    }
    for i in 500..550 {
        fs::remove_file(m.p(&format!("d/{long}{i:04}"))).unwrap();
    }
    let mut dups = 0;
    for e in it {
        if !seen.insert(e.unwrap().file_name()) {
            dups += 1;
        }
    }
    assert_eq!(dups, 0, "entries repeated");
    for i in (0..500).chain(550..600) {
        let n = format!("{long}{i:04}");
        assert!(seen.contains(std::ffi::OsStr::new(&n)), "lost {n}");
    }
}

#[test]
fn opaque_and_empty_directories() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "d/a", "");
    let m = f.mount();
    fs::remove_file(m.p("d/a")).unwrap();
    assert!(names(&m.p("d")).is_empty());
    assert_eq!(fs::read_dir(m.p("d")).unwrap().count(), 0);
}
