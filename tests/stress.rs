//! Multi-process stress: 8 processes change a small shared namespace over two lower layers
//! for a bounded time (`LAYERFS_PROC_STRESS_SECS`, default 60) while a watchdog checks
//! that they keep making progress and the daemon's memory and fds are sampled. Then the
//! merged view is checked: hard-link counts agree with the names, and kernel overlayfs
//! mounted over the same layers shows exactly the same tree. After dropping the kernel's
//! caches and unmounting, the daemon reports no inode or handle left over.
//!
//! The worker processes are this test binary re-run as the `worker` test with
//! `LAYERFS_STRESS_WORKER` set; without it, `worker` does nothing.
mod common;
use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: u64 = 8;
const WATCHDOG: Duration = Duration::from_secs(30);

fn stress_secs() -> u64 {
    std::env::var("LAYERFS_PROC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// A random name in the shared namespace: `nJ` at the top or in one of the dirs `dI`.
fn name(r: &mut Rng) -> String {
    match r.pick(5) {
        0 => format!("n{}", r.pick(6)),
        d => format!("d{}/n{}", d - 1, r.pick(6)),
    }
}

/// Errnos a racing namespace legitimately produces.
fn expected(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EEXIST
                | libc::ENOTEMPTY
                | libc::EISDIR
                | libc::ENOTDIR
                | libc::EXDEV
                | libc::EINVAL
                | libc::ELOOP
                | libc::EPERM
        )
    )
}

/// One random operation; `Err` only for an unexpected error.
fn one_op(root: &Path, r: &mut Rng, id: u64) -> Result<(), String> {
    let a = root.join(name(r));
    let b = root.join(name(r));
    let op = r.pick(14);
    let res: std::io::Result<()> = match op {
        0 | 1 => fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&a)
            .and_then(|f| {
                let line = format!("w{id}.{}\n", r.pick(1000));
                f.write_all_at(line.as_bytes(), r.pick(4) * 16)
            }),
        2 => fs::File::open(&a).and_then(|mut f| {
            let mut s = Vec::new();
            f.read_to_end(&mut s).map(drop)
        }),
        3 => fs::rename(&a, &b),
        4 => fs::remove_file(&a),
        5 => fs::create_dir(&a),
        6 => fs::remove_dir(&a),
        7 => fs::set_permissions(&a, fs::Permissions::from_mode(0o600 | r.pick(0o200) as u32)),
        8 => fs::hard_link(&a, &b),
        9 => xattr::set(&a, format!("user.k{}", r.pick(3)), b"v"),
        10 => fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .and_then(|f| f.set_len(r.pick(64))),
        11 => std::os::unix::fs::symlink(format!("n{}", r.pick(6)), &a),
        12 => fs::read_dir(a.parent().unwrap()).and_then(|rd| {
            for e in rd {
                let _ = fs::symlink_metadata(e?.path());
            }
            Ok(())
        }),
        _ => fs::symlink_metadata(&a).map(drop),
    };
    match res {
        Err(e) if !expected(&e) => Err(format!("op {op} on {a:?} / {b:?}: {e}")),
        _ => Ok(()),
    }
}

/// The worker process: random operations until the deadline, progress written to a file.
#[test]
fn worker() {
    let Ok(spec) = std::env::var("LAYERFS_STRESS_WORKER") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (root, progress) = (PathBuf::from(parts[0]), PathBuf::from(parts[1]));
    let id: u64 = parts[2].parse().unwrap();
    let secs: u64 = parts[3].parse().unwrap();
    let mut r = Rng::new(0x5eed ^ (id << 8));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut done = 0u64;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if let Err(e) = one_op(&root, &mut r, id) {
            panic!("worker {id}: {e}");
        }
        done += 1;
        if last.elapsed() > Duration::from_millis(200) {
            fs::write(&progress, done.to_string()).unwrap();
            last = Instant::now();
        }
    }
    fs::write(&progress, done.to_string()).unwrap();
}

fn ops_done(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| {
            fs::read_to_string(p)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// (resident KiB, open fds) of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Every task's kernel stack of `pid`, for a watchdog failure.
fn stacks(pid: u32) -> String {
    let mut out = String::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        out.push_str(&format!(
            "{:?} {}: {}\n",
            t.file_name(),
            fs::read_to_string(p.join("comm"))
                .unwrap_or_default()
                .trim(),
            fs::read_to_string(p.join("stack")).unwrap_or_default()
        ));
    }
    out
}

/// Hard-link counts agree with the names the view shows for each inode.
fn check_nlink(root: &Path) {
    fn walk(dir: &Path, seen: &mut HashMap<u64, (u64, u64, PathBuf)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(&p, seen);
            } else {
                let entry = seen.entry(m.ino()).or_insert((0, m.nlink(), p.clone()));
                entry.0 += 1;
                assert_eq!(entry.1, m.nlink(), "{p:?}: names of one inode disagree");
            }
        }
    }
    let mut seen = HashMap::new();
    walk(root, &mut seen);
    for (names, nlink, p) in seen.values() {
        assert_eq!(names, nlink, "{p:?}: nlink {nlink} but {names} names");
    }
}

