//! Faults: a full upper filesystem, and a daemon killed in the middle of copy-ups.
mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn full_upper_fails_cleanly_and_recovers() {
    require_fuse!();
    let f = Fixture::new(1);
    let small = f.dir.path().join("small");
    let _tmpfs = Tmpfs::new(&small, "4m");
    let (upper, work) = (small.join("upper"), small.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    fs::write(f.lower(0).join("big"), vec![1u8; 8 << 20]).unwrap();
    fs::write(f.lower(0).join("small"), vec![2u8; 1 << 20]).unwrap();
    let m = f.run_mount(f.mount_command_on(&upper, &work));
    // Copy-up of a file larger than the upper fails with ENOSPC; nothing partial shows.
    let r = fs::OpenOptions::new().append(true).open(m.p("big"));
    assert_eq!(errno(r), libc::ENOSPC);
    assert!(!upper.join("big").exists());
    assert!(temporaries(&work).is_empty());
    assert_eq!(fs::metadata(m.p("big")).unwrap().len(), 8 << 20);
    assert_eq!(fs::metadata(f.lower(0).join("big")).unwrap().len(), 8 << 20);
    // Writing past the space fails with ENOSPC and the daemon keeps serving.
    let mut h = fs::File::create(m.p("filler")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut err = 0;
    for _ in 0..8 {
        if let Err(e) = h.write_all(&chunk).and_then(|()| h.sync_all()) {
            err = e.raw_os_error().unwrap_or(0);
            break;
        }
    }
    assert_eq!(err, libc::ENOSPC);
    drop(h);
    assert_eq!(names(&m.path), ["big", "filler", "small"]);
    // After space is freed, everything works again. (FUSE sends the close of `filler`
    // asynchronously, so the daemon may still hold it open for a moment after the unlink:
    // wait until its blocks are back.)
    fs::remove_file(m.p("filler")).unwrap();
    let free_kib = || -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-k"])
            .arg(&small)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    let start = std::time::Instant::now();
    while free_kib() < 2048 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "space never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut h = fs::OpenOptions::new()
        .append(true)
        .open(m.p("small"))
        .unwrap();
    h.write_all(b"end").unwrap();
    drop(h);
    assert_eq!(
        fs::metadata(upper.join("small")).unwrap().len(),
        (1 << 20) + 3
    );
}

/// Runs `work` on a thread, kills `m`'s daemon with SIGKILL `delay_ms` into it, waits for
/// `work`, and clears the dead mount.
fn kill_during(m: Mounted<'_>, delay_ms: u64, work: impl FnOnce() + Send + 'static) {
    let pid = daemon_pid(&m.path);
    let worker = std::thread::spawn(work);
    std::thread::sleep(Duration::from_millis(delay_ms));
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let _ = worker.join();
    let _ = Command::new("umount").arg("-l").arg(&m.path).status();
    drop(m);
}

#[test]
fn kill_during_copy_up_leaves_old_or_new() {
    require_fuse!();
    let f = Fixture::new(1);
    let size = 64usize << 20;
    fs::write(f.lower(0).join("big"), vec![7u8; size]).unwrap();
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let m = f.mount();
        let target = m.p("big");
        kill_during(m, delay_ms, move || {
            if let Ok(mut h) = fs::OpenOptions::new().append(true).open(&target) {
                let _ = h.write_all(b"tail");
            }
        });
        let m = f.mount();
        assert!(
            temporaries(&f.work).is_empty(),
            "temp left at {delay_ms} ms"
        );
        let len = fs::metadata(m.p("big")).unwrap().len() as usize;
        assert!(
            len == size || len == size + 4,
            "partial file ({len} bytes) after a kill at {delay_ms} ms"
        );
        let up = f.upper.join("big");
        if up.exists() {
            let l = fs::metadata(&up).unwrap().len() as usize;
            assert!(l == size || l == size + 4, "partial upper copy {l}");
        }
        drop(m);
        let _ = fs::remove_file(&up);
    }
    // A copy-up for a truncation copies no data (the metadata-only copy-up): after a kill
    // the file is the whole lower file, the truncated copy, or the new content.
    for delay_ms in [0u64, 1, 2, 5, 10] {
        let m = f.mount();
        let target = m.p("big");
        kill_during(m, delay_ms, move || {
            let _ = fs::write(&target, "new");
        });
        let m = f.mount();
        assert!(temporaries(&f.work).is_empty(), "temp left");
        let len = fs::metadata(m.p("big")).unwrap().len() as usize;
        assert!(
            [size, 0, 3].contains(&len),
            "partial file ({len} bytes) after a kill at {delay_ms} ms"
        );
        drop(m);
        let _ = fs::remove_file(f.upper.join("big"));
    }
}

/// `kill -9` at many points of a run of renames (copy-up, rename, whiteout) and unlinks
/// (whiteouts): after remounting, every name shows its old or its new state, never both or
/// neither, the workdir is clean, and kernel overlayfs reads the upper the same way.
#[test]
fn kill_during_renames_and_unlinks_leaves_old_or_new() {
    require_fuse!();
    let f = Fixture::new(1);
    const N: usize = 300;
    for i in 0..N {
        put(f.lower(0), &format!("a{i}"), &format!("A{i}"));
        put(f.lower(0), &format!("c{i}"), &format!("C{i}"));
        put(f.lower(0), &format!("d{i}/x"), "x");
    }
    let rounds = [0u64, 1, 3, 6, 12, 25, 50, 100]
        .into_iter()
        .map(|d| (d, "overlay"))
        .chain([2u64, 10, 40].into_iter().map(|d| (d, "aufs")));
    for (delay_ms, format) in rounds {
        let opts = format!("whiteout={format}");
        f.clear_upper();
        let m = f.mount_with(&["-o", &opts]);
        let root = m.path.clone();
        kill_during(m, delay_ms, move || {
            for i in 0..N {
                let _ = fs::rename(root.join(format!("a{i}")), root.join(format!("b{i}")));
                let _ = fs::remove_file(root.join(format!("c{i}")));
                let _ = fs::remove_file(root.join(format!("d{i}/x")));
                let _ = fs::remove_dir(root.join(format!("d{i}")));
            }
        });

        let m = f.mount_with(&["-o", &opts]);
        assert!(
            temporaries(&f.work).is_empty(),
            "temp left at {delay_ms} ms"
        );
        let mut done = 0;
        for i in 0..N {
            let (a, b) = (m.p(&format!("a{i}")), m.p(&format!("b{i}")));
            match (a.exists(), b.exists()) {
                (true, false) => assert_eq!(read(&a), format!("A{i}")),
                (false, true) => {
                    assert_eq!(read(&b), format!("A{i}"));
                    done += 1;
                }
                s => panic!("a{i}/b{i} both or neither ({s:?}) after a kill at {delay_ms} ms"),
            }
            let c = m.p(&format!("c{i}"));
            if c.exists() {
                assert_eq!(read(&c), format!("C{i}"));
            }
        }
        let ours = snapshot(&m.path, false);
        drop(m);
        if format == "overlay" {
            f.assert_kernel_shows("", &ours, &format!("after a kill at {delay_ms} ms"));
        }
        eprintln!("{format} whiteouts, kill at {delay_ms} ms: {done} of {N} renames had happened");
    }
}

/// `kill -9` at many points of a run of directory renames with redirect_dir=on (a
/// relative redirect within the parent, an absolute one into another directory): after
/// remounting, every directory is at its old name or its new one, with its lower content,
/// never both or neither, and kernel overlayfs with redirect_dir=on reads the upper the
/// same way.
#[test]
fn kill_during_directory_renames_with_redirects_leaves_old_or_new() {
    require_fuse!();
    let f = Fixture::new(1);
    const N: usize = 200;
    for i in 0..N {
        put(f.lower(0), &format!("d{i}/x"), &format!("X{i}"));
        put(f.lower(0), &format!("p/m{i}/y"), &format!("Y{i}"));
    }
    fs::create_dir(f.lower(0).join("q")).unwrap();
    let opts = ["-o", "redirect_dir=on"];
    for delay_ms in [0u64, 2, 5, 12, 25, 50, 100] {
        f.clear_upper();
        let m = f.mount_with(&opts);
        let root = m.path.clone();
        kill_during(m, delay_ms, move || {
            for i in 0..N {
                let _ = fs::rename(root.join(format!("d{i}")), root.join(format!("e{i}")));
                let _ = fs::rename(root.join(format!("p/m{i}")), root.join(format!("q/n{i}")));
            }
        });
        let m = f.mount_with(&opts);
        assert!(
            temporaries(&f.work).is_empty(),
            "temp left at {delay_ms} ms"
        );
        let mut done = 0;
        for i in 0..N {
            let pairs = [
                (format!("d{i}"), format!("e{i}"), "x", format!("X{i}")),
                (format!("p/m{i}"), format!("q/n{i}"), "y", format!("Y{i}")),
            ];
            for (old, new, file, content) in pairs {
                let (o, n) = (m.p(&old), m.p(&new));
                let at = match (o.exists(), n.exists()) {
                    (true, false) => o,
                    (false, true) => {
                        done += 1;
                        n
                    }
                    s => {
                        panic!("{old}/{new} both or neither ({s:?}) after a kill at {delay_ms} ms")
                    }
                };
                assert_eq!(read(at.join(file)), content);
            }
        }
        let ours = snapshot(&m.path, false);
        drop(m);
        f.assert_kernel_shows(
            "redirect_dir=on",
            &ours,
            &format!("after a kill at {delay_ms} ms"),
        );
        eprintln!(
            "kill at {delay_ms} ms: {done} of {} directory renames had happened",
            2 * N
        );
    }
}

/// For each delay of [`KILL_POINTS`], over a fresh upper with options `opts`: `work` runs on
/// the mount (given its root) and the daemon is killed that many ms into it; then, mounted
/// again, the workdir holds no temporary, `check` looks at the mount (given the delay), and
/// kernel overlayfs with `kernel_opts` shows the same tree.
fn kill_at_points(
    f: &Fixture,
    opts: &[&str],
    kernel_opts: &str,
    work: impl Fn(&Path) + Clone + Send + 'static,
    check: impl Fn(&Mounted<'_>, u64),
) {
    for delay_ms in KILL_POINTS {
        f.clear_upper();
        let m = f.mount_with(opts);
        let root = m.path.clone();
        let work = work.clone();
        kill_during(m, delay_ms, move || work(&root));
        let m = f.mount_with(opts);
        assert!(
            temporaries(&f.work).is_empty(),
            "temp left at {delay_ms} ms"
        );
        check(&m, delay_ms);
        let ours = snapshot(&m.path, false);
        drop(m);
        f.assert_kernel_shows(
            kernel_opts,
            &ours,
            &format!("after a kill at {delay_ms} ms"),
        );
    }
}

/// Where [`kill_at_points`] kills, in ms after the work starts.
const KILL_POINTS: [u64; 6] = [0, 3, 8, 20, 50, 120];

/// `kill -9` at many points of metacopy copy-ups (chmod: a stub) and of the data copy-ups
/// that follow (an append fills the stub): after remounting, every file has its old or its
/// new mode and its lower data (plus the appended byte once the append happened), never
/// zeros from a half-filled stub, and kernel overlayfs with metacopy=on reads the same.
#[test]
fn kill_during_metacopy_copy_ups_leaves_old_or_new() {
    require_fuse!();
    let f = Fixture::new(1);
    const N: usize = 150;
    let content = |i: usize| format!("{i}:").repeat(3000);
    for i in 0..N {
        put(f.lower(0), &format!("f{i}"), &content(i));
    }
    let work = |root: &Path| {
        for i in 0..N {
            let p = root.join(format!("f{i}"));
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
            if i % 2 == 0
                && let Ok(mut h) = fs::OpenOptions::new().append(true).open(&p)
            {
                let _ = h.write_all(b"!");
            }
        }
    };
    let check = |m: &Mounted<'_>, delay_ms: u64| {
        let mut stubs = 0;
        for i in 0..N {
            let p = m.p(&format!("f{i}"));
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert!(
                mode == 0o644 || mode == 0o600,
                "f{i} mode {mode:o} at {delay_ms} ms"
            );
            let got = read(&p);
            let old = content(i);
            assert!(
                got == old || got == format!("{old}!"),
                "f{i} after a kill at {delay_ms} ms: {} bytes, starts {:?}",
                got.len(),
                &got[..got.len().min(12)]
            );
            stubs += usize::from(
                xattr::get(f.upper.join(format!("f{i}")), "trusted.overlay.metacopy")
                    .ok()
                    .flatten()
                    .is_some(),
            );
        }
        eprintln!("kill at {delay_ms} ms: {stubs} stubs left of {N} files");
    };
    let opts = ["-o", "metacopy=on"];
    kill_at_points(&f, &opts, "metacopy=on,redirect_dir=on", work, check);
}

/// `kill -9` at many points of index copy-ups (an append to one name of a lower hard
/// link) and of removals of the other name: after remounting, each file's names are one
/// inode with the old or the new data, its link count is the number of names shown, and
/// kernel overlayfs with index=on reads the same.
#[test]
fn kill_during_index_copy_ups_leaves_old_or_new() {
    require_fuse!();
    let f = Fixture::new(1);
    const N: usize = 120;
    let content = |i: usize| format!("{i}:").repeat(2000);
    put(f.lower(0), "g/.keep", "");
    for i in 0..N {
        put(f.lower(0), &format!("f{i}"), &content(i));
        fs::hard_link(
            f.lower(0).join(format!("f{i}")),
            f.lower(0).join(format!("g/{i}")),
        )
        .unwrap();
    }
    let work = |root: &Path| {
        for i in 0..N {
            if let Ok(mut h) = fs::OpenOptions::new()
                .append(true)
                .open(root.join(format!("f{i}")))
            {
                let _ = h.write_all(b"!");
            }
            if i % 3 == 0 {
                let _ = fs::remove_file(root.join(format!("g/{i}")));
            }
        }
    };
    let check = |m: &Mounted<'_>, delay_ms: u64| {
        let mut written = 0;
        for i in 0..N {
            let fp = m.p(&format!("f{i}"));
            let got = read(&fp);
            let old = content(i);
            assert!(
                got == old || got == format!("{old}!"),
                "f{i} after a kill at {delay_ms} ms: {} bytes",
                got.len()
            );
            written += usize::from(got != old);
            let fm = fs::metadata(&fp).unwrap();
            let links = match fs::metadata(m.p(&format!("g/{i}"))) {
                Ok(gm) => {
                    assert_eq!(gm.ino(), fm.ino(), "g/{i} is another inode");
                    assert_eq!(read(m.p(&format!("g/{i}"))), got, "g/{i} differs");
                    2
                }
                Err(_) => 1,
            };
            assert_eq!(
                fm.nlink(),
                links,
                "f{i} links after a kill at {delay_ms} ms"
            );
        }
        eprintln!("kill at {delay_ms} ms: {written} of {N} files written");
    };
    kill_at_points(&f, &["-o", "index=on"], "index=on", work, check);
}

