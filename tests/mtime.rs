//! Modification and change times after writes through a shared writable mapping (xfstests
//! generic/080 and generic/215), beside kernel overlayfs, which updates them at the write
//! fault: seen by a stat of the open file after the write, after msync, after munmap,
//! and by a stat of the path after close. With passthrough the write lands in the upper
//! file without the daemon or the kernel's attribute cache hearing of it.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// `(mtime, ctime)` of every `statx -r` in `xfs_io`'s output, in order.
fn times(out: &str) -> Vec<(String, String)> {
    let field = |l: &str, name: &str| {
        l.strip_prefix(name)
            .map(|v| v.trim_start_matches(" = ").to_string())
    };
    let mut seen = Vec::new();
    let (mut m, mut c) = (String::new(), String::new());
    for l in out.lines() {
        if let Some(v) = field(l, "stat.mtime.tv_sec") {
            m = v;
        } else if let Some(v) = field(l, "stat.mtime.tv_nsec") {
            m = format!("{m}.{v}");
            seen.push((m.clone(), c.clone()));
        } else if let Some(v) = field(l, "stat.ctime.tv_sec") {
            c = v;
        } else if let Some(v) = field(l, "stat.ctime.tv_nsec") {
            c = format!("{c}.{v}");
        }
    }
    seen
}

/// For `file` under the mount `m` (its times set an hour back first): whether mtime and
/// ctime moved since the start, after the mapping, the mapped write, msync, munmap, and
/// (by a stat of the path) close.
fn moves(m: &Path, file: &str) -> Vec<(&'static str, bool, bool)> {
    let p = m.join(file);
    let touched = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(touched.success());
    // FUSE's own times are coarse (a clock tick; the kernel's multigrain times are not had
    // there): the write must come a tick after the touch to move the ctime it set.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = Command::new("xfs_io")
        .args(["-c", "statx -r", "-c", "mmap 0 4096", "-c", "statx -r"])
        .args(["-c", "mwrite 0 4096", "-c", "statx -r"])
        .args(["-c", "msync -s 0 4096", "-c", "statx -r"])
        .args(["-c", "munmap", "-c", "statx -r", "-c", "close"])
        .arg(&p)
        .output()
        .unwrap();
    assert_success(&out);
    let mut t = times(&String::from_utf8_lossy(&out.stdout));
    let after = Command::new("xfs_io")
        .args(["-r", "-c", "statx -r"])
        .arg(&p)
        .output()
        .unwrap();
    t.extend(times(&String::from_utf8_lossy(&after.stdout)));
    assert_eq!(t.len(), 6, "{}", String::from_utf8_lossy(&out.stderr));
    let start = t[0].clone();
    ["start", "mapped", "mwrite", "msync", "munmap", "closed"]
        .into_iter()
        .zip(t)
        .map(|(what, (mt, ct))| (what, mt != start.0, ct != start.1))
        .collect()
}

fn populate(f: &Fixture) {
    put(f.lower(0), "low", &"l".repeat(4096));
    put(&f.upper, "up", &"u".repeat(4096));
}

/// A lower file (copied up at the open) and an upper file, on layerfs with `opts`.
fn same_as_kernel(opts: &[&str]) {
    let run = |m: &Path| vec![moves(m, "low"), moves(m, "up")];
    let problems = compare_with_kernel(1, populate, opts, run);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn mapped_writes_move_the_times() {
    require_fuse!();
    same_as_kernel(&[]);
}

#[test]
fn mapped_writes_move_the_times_with_every_file_passed_through() {
    require_fuse!();
    same_as_kernel(&["-o", "passthrough=all"]);
}

#[test]
fn mapped_writes_move_the_times_through_the_page_cache() {
    require_fuse!();
    same_as_kernel(&["-o", "passthrough=off"]);
}

#[test]
fn the_kernel_moves_the_times_at_the_write() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    let m = f.kernel_mount();
    let seen = moves(&m.path, "low");
    let want = [
        ("start", false, false),
        ("mapped", false, false),
        ("mwrite", true, true),
        ("msync", true, true),
        ("munmap", true, true),
        ("closed", true, true),
    ];
    assert_eq!(seen, want);
}