fn spawn_workers(root: &Path, progress: &[PathBuf], secs: u64) -> Vec<Child> {
    (0..WORKERS)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["worker", "--exact", "--nocapture", "--test-threads=1"])
                .env(
                    "LAYERFS_STRESS_WORKER",
                    format!(
                        "{}|{}|{i}|{secs}",
                        root.display(),
                        progress[i as usize].display()
                    ),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

#[test]
fn eight_processes_then_consistent_with_the_kernel() {
    require_fuse!();
    let secs = stress_secs();
    let f = Fixture::new(2);
    for i in 0..4 {
        put(f.lower(1), &format!("d{i}/n{i}"), "lower1\n");
        put(f.lower(1), &format!("d{i}/n5"), "lower1\n");
        put(f.lower(0), &format!("d{i}/n{}", i + 1), "lower0\n");
        put(f.lower(0), &format!("n{i}"), "lower0\n");
    }
    put(f.lower(1), "d3/n4/deep", "a directory in a lower\n");
    let log = f.dir.path().join("daemon.log");
    let (mut daemon, m) = f.spawn_logged(f.mount_command(), "layerfs=info", &log);
    let pid = daemon.id();
    let progress: Vec<PathBuf> = (0..WORKERS)
        .map(|i| f.dir.path().join(format!("progress{i}")))
        .collect();
    let (rss0, fds0) = usage(pid);

    let mut workers = spawn_workers(&m.path, &progress, secs);
    let (mut max_rss, mut max_fds) = (rss0, fds0);
    let (mut last, mut last_change) = (0, Instant::now());
    let mut running = true;
    while running {
        std::thread::sleep(Duration::from_millis(500));
        let (rss, fds) = usage(pid);
        max_rss = max_rss.max(rss);
        max_fds = max_fds.max(fds);
        let now = ops_done(&progress);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        running = workers.iter_mut().any(|w| w.try_wait().unwrap().is_none());
        if running && last_change.elapsed() > WATCHDOG {
            let dump = stacks(pid);
            for w in &mut workers {
                let _ = w.kill();
            }
            panic!("no progress for {WATCHDOG:?} after {last} operations\n{dump}");
        }
    }
    for (i, w) in workers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {i} failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let total = ops_done(&progress);
    let (rss1, fds1) = usage(pid);
    eprintln!(
        "stress: {WORKERS} processes, {secs} s, {total} operations; daemon RSS {rss0} KiB at start, \
         max {max_rss} KiB, {rss1} KiB at end; fds {fds0} at start, max {max_fds}, {fds1} at end"
    );
    assert!(total > WORKERS * 100, "too little work done: {total}");
    // Directory fds are cached, at most dirfds::CAPACITY of them; nothing else grows.
    let cap = layerfs::dirfds::CAPACITY;
    assert!(
        max_fds < fds0 + cap + 64,
        "fds grew from {fds0} to {max_fds}"
    );
    assert!(
        fds1 <= fds0 + cap,
        "fds left open after the workers exited: {fds1}"
    );
    assert!(max_rss < 256 * 1024, "daemon RSS reached {max_rss} KiB");

    check_nlink(&m.path);
    let ours = snapshot(&m.path, false);
    assert!(temporaries(&f.work).is_empty(), "stray temporaries");

    // The kernel forgets everything it no longer uses; the daemon's table follows, and
    // so do its directory fds (only the layer roots' stay).
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, fds2) = usage(pid);
    assert!(
        fds2 <= fds0 + 8,
        "fds {fds2} after the kernel forgot everything (start: {fds0})"
    );
    drop(m);
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("unmounted:"))
        .unwrap_or_else(|| panic!("no unmount report in the log:\n{text}"));
    eprintln!("daemon: {line}");
    assert!(
        line.contains("unmounted: 1 inodes, 0 open handles"),
        "left over after unmount: {line}"
    );

    let kernel = f.kernel_mount();
    let theirs = snapshot(&kernel.path, false);
    let d = diff("merged view", &theirs, &ours);
    assert!(d.is_empty(), "{} differences:\n{}", d.len(), d.join("\n"));
}
