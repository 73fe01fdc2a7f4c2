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

/// Names of a directory listed through `readdir` in the order given, and a digest-free
/// summary: (count, sorted names equal).
fn listing(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A directory of 1,000,000 visible entries merged from a lower and the upper (with a
/// thousand whiteouts; on a tmpfs, which is quick to fill): layerfs lists exactly the names kernel overlayfs lists, looks up
/// and changes entries in it, and its memory stays bounded.
#[test]
fn million_entries() {
    require_fuse!();
    let t0 = std::time::Instant::now();
    let (f, _tmpfs) = Fixture::on_tmpfs(1, "4g");
    let (lower, upper) = (f.lower(0).join("big"), f.upper.join("big"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    for i in 0..600_000 {
        fs::File::create(lower.join(format!("f{i}"))).unwrap();
    }
    for i in 0..401_000 {
        fs::File::create(upper.join(format!("g{i}"))).unwrap();
    }
    for i in 0..1000 {
        mkwhiteout(&f.upper, &format!("big/f{i}"));
    }
    eprintln!("million_entries: layers made in {:?}", t0.elapsed());
    let k = f.kernel_mount();
    let mut theirs = listing(&k.p("big"));
    drop(k);
    eprintln!(
        "million_entries: kernel overlayfs listed at {:?}",
        t0.elapsed()
    );
    assert_eq!(theirs.len(), 1_000_000);
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    let mut ours = listing(&m.p("big"));
    assert_eq!(ours.len(), 1_000_000);
    eprintln!("million_entries: layerfs listed at {:?}", t0.elapsed());
    theirs.sort();
    ours.sort();
    assert!(
        ours == theirs,
        "layerfs and kernel overlayfs list different names"
    );
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap();
    eprintln!("million_entries: daemon RSS after listing: {rss}");
    assert_eq!(read(m.p("big/f599999")), "");
    assert!(!m.p("big/f999").exists());
    fs::write(m.p("big/new"), "n").unwrap();
    fs::remove_file(m.p("big/f1000")).unwrap();
    fs::remove_file(m.p("big/g0")).unwrap();
    assert_eq!(listing(&m.p("big")).len(), 1_000_000 - 1);
}

/// Listings carry attributes (readdirplus): a walk that stats every entry makes no LOOKUP,
/// and every reference those entries gave the kernel is given back when it forgets them.
#[test]
fn a_walk_needs_no_lookups_and_leaks_no_references() {
    require_fuse!();
    let f = Fixture::new(1);
    for d in 0..3 {
        for i in 0..100 {
            put(f.lower(0), &format!("d{d}/f{i}"), "");
        }
    }
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=debug", &log);
    let mut seen = 0;
    for d in 0..3 {
        for e in fs::read_dir(m.p(&format!("d{d}"))).unwrap() {
            fs::symlink_metadata(e.unwrap().path()).unwrap();
            seen += 1;
        }
    }
    assert_eq!(seen, 300);
    let text = fs::read_to_string(&log).unwrap();
    let lookups = text.lines().filter(|l| l.contains("] lookup ")).count();
    assert!(text.contains("] readdirplus "), "no readdirplus request");
    // The three directories themselves are looked up; their entries are not.
    assert!(lookups <= 3, "{lookups} lookups for a walk of 300 entries");
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("unmounted: 1 inodes, 0 open handles"),
        "references left after the kernel forgot everything:\n{}",
        text.lines()
            .filter(|l| l.contains("unmounted"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The kernel keeps a directory's listing (FOPEN_CACHE_DIR): listing it again makes no
/// READDIR request until the directory changes through the mount; after a change the
/// next listing is fresh and shows it.
#[test]
fn a_listing_again_is_served_by_the_kernel_until_the_directory_changes() {
    require_fuse!();
    let f = Fixture::new(1);
    for i in 0..50 {
        put(f.lower(0), &format!("d/f{i}"), "");
    }
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=debug", &log);
    let listings = || {
        let text = fs::read_to_string(&log).unwrap();
        text.lines()
            .filter(|l| l.contains("] readdir ") || l.contains("] readdirplus "))
            .count()
    };
    assert_eq!(listing(&m.p("d")).len(), 50);
    let first = listings();
    assert!(first > 0, "no listing request");
    assert_eq!(listing(&m.p("d")).len(), 50);
    assert_eq!(listing(&m.p("d")).len(), 50);
    assert_eq!(listings(), first, "a repeated listing reached the daemon");
    fs::remove_file(m.p("d/f7")).unwrap();
    fs::write(m.p("d/new"), "").unwrap();
    let now = listing(&m.p("d"));
    assert!(
        listings() > first,
        "the listing after a change was not fresh"
    );
    assert_eq!(now.len(), 50);
    assert!(now.contains(&"new".into()) && !now.contains(&"f7".into()));
    drop(m);
    daemon.wait().unwrap();
}

/// A lower entry removed while a listing is half read stays removed, also when the rest
/// of the listing carries attributes (as after a stat of an entry, like `ls -l`): the
/// entries still to come are not taken from the listing's cheap path (one stat in the
/// layer it was listed from) once the directory changed. (Whether the removed name is
/// still listed is unspecified, as for any directory; kernel overlayfs lists it.)
#[test]
fn an_entry_removed_during_a_listing_is_not_brought_back() {
    require_fuse!();
    let f = Fixture::new(1);
    for i in 0..3000 {
        put(f.lower(0), &format!("d/a-long-enough-name-{i:05}"), "");
    }
    // The daemon lists the lower in the order it reads it: the last name comes last.
    let last = fs::read_dir(f.lower(0).join("d"))
        .unwrap()
        .last()
        .unwrap()
        .unwrap()
        .file_name();
    let m = f.mount();
    // The C library reads 32 KiB of entries at a time: a few hundred of the 3,000.
    let mut listing = fs::read_dir(m.p("d")).unwrap();
    let first = listing.next().unwrap().unwrap();
    assert_ne!(first.file_name(), last);
    fs::symlink_metadata(first.path()).unwrap();
    fs::remove_file(m.p("d").join(&last)).unwrap();
    let mut rest = 0;
    for e in listing {
        let e = e.unwrap();
        if e.file_name() != last {
            fs::symlink_metadata(e.path()).unwrap();
        }
        rest += 1;
    }
    assert!(rest >= 3000 - 2, "{rest} entries after the first");
    let e = fs::symlink_metadata(m.p("d").join(&last)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}
