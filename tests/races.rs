//! Targeted races: symlinks swapped into the upper and workdir during copy-ups, two
//! renames into one name, an unlink during a copy-up. Each ends in a state the kernel
//! could also produce, and nothing outside the layers is touched.
mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every entry under `dir` with its content (or link target), for a before/after compare.
fn contents(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push((p.clone(), "dir".into()));
            out.extend(contents(&p));
        } else if m.file_type().is_symlink() {
            out.push((p.clone(), format!("-> {:?}", fs::read_link(&p).unwrap())));
        } else {
            out.push((p.clone(), fs::read_to_string(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// Opens `mnt/dir/name` without following a symlink at `dir` or `name`.
fn open_beneath(
    mnt: &Path,
    dir: &str,
    name: &str,
    opts: &mut fs::OpenOptions,
) -> std::io::Result<fs::File> {
    let d = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(mnt.join(dir))?;
    opts.custom_flags(libc::O_NOFOLLOW)
        .open(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

/// While copy-ups run, an attacker keeps swapping the upper directories they create, and
/// the workdir's own directory, for symlinks to a directory outside the layers. Nothing
/// outside is created or changed, and the daemon keeps serving.
#[test]
fn symlinks_swapped_in_during_copy_up_are_not_followed() {
    require_fuse!();
    let f = Fixture::new(1);
    let outside = f.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("big"), "secret\n").unwrap();
    fs::write(outside.join("x"), "secret\n").unwrap();
    let before = contents(&outside);
    let big = "b".repeat(8 << 20);
    for i in 0..4 {
        put(f.lower(0), &format!("d{i}/big"), &big);
        put(f.lower(0), &format!("d{i}/x"), "small\n");
    }
    for round in 0..6 {
        let m = f.mount();
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = {
            let (upper, work, outside, stop) = (
                f.upper.clone(),
                f.work.clone(),
                outside.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    for i in 0..4 {
                        let d = upper.join(format!("d{i}"));
                        // Replace whatever copy-up made with a symlink, then take it away.
                        let _ = fs::remove_dir_all(&d);
                        let _ = symlink(&outside, &d);
                        let _ = symlink(&outside, d.join("x"));
                    }
                    let w = work.join("work");
                    if fs::rename(&w, work.join(format!("moved{n}"))).is_ok() {
                        let _ = symlink(&outside, &w);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                    for i in 0..4 {
                        let _ = fs::remove_file(upper.join(format!("d{i}")));
                    }
                    n += 1;
                }
            })
        };
        std::thread::scope(|s| {
            for i in 0..4 {
                let m = &m;
                s.spawn(move || {
                    // (Never through a symlink the union shows: the attacker's symlinks
                    // are visible in the upper, and following them is the caller's doing.)
                    let d = format!("d{i}");
                    let _ = open_beneath(&m.path, &d, "big", fs::OpenOptions::new().append(true))
                        .and_then(|mut h| h.write_all(b"tail"));
                    let mut w = fs::OpenOptions::new();
                    w.write(true).create(true).truncate(true);
                    if let Ok(mut h) = open_beneath(&m.path, &d, "x", &mut w) {
                        let _ = h.write_all(b"written\n");
                        let _ = std::os::unix::fs::fchown(&h, Some(7), None);
                    }
                    let _ = open_beneath(&m.path, &d, &format!("new{round}"), &mut w)
                        .and_then(|mut h| h.write_all(b"new\n"));
                });
            }
        });
        stop.store(true, Ordering::SeqCst);
        attacker.join().unwrap();
        assert_eq!(contents(&outside), before, "round {round}: outside changed");
        // The daemon still answers.
        let listed = fs::read_dir(&m.path).map(|d| d.count());
        assert!(listed.is_ok(), "the daemon no longer answers: {listed:?}");
        let d0 = fs::symlink_metadata(m.p("d0"));
        assert!(d0.is_ok() || errno(d0) == libc::ENOENT);
        drop(m);
        // Clean up for the next round (the workdir must be a directory again).
        let _ = fs::remove_file(f.work.join("work"));
        for e in fs::read_dir(&f.work).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("moved")
            {
                fs::remove_dir_all(&p).unwrap();
            }
        }
        let _ = fs::remove_dir_all(&f.upper);
        fs::create_dir(&f.upper).unwrap();
    }
}

/// Two processes rename different files onto one name at the same moment, many times:
/// both renames succeed, the name holds one of the two files, both old names are gone
/// (whiteouts over the lower ones), and kernel overlayfs reads the upper the same.
#[test]
fn two_renames_into_one_name() {
    require_fuse!();
    let f = Fixture::new(1);
    for i in 0..50 {
        put(f.lower(0), &format!("a{i}"), &format!("a{i}\n"));
    }
    let m = f.mount();
    for i in 0..50 {
        fs::write(m.p(&format!("b{i}")), format!("b{i}\n")).unwrap();
        let (a, b, t) = (m.p(&format!("a{i}")), m.p(&format!("b{i}")), m.p("t"));
        let t2 = t.clone();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(move || fs::rename(a, t));
            let hb = s.spawn(move || fs::rename(b, t2));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        ra.unwrap();
        rb.unwrap();
        let got = read(m.p("t"));
        assert!(
            got == format!("a{i}\n") || got == format!("b{i}\n"),
            "{got}"
        );
        assert!(!m.p(&format!("a{i}")).exists() && !m.p(&format!("b{i}")).exists());
    }
    let ours = snapshot(&m.path, false);
    assert_eq!(names(&m.path), ["t"]);
    drop(m);
    assert!(temporaries(&f.work).is_empty(), "stray temporaries");
    let k = f.kernel_mount();
    let theirs = snapshot(&k.path, false);
    assert!(diff("layerfs vs kernel", &ours, &theirs).is_empty());
}

/// A file is unlinked while it is being copied up, at many moments: the name ends up
/// gone, no copy or temporary is left, the lower is untouched, and a writer that got the
/// file open keeps a working file.
#[test]
fn unlink_during_copy_up() {
    require_fuse!();
    let f = Fixture::new(1);
    let size = 32usize << 20;
    put(f.lower(0), "big", &"L".repeat(size));
    let m = f.mount();
    for delay_us in [0u64, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000] {
        let p = m.p("big");
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut h = fs::OpenOptions::new().append(true).open(&p)?;
                h.write_all(b"tail")?;
                Ok(h.metadata()?.len())
            })
        };
        std::thread::sleep(Duration::from_micros(delay_us));
        let removed = fs::remove_file(&p);
        let written = writer.join().unwrap();
        match (&removed, &written) {
            // Unlinked after the copy-up: the open file had all the data.
            (Ok(()), Ok(len)) => assert_eq!(*len as usize, size + 4),
            // Unlinked before the open: the open found nothing.
            (Ok(()), Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            _ => panic!("at {delay_us} us: unlink {removed:?}, write {written:?}"),
        }
        assert!(!p.exists(), "at {delay_us} us: the name came back");
        assert!(
            is_whiteout(&f.upper.join("big")),
            "at {delay_us} us: no whiteout"
        );
        assert!(temporaries(&f.work).is_empty(), "temporary left");
        assert_eq!(
            fs::metadata(f.lower(0).join("big")).unwrap().len() as usize,
            size
        );
        // Bring the lower file back for the next round.
        fs::remove_file(f.upper.join("big")).unwrap();
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    }
}
