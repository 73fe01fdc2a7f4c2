//! Access times under `noatime`, `relatime` and `strictatime`, compared with kernel
//! overlayfs: reads, exec and writes of upper files, reads of lower files (whose own atime
//! never changes, as layers are read with O_NOATIME).
mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::{fs, thread, time::Duration};

fn atime(p: &Path) -> (i64, i64) {
    let m = fs::metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

fn set_old_times(p: &Path) {
    let ok = Command::new("touch")
        .args(["-m", "-d", "3 days ago"])
        .arg(p)
        .status()
        .unwrap()
        .success()
        && Command::new("touch")
            .args(["-a", "-d", "2 days ago"])
            .arg(p)
            .status()
            .unwrap()
            .success();
    assert!(ok);
}

fn populate(f: &Fixture) {
    put(&f.upper, "up", "upper file\n");
    put(&f.upper, "prog", "#!/bin/sh\ntrue\n");
    fs::set_permissions(f.upper.join("prog"), fs::Permissions::from_mode(0o755)).unwrap();
    put(f.lower(0), "low", "lower file\n");
    for p in [
        f.upper.join("up"),
        f.upper.join("prog"),
        f.lower(0).join("low"),
    ] {
        set_old_times(&p);
    }
}

/// Whether each access changed the access time the mount shows, and whether the lower
/// file's own access time changed.
fn accesses(f: &Fixture, m: &Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut step = |what: &str, path: &str, act: &dyn Fn()| {
        let before = atime(&m.join(path));
        // Timestamps must be able to differ.
        thread::sleep(Duration::from_millis(20));
        act();
        out.push((what.to_string(), atime(&m.join(path)) != before));
    };
    let cat = |p: &str| {
        let p = m.join(p);
        move || drop(fs::read(&p).unwrap())
    };
    step("first read of an upper file", "up", &cat("up"));
    step("second read", "up", &cat("up"));
    let prog = m.join("prog");
    let exec = move || assert!(Command::new(&prog).status().unwrap().success());
    step("first exec", "prog", &exec);
    step("second exec", "prog", &exec);
    let up = m.join("up");
    let append = move || {
        use std::io::Write;
        let mut h = fs::OpenOptions::new().append(true).open(&up).unwrap();
        h.write_all(b"more\n").unwrap();
    };
    step("write", "up", &append);
    step("read after the write", "up", &cat("up"));
    let low_before = atime(&f.lower(0).join("low"));
    step("read of a lower file", "low", &cat("low"));
    out.push((
        "the lower file's own atime".into(),
        atime(&f.lower(0).join("low")) != low_before,
    ));
    out
}

#[test]
fn atime_follows_the_mount_option_as_on_kernel_overlayfs() {
    require_fuse!();
    for option in ["noatime", "relatime", "strictatime"] {
        let run = |kernel: bool| {
            // A strictatime filesystem below, so only the mount's option limits updates.
            let (f, _tmpfs) = Fixture::on_tmpfs(1, "64m,strictatime");
            populate(&f);
            let m = if kernel {
                f.kernel_mount_with(option)
            } else {
                f.mount_with(&["-o", option])
            };
            accesses(&f, &m.path)
        };
        let (k, ours) = (run(true), run(false));
        assert_eq!(
            k, ours,
            "{option}: kernel (left) and layerfs (right) differ"
        );
    }
}

#[test]
fn noatime_is_the_default_as_root() {
    require_fuse!();
    let (f, _tmpfs) = Fixture::on_tmpfs(1, "64m,strictatime");
    populate(&f);
    let m = f.mount();
    assert!(accesses(&f, &m.path).iter().all(|(_, changed)| !changed));
}

/// Access, modify and change time of `p`, to the nanosecond.
fn amc(p: &Path) -> [(i64, i64); 3] {
    let m = fs::symlink_metadata(p).unwrap();
    [
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
        (m.ctime(), m.ctime_nsec()),
    ]
}

/// xfstests generic/003's sequence over one upper, each step's times checked as it checks
/// them (`want`: Y where a time must move, N where it must not): relatime reads, a
/// nodiratime remount, creation in a directory, noatime reads and changes, strictatime
/// reads, and a read-only strictatime mount. `remount(options)` unmounts and mounts the
/// union again. Returns what moved when it must not, or did not when it must.
fn generic_003(root: &Path, remount: &mut dyn FnMut(&str)) -> Vec<String> {
    let mut errors = Vec::new();
    let mut check = |want: &str, before: [(i64, i64); 3], after: [(i64, i64); 3], step: &str| {
        for (i, what) in ["access", "modify", "change"].into_iter().enumerate() {
            let moved = before[i] != after[i];
            match (want.as_bytes()[i], moved) {
                (b'Y', false) => errors.push(format!("{what} time has not been updated {step}")),
                (b'N', true) => errors.push(format!("{what} time has changed {step}")),
                _ => {}
            }
        }
    };
    let pause = || thread::sleep(Duration::from_millis(50));
    let read = |p: &Path| drop(fs::read(p).unwrap());
    // The times of `p` before and after a read of it, a moment apart.
    let read_step = |p: &Path| {
        let before = amc(p);
        pause();
        read(p);
        (before, amc(p))
    };
    let (dir1, dir2) = (root.join("dir1"), root.join("dir2"));
    let (file1, file2, file3) = (dir1.join("file1"), dir2.join("file2"), dir2.join("file3"));
    remount("relatime");
    fs::create_dir(&dir1).unwrap();
    fs::write(&file1, "aaa\n").unwrap();
    let (s0, s1) = read_step(&file1);
    check("YNN", s0, s1, "after accessing file1 first time");
    let (s1, s2) = read_step(&file1);
    check("NNN", s1, s2, "after accessing file1 second time");
    remount("nodiratime");
    check("NNN", s2, amc(&file1), "for file1 after remount");
    fs::create_dir(&dir2).unwrap();
    let d0 = amc(&dir2);
    pause();
    fs::write(&file2, "bbb\n").unwrap();
    let d1 = amc(&dir2);
    check("NYY", d0, d1, "for dir2 after file creation");
    let (f0, f1) = read_step(&file2);
    check("YNN", f0, f1, "after accessing file2");
    check("NNN", d1, amc(&dir2), "for dir2 after file access");
    remount("noatime");
    fs::write(&file3, "ccc\n").unwrap();
    let (g0, g1) = read_step(&file3);
    check("NNN", g0, g1, "after accessing file3 first time");
    let m0 = amc(&file1);
    pause();
    fs::write(&file1, "xyz\n").unwrap();
    let m1 = amc(&file1);
    check("NYY", m0, m1, "after modifying file1");
    pause();
    let renamed = dir1.join("file1_renamed");
    fs::rename(&file1, &renamed).unwrap();
    check("NNY", m1, amc(&renamed), "after changing file1");
    remount("strictatime");
    read(&file3);
    let g2 = amc(&file3);
    check("YNN", g1, g2, "after accessing file3 second time");
    let (g2, g3) = read_step(&file3);
    check("YNN", g2, g3, "after accessing file3 third time");
    pause();
    let (d3, g4) = (amc(&dir2), amc(&file3));
    remount("ro,strictatime");
    fs::read_dir(&dir2).unwrap().for_each(drop);
    read(&file3);
    check("NNN", d3, amc(&dir2), "for dir in read-only filesystem");
    check("NNN", g4, amc(&file3), "for file in read-only filesystem");
    errors
}

/// generic/003 over an upper on a relatime filesystem (as most are): kernel overlayfs
/// reads its upper through a clone of the mount without atime flags, so only its own
/// options decide; so does layerfs, with its default options and `passthrough=all`.
#[test]
fn generic_003_atime_and_ctime_as_on_kernel_overlayfs() {
    require_fuse!();
    let run = |kernel: bool, extra: &[&str]| {
        let (f, _tmpfs) = Fixture::on_tmpfs(1, "64m,relatime");
        let mut mounted: Option<Mounted<'_>> = None;
        let mut remount = |options: &str| {
            drop(mounted.take());
            mounted = Some(if kernel {
                f.clear_work();
                f.kernel_mount_with(options)
            } else {
                let mut args = vec!["-o", options];
                args.extend(extra);
                f.mount_with(&args)
            });
        };
        let errors = generic_003(&f.mnt, &mut remount);
        drop(mounted);
        errors
    };
    assert_eq!(run(true, &[]), Vec::<String>::new(), "kernel overlayfs");
    for extra in [&[][..], &["-o", "passthrough=all"]] {
        assert_eq!(run(false, extra), Vec::<String>::new(), "layerfs {extra:?}");
    }
}
