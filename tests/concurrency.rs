//! Concurrent requests: many threads changing a shared namespace over lower content; the
//! daemon keeps serving and the merged view stays consistent with the layers.
mod common;
use common::*;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[test]
fn parallel_copy_up_of_one_file() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "deep/dir/shared", &"x".repeat(1 << 20));
    let m = f.mount();
    let p = m.p("deep/dir/shared");
    std::thread::scope(|s| {
        for i in 0..8 {
            let p = p.clone();
            s.spawn(move || {
                let h = fs::OpenOptions::new().write(true).open(&p).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&h, &[b'0' + i as u8], i * 4096).unwrap();
            });
        }
    });
    let data = fs::read(&p).unwrap();
    assert_eq!(data.len(), 1 << 20);
    for i in 0..8 {
        assert_eq!(data[i * 4096], b'0' + i as u8);
    }
    assert!(temporaries(&f.work).is_empty());
}

#[test]
fn random_operations_from_many_threads() {
    require_fuse!();
    let f = Fixture::new(2);
    for i in 0..8 {
        put(f.lower(1), &format!("d{i}/f{i}"), "lower");
        put(f.lower(0), &format!("d{i}/g{i}"), "lower0");
        put(f.lower(0), &format!("top{i}"), "t");
    }
    let m = f.mount();
    let stop = Arc::new(AtomicBool::new(false));
    let root = m.path.clone();
    let seed = 0x9e3779b97f4a7c15u64;
    eprintln!("seed {seed:#x}");
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let stop = Arc::clone(&stop);
            let root = root.clone();
            s.spawn(move || {
                let mut r = Rng::new(seed ^ (t + 1));
                while !stop.load(Ordering::Relaxed) {
                    let d = format!("d{}", r.pick(8));
                    let n = format!("{d}/n{}", r.pick(6));
                    let n2 = format!("d{}/n{}", r.pick(8), r.pick(6));
                    let p = root.join(&n);
                    let _ = match r.pick(10) {
                        0 => fs::write(&p, format!("t{t}")),
                        1 => fs::remove_file(&p),
                        2 => fs::rename(&p, root.join(&n2)),
                        3 => fs::create_dir(&p),
                        4 => fs::remove_dir(&p),
                        5 => fs::read(&p).map(drop),
                        6 => fs::read_dir(root.join(&d)).map(|it| it.for_each(drop)),
                        7 => fs::hard_link(&p, root.join(&n2)),
                        8 => xattr::set(&p, "user.t", b"v"),
                        _ => fs::write(root.join(format!("{d}/f{}", r.pick(8))), "w"),
                    };
                }
            });
        }
        let secs = std::env::var("LAYERFS_STRESS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(50));
            // Watchdog: the mount must keep answering.
            assert!(fs::read_dir(&root).is_ok(), "mount stopped answering");
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Every listed entry can be stat'ed and has the type the listing gave.
    for i in 0..8 {
        let d = m.p(&format!("d{i}"));
        if !d.is_dir() {
            continue;
        }
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let st = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(
                e.file_type().unwrap().is_dir(),
                st.is_dir(),
                "{:?}",
                e.path()
            );
        }
    }
    assert!(temporaries(&f.work).is_empty());
}
