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
    // The kernel aborts the connection when the daemon's last /dev/fuse reference goes.
    // Over io_uring the ring's commands hold it until the ring's deferred teardown has
    // cancelled them, after the process is gone; a request in that window ends with
    // ECANCELED. From the abort on, every request ends with ENOTCONN.
    eventually("connection aborted", || {
        errno(fs::metadata(&f.mnt)) == libc::ENOTCONN
    });
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

/// A shell with its working directory inside the mount, appending a line to `log` every
/// 20 ms through a file it keeps open, until killed; started and given 200 ms.
fn writer_inside(mnt: &std::path::Path) -> std::process::Child {
    let child = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>log; while :; do echo line >&3 || exit 3; ls . >/dev/null || exit 4; sleep 0.02; done")
        .current_dir(mnt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// Unmounting while a process works inside: a plain umount is refused as busy; a lazy one
/// detaches at once while the process goes on writing to the upper; the daemon exits once
/// the last user is gone, and everything written is in the upper.
#[test]
fn lazy_unmount_with_a_process_inside() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    let mut child = writer_inside(&m.path);
    let out = Command::new(BIN)
        .arg("umount")
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a busy mount was unmounted");
    let out = Command::new(BIN)
        .args(["umount", "--lazy"])
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!is_mounted(&f.mnt));
    let before = read(f.upper.join("log")).lines().count();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the daemon left a user behind");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process inside failed"
    );
    let after = read(f.upper.join("log")).lines().count();
    assert!(
        after > before,
        "no writes reached the upper after the detach"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    eventually("daemon exit", || !alive(pid));
    drop(m);
}

/// SIGTERM while a process works inside: the daemon syncs, detaches and exits; the mount
/// is gone, the process gets "Transport endpoint is not connected", and what it wrote
/// before is in the upper.
#[test]
fn stop_signal_with_a_process_inside() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    let mut child = writer_inside(&m.path);
    kill(pid, "-TERM");
    eventually("daemon exit", || !alive(pid));
    eventually("unmounted", || !is_mounted(&f.mnt));
    let status = child.wait().unwrap();
    assert!(
        matches!(status.code(), Some(3) | Some(4)),
        "the process inside should see its mount gone: {status:?}"
    );
    assert!(read(f.upper.join("log")).lines().count() >= 2);
    drop(m);
}
