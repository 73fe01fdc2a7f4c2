//! The daemon's life: it detaches once serving, exits 0 on an external umount, unmounts on
//! SIGTERM/SIGINT, and a dead mount left by a killed daemon is recovered.
mod common;
use common::*;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn kill(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn stop_signals_unmount() {
    require_fuse!();
    for sig in ["-TERM", "-INT", "-HUP"] {
        let f = Fixture::new(1);
        put(f.lower(0), "a", "x");
        let m = f.mount();
        let pid = daemon_pid(&m.path);
        let _open = fs::File::open(m.p("a")).unwrap();
        kill(pid, sig);
        eventually("daemon exit", || !alive(pid));
        eventually("unmounted", || !is_mounted(&f.mnt));
    }
}

#[test]
fn external_umount_ends_daemon_with_status_zero() {
    require_fuse!();
    for unmounter in [&["umount"][..], &["fusermount3", "-u"]] {
        if Command::new(unmounter[0]).arg("-V").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{unmounter:?} missing"
            );
            continue;
        }
        let f = Fixture::new(1);
        put(f.lower(0), "a", "x");
        let mut child = f.mount_command().arg("-f").spawn().unwrap();
        eventually("mounted", || is_mounted(&f.mnt));
        assert_eq!(read(f.mnt.join("a")), "x");
        let ok = Command::new(unmounter[0])
            .args(&unmounter[1..])
            .arg(&f.mnt)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{unmounter:?}");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{unmounter:?}");
    }
}

#[test]
fn dead_mount_is_recovered() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    kill(pid, "-KILL");
    eventually("daemon gone", || !alive(pid));
    let e = errno(fs::metadata(&f.mnt));
    assert!(e == libc::ENOTCONN || e == libc::ECONNABORTED, "errno {e}");
    let out = f.mount_command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dead FUSE mount") && err.contains("layerfs umount"),
        "{err}"
    );
    assert_success(
        &Command::new(BIN)
            .arg("umount")
            .arg(&f.mnt)
            .output()
            .unwrap(),
    );
    assert!(!is_mounted(&f.mnt));
    drop(m);
    let m = f.mount();
    assert_eq!(read(m.p("a")), "x");
}

#[test]
fn umount_of_busy_mount_needs_lazy() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    let open = fs::File::open(m.p("a")).unwrap();
    let out = Command::new(BIN)
        .arg("umount")
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    let out = Command::new(BIN)
        .args(["umount", "-l"])
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(open);
    eventually("daemon exit", || !alive(pid));
}