/// A loop-mounted ext4 (long journal commit interval), unmounted and detached on drop.
struct LoopExt4(LoopFs);

impl LoopExt4 {
    fn new(dir: &Path) -> Self {
        LoopExt4(LoopFs::new(
            dir,
            "ext4",
            64 << 20,
            // 4 KiB blocks: a marker within one page of a file is then contiguous in the
            // image (with the 1 KiB blocks mkfs picks for a small filesystem, an append
            // after a copy-up could land in blocks allocated apart).
            &["mkfs.ext4", "-q", "-F", "-b", "4096"],
            "commit=120",
        ))
    }

    /// Whether `marker` has reached the image (the loop device's backing file).
    fn on_disk(&self, marker: &[u8]) -> bool {
        let img = fs::read(&self.0.image).unwrap();
        img.windows(marker.len()).any(|w| w == marker)
    }
}

/// fsync through the mount puts the data on the upper's disk before it returns (for new
/// files and for copied-up ones).
#[test]
fn fsync_reaches_the_upper_disk() {
    require_fuse!();
    let t = tempfile::tempdir().unwrap();
    let disk = LoopExt4::new(t.path());
    let f = Fixture::new(1);
    put(f.lower(0), "old", "lower content\n");
    for (opts, durable) in [(&[][..], true), (&["-o", "volatile"][..], false)] {
        let upper = disk.0.at.join(format!("upper{durable}"));
        let work = disk.0.at.join(format!("work{durable}"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let mut c = f.mount_command_on(&upper, &work);
        c.args(opts);
        let m = f.run_mount(c);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let new_marker = format!("LAYERFS-NEW-{durable}-{stamp}-").repeat(64);
        let old_marker = format!("LAYERFS-OLD-{durable}-{stamp}-").repeat(64);
        let mut h = fs::File::create(m.p("new")).unwrap();
        h.write_all(new_marker.as_bytes()).unwrap();
        h.sync_all().unwrap();
        let mut h = fs::OpenOptions::new()
            .append(true)
            .open(m.p("old"))
            .unwrap();
        h.write_all(old_marker.as_bytes()).unwrap();
        h.sync_data().unwrap();
        // Without volatile the data must be on disk. With it, fsync returns at once and
        // the data is usually still only in memory, but the kernel's own writeback may
        // flush it at any moment (other tests write much), so that is only reported.
        let on_disk = (
            disk.on_disk(new_marker.as_bytes()),
            disk.on_disk(old_marker.as_bytes()),
        );
        if durable {
            assert_eq!(on_disk, (true, true), "(new file, copied-up file) on disk");
        } else {
            eprintln!("volatile: (new file, copied-up file) on disk after fsync: {on_disk:?}");
        }
        drop(h);
        drop(m);
    }
}
