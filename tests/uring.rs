//! `uring=on`: requests come over io_uring queues, one per CPU, where the kernel offers
//! FUSE over io_uring (the fuse module's `enable_uring`), and through /dev/fuse where it
//! does not, said once. (`tools/test.sh` also runs the whole suite with `uring=on`.)
mod common;
use common::*;
use std::fs;
use std::path::Path;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Sets the fuse module's `enable_uring` for the guard's life, then puts it back.
struct EnableUring(String);

impl EnableUring {
    fn set(on: bool) -> Self {
        let old = fs::read_to_string(PARAM).unwrap().trim().to_string();
        fs::write(PARAM, if on { "Y" } else { "N" }).unwrap();
        EnableUring(old)
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, &self.0);
    }
}

/// The names of the daemon's threads.
fn threads(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            fs::read_to_string(t.path().join("comm"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// What `get` returns once `done` holds of it, or after 5 s, whichever comes first.
fn polled<T>(get: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let start = std::time::Instant::now();
    let mut value = get();
    while !done(&value) && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        value = get();
    }
    value
}

/// The scheduling policy of each of the daemon's io_uring queue threads.
fn queue_policies(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("uring-"))
        })
        .map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).unwrap();
            // Field 41, `policy`; the fields after the name's ')' start at field 3.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(41 - 3).unwrap().parse().unwrap()
        })
        .collect()
}

/// Creates, writes, renames, lists, reads and removes through the mount; what it read.
fn workload(m: &Path) -> (String, Vec<String>) {
    fs::create_dir(m.join("new")).unwrap();
    fs::write(m.join("new/a"), "written\n").unwrap();
    fs::rename(m.join("new/a"), m.join("new/b")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("lower"))
        .map(|mut f| std::io::Write::write_all(&mut f, b"more\n"))
        .unwrap()
        .unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    let mut names: Vec<String> = fs::read_dir(m)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let text = read(m.join("lower")) + &read(m.join("new/b"));
    (text, names)
}

#[test]
fn requests_come_over_io_uring_where_the_kernel_offers_it() {
    require_fuse!();
    if !Path::new(PARAM).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this kernel has no FUSE over io_uring ({PARAM}) under CI=true"
        );
        eprintln!("skipping: no FUSE over io_uring in this kernel");
        return;
    }
    for on in [true, false] {
        let _param = EnableUring::set(on);
        let f = Fixture::new(1);
        put(f.lower(0), "lower", "lower\n");
        put(f.lower(0), "gone", "x");
        let log = f.dir.path().join("daemon.log");
        let mut c = f.mount_command();
        c.args(["-o", "uring=on"]);
        let (mut daemon, m) = f.spawn_logged(c, "layerfs=info", &log);
        let (text, listed) = workload(&m.p(""));
        // The mount is live before the queue threads start: wait a while for them.
        let cpus = std::thread::available_parallelism().unwrap().get();
        let queue_count =
            |names: &[String]| names.iter().filter(|n| n.starts_with("uring-")).count();
        let names = polled(
            || threads(daemon.id()),
            |names| !on || queue_count(names) >= 2 * cpus,
        );
        let queues = queue_count(&names);
        assert_eq!(text, "lower\nmore\nwritten\n");
        assert_eq!(listed, ["lower", "new"]);
        if on {
            // Between requests every queue thread waits as SCHED_IDLE, so the answer it
            // commits leaves its caller on its CPU (ring.rs); root can go back to normal.
            let policies = polled(
                || queue_policies(daemon.id()),
                |p| p.iter().all(|&p| p == libc::SCHED_IDLE as u32),
            );
            assert!(!policies.is_empty());
            assert!(
                policies.iter().all(|&p| p == libc::SCHED_IDLE as u32),
                "queue thread policies {policies:?}"
            );
        }
        drop(m);
        daemon.wait().unwrap();
        let said = fs::read_to_string(&log).unwrap();
        let fallback = "the kernel does not offer FUSE over io_uring";
        if on {
            // Two threads per CPU at least, each with its queue's entry.
            assert!(
                queues >= 2 * cpus,
                "{queues} io_uring threads: {names:?}\n{said}"
            );
            assert!(said.contains("io_uring on:"), "{said}");
        } else {
            assert_eq!(queues, 0, "{names:?}");
            assert_eq!(said.matches(fallback).count(), 1, "{said}");
        }
        assert_eq!(read(f.upper.join("lower")), "lower\nmore\n");
        assert_eq!(read(f.upper.join("new/b")), "written\n");
    }
}
