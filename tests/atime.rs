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
