//! Crafted layers are input, not trusted state: a seeded generator makes lower layers
//! (and sometimes an upper) of random shape carrying random overlay metadata — redirects
//! (valid, looping, absolute, garbage, 4,000 bytes), origins, metacopy marks over data of
//! another size, opaque and impure marks, nlink values, owner/mode overrides, whiteout
//! devices, `.wh.` names and opaque markers, symlinks out of the layer — and a container's
//! work runs over each through a mount: a walk that stats, lists, reads and reads links,
//! then chmod, writes, removals, renames and creations. The daemon must never panic or
//! abort, every request must end (a watchdog), its memory stays bounded, nothing outside
//! the layers changes, and a mount it refuses is refused with one line and no mount left.
//!
//! Runs for `LAYERFS_CRAFTED_SECS` (default 20) over consecutive seeds from
//! `LAYERFS_CRAFTED_SEED` (default 1); a failure names its seed.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one operation through the mount may take before the request counts as hung.
const HUNG: Duration = Duration::from_secs(20);
/// The most a daemon may hold in memory (VmRSS) after a run.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An overlay xattr's name in the trusted or user namespace.
fn ovl(r: &mut Rng, what: &str) -> String {
    let ns = if r.pick(4) == 0 { "user" } else { "trusted" };
    format!("{ns}.overlay.{what}")
}

/// A value for the overlay xattr `what`: well-formed, or not, or huge.
fn value(r: &mut Rng, what: &str, names: &[String]) -> Vec<u8> {
    let any_name = |r: &mut Rng| names[r.pick(names.len() as u64) as usize].clone();
    let garbage = |r: &mut Rng, n: u64| (0..r.pick(n) + 1).map(|_| r.next() as u8).collect();
    match (what, r.pick(6)) {
        (_, 0) => garbage(r, 64),
        (_, 1) => vec![b'/'; r.pick(4000) as usize + 1],
        ("redirect", 2) => format!("/{}", "x".repeat(3999)).into_bytes(),
        ("redirect", 3) => format!("/{}/{}", any_name(r), any_name(r)).into_bytes(),
        ("redirect", _) => any_name(r).into_bytes(),
        ("opaque", _) => [&b"y"[..], b"x", b""][r.pick(3) as usize].to_vec(),
        ("nlink", _) => format!(
            "{}{:+}",
            ["U", "L", "X"][r.pick(3) as usize],
            r.next() as i64
        )
        .into_bytes(),
        ("origin", _) => {
            let mut v = vec![0u8, 0xfb, 0, 0, r.next() as u8];
            v.extend((0..r.pick(60)).map(|_| r.next() as u8));
            v[2] = v.len() as u8;
            v
        }
        _ => Vec::new(),
    }
}

/// Makes the empty file `p` unless something is there (a fifo there would block a write).
fn new_file(p: &Path) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .is_ok()
}

/// Fills `root` with a random tree: its paths (relative) are returned. Symlinks lead out of
/// the layer only into `canary` (absolute or relative), never to a file of the machine:
/// nothing here may follow one, and the canary tells if anything did.
fn grow(r: &mut Rng, root: &Path, names: &[String], canary: &Path) -> Vec<PathBuf> {
    let outside = canary.join("secret");
    let mut made = vec![PathBuf::new()];
    let mut dirs = vec![PathBuf::new()];
    for _ in 0..r.pick(40) + 5 {
        let parent = dirs[r.pick(dirs.len() as u64) as usize].clone();
        let name = names[r.pick(names.len() as u64) as usize].clone();
        let rel = parent.join(&name);
        let p = root.join(&rel);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        let ok = match r.pick(9) {
            0 | 1 => {
                fs::create_dir(&p).is_ok() && {
                    dirs.push(rel.clone());
                    true
                }
            }
            2 => {
                let relative = ["../canary/secret", "../../canary/secret", "..", "x/y", "d"];
                let to = match r.pick(6) {
                    5 => outside.clone(),
                    i => PathBuf::from(relative[i as usize]),
                };
                symlink(to, &p).is_ok()
            }
            3 => Command::new("mknod")
                .arg(&p)
                .args(["c", "0", "0"])
                .status()
                .is_ok_and(|s| s.success()),
            4 => Command::new("mkfifo")
                .arg(&p)
                .status()
                .is_ok_and(|s| s.success()),
            5 => new_file(&root.join(parent.join(".wh..wh..opq"))),
            6 => new_file(&root.join(parent.join(format!(".wh.{name}")))),
            7 => {
                // A file whose apparent size says far more than its data.
                new_file(&p)
                    && fs::write(&p, b"0123456789").is_ok()
                    && fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .and_then(|f| f.set_len(1 << (r.pick(41) + 1)))
                        .is_ok()
            }
            _ => new_file(&p) && fs::write(&p, format!("{rel:?}\n")).is_ok(),
        };
        if ok {
            made.push(rel);
        }
    }
    made
}

/// Puts random overlay metadata on random objects of `root`.
fn mark(r: &mut Rng, root: &Path, made: &[PathBuf], names: &[String]) {
    let kinds = [
        "redirect", "origin", "metacopy", "opaque", "impure", "nlink", "upper", "uuid",
    ];
    for _ in 0..r.pick(30) {
        let rel = &made[r.pick(made.len() as u64) as usize];
        let p = root.join(rel);
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            continue;
        }
        let (name, v) = match r.pick(10) {
            0 => (
                [
                    "user.containers.override_stat",
                    "user.fuseoverlayfs.override_stat",
                ][r.pick(2) as usize]
                    .to_string(),
                match r.pick(3) {
                    0 => format!("{}:{}:0{:o}", r.pick(70000), r.pick(70000), r.pick(0o10000))
                        .into_bytes(),
                    1 => b"0:0:0755:dir".to_vec(),
                    _ => value(r, "", names),
                },
            ),
            _ => {
                let what = kinds[r.pick(kinds.len() as u64) as usize];
                (ovl(r, what), value(r, what, names))
            }
        };
        let _ = xattr::set(&p, &name, &v);
    }
}

/// Every file below `dir` with its content and mode: what must not change.
fn outside_snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            let data = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(p, (data, m.mode(), m.mtime()));
        }
    }
    out
}

/// Runs `op` on another thread; fails the test (with `what`) if it has not ended in
/// [`HUNG`]: a request of the daemon never answered.
fn bounded(seed: u64, what: &str, op: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        op();
        let _ = tx.send(());
    });
    if rx.recv_timeout(HUNG).is_err() {
        panic!("seed {seed}: {what} through the mount did not end in {HUNG:?}");
    }
}

/// A container's work over the mount: a walk (stat, list, read, readlink, xattrs), then
/// changes. Errors are answers; only a hang or a dead mount fails.
fn work(seed: u64, mnt: &Path) {
    let m = mnt.to_path_buf();
    bounded(seed, "the walk", move || {
        let mut todo = vec![m.clone()];
        let mut seen = 0;
        while let Some(d) = todo.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                seen += 1;
                if seen > 5000 {
                    return;
                }
                let p = e.path();
                let Ok(meta) = fs::symlink_metadata(&p) else {
                    continue;
                };
                let _ = xattr::list(&p).map(|l| l.count());
                if meta.is_dir() {
                    todo.push(p);
                } else if meta.file_type().is_symlink() {
                    let _ = fs::read_link(&p);
                } else if meta.is_file() {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = fs::File::open(&p).and_then(|mut f| f.read(&mut buf));
                }
            }
        }
    });
    let m = mnt.to_path_buf();
    bounded(seed, "the changes", move || {
        let mut r = Rng::new(seed ^ 0x5eed);
        let mut paths = vec![m.clone()];
        let mut todo = vec![m.clone()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                    todo.push(p.clone());
                }
                paths.push(p);
                if paths.len() > 2000 {
                    break;
                }
            }
        }
        for _ in 0..30 {
            let p = &paths[r.pick(paths.len() as u64) as usize];
            let q = &paths[r.pick(paths.len() as u64) as usize];
            let op = r.pick(7);
            if std::env::var_os("LAYERFS_CRAFTED_VERBOSE").is_some() {
                eprintln!("change {op} {p:?} {q:?}");
            }
            // Symlinks (some lead out of the layers, on purpose) are never followed: the
            // test process itself would change what they lead to.
            let Ok(meta) = fs::symlink_metadata(p) else {
                continue;
            };
            let follows = matches!(op, 0 | 1 | 5 | 6);
            if follows && meta.file_type().is_symlink() {
                continue;
            }
            match op {
                0 => drop(fs::set_permissions(p, fs::Permissions::from_mode(0o700))),
                // Regular files only: opening a fifo for writing waits for a reader.
                1 if meta.is_file() => drop(
                    fs::OpenOptions::new()
                        .append(true)
                        .open(p)
                        .map(|mut f| std::io::Write::write_all(&mut f, b"more")),
                ),
                2 => drop(fs::remove_file(p)),
                3 => drop(fs::remove_dir_all(p)),
                4 => drop(fs::rename(p, q.with_extension("moved"))),
                1 => {}
                5 => drop(fs::create_dir(p.join("new"))),
                _ => drop(fs::write(p.join("file"), "new")),
            }
        }
    });
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One seed: crafted layers, a mount (or a clean refusal), the work, the checks. Returns
/// whether it mounted.
fn one(seed: u64) -> bool {
    let mut r = Rng::new(seed);
    let lowers = r.pick(3) as usize + 1;
    let f = Fixture::new(lowers);
    let canary = f.dir.path().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("secret"), "do not touch\n").unwrap();
    let names: Vec<String> = ["a", "b", "d", "x", "y", "lib", "etc", ".wh.a", "..a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut layers: Vec<PathBuf> = f.lowers.clone();
    if r.pick(3) == 0 {
        layers.push(f.upper.clone());
    }
    for l in &layers {
        let made = grow(&mut r, l, &names, &canary);
        mark(&mut r, l, &made, &names);
    }
    let before = outside_snapshot(&canary);
    let opts = [
        "",
        "redirect_dir=on",
        "metacopy=on,redirect_dir=on",
        "index=on",
        "index=on,metacopy=on,redirect_dir=on",
        "xattr_permissions=2",
    ][r.pick(6) as usize];
    let log = f.dir.path().join("daemon.log");
    // Whatever happens below, no mount stays behind.
    let _unmount = UnmountOnDrop(f.mnt.clone());
    let mut c = f.mount_command();
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    let mut daemon = c
        .arg("-f")
        .env("RUST_LOG", "layerfs=warn")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !is_mounted(&f.mnt) {
        if let Some(status) = daemon.try_wait().unwrap() {
            // Refused: one line saying why, a non-zero exit, no mount.
            let said = fs::read_to_string(&log).unwrap();
            let errors: Vec<&str> = said.lines().filter(|l| !l.contains(" WARN ")).collect();
            assert!(!status.success(), "seed {seed}: exited 0 without mounting");
            assert_eq!(
                errors.len(),
                1,
                "seed {seed} ({opts}): refusal said {said:?}"
            );
            assert!(!said.contains("panicked"), "seed {seed}: {said}");
            return false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "seed {seed}: never mounted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = Mounted::adopt(&f);
    let pid = daemon.id();
    work(seed, &m.path);
    assert!(
        fs::metadata(&m.path).is_ok(),
        "seed {seed} ({opts}): the mount died: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let rss = rss_kib(pid);
    assert!(
        rss < RSS_LIMIT_KIB,
        "seed {seed}: the daemon holds {rss} KiB"
    );
    drop(m);
    let status = daemon.wait().unwrap();
    let said = fs::read_to_string(&log).unwrap();
    assert!(
        status.success() && !said.contains("panicked"),
        "seed {seed} ({opts}): the daemon ended with {status}: {said}"
    );
    assert!(
        outside_snapshot(&canary) == before,
        "seed {seed}: something outside the layers changed"
    );
    true
}

#[test]
fn crafted_layers_never_take_the_mount_down() {
    require_fuse!();
    let secs = env_u64("LAYERFS_CRAFTED_SECS", 20);
    let first = env_u64("LAYERFS_CRAFTED_SEED", 1);
    let start = Instant::now();
    let (mut seed, mut mounted) = (first, 0);
    while start.elapsed() < Duration::from_secs(secs) {
        mounted += u64::from(one(seed));
        seed += 1;
    }
    eprintln!(
        "crafted layers: seeds {first}..{seed} in {secs} s, {mounted} mounted, the rest refused"
    );
    assert!(mounted > 0, "no crafted union mounted");
}

/// The crafted shapes named by the issue, each beside kernel overlayfs (metacopy=on,
/// redirect_dir=on on both): redirects that loop (relative, between two layers, and an
/// absolute one to itself), a 4,000-byte absolute redirect, a metacopy stub of 1 TiB over
/// 10 bytes of data (read, then appended to: copied up), and a 100,000-entry directory
/// (listed: the daemon's memory stays bounded).
#[test]
fn loops_huge_stubs_long_redirects_and_wide_directories_as_on_the_kernel() {
    require_fuse!();
    let populate = |f: &Fixture| {
        let (top, below) = (f.lower(0), f.lower(1));
        for (layer, dir, redirect) in [
            (top, "loop1", "loop2"),
            (below, "loop2", "loop1"),
            (top, "self", "/self"),
            (below, "self", "/self"),
        ] {
            fs::create_dir(layer.join(dir)).unwrap();
            xattr::set(
                layer.join(dir),
                "trusted.overlay.redirect",
                redirect.as_bytes(),
            )
            .unwrap();
        }
        fs::create_dir(top.join("long")).unwrap();
        let long = format!("/{}", "x".repeat(3999));
        xattr::set(
            top.join("long"),
            "trusted.overlay.redirect",
            long.as_bytes(),
        )
        .unwrap();
        fs::write(below.join("big"), "0123456789").unwrap();
        let stub = fs::File::create(top.join("big")).unwrap();
        stub.set_len(1 << 40).unwrap();
        xattr::set(top.join("big"), "trusted.overlay.metacopy", b"").unwrap();
        fs::create_dir(top.join("many")).unwrap();
        for i in 0..100_000 {
            fs::write(top.join(format!("many/{i}")), "").unwrap();
        }
    };
    let run = |m: &Path| {
        let mut seen = Vec::new();
        for n in names(m) {
            let what = match fs::symlink_metadata(m.join(&n)) {
                Ok(meta) => format!("{n}: {:?} {}", meta.file_type(), meta.len()),
                Err(e) => format!("{n}: {:?}", e.raw_os_error()),
            };
            seen.push(what);
            if let Ok(list) = fs::read_dir(m.join(&n)) {
                seen.push(format!("{n}/: {} entries", list.count()));
            }
        }
        let mut head = vec![0u8; 20];
        let n = fs::File::open(m.join("big"))
            .and_then(|mut f| f.read(&mut head))
            .unwrap();
        seen.push(format!(
            "big reads {:?}",
            String::from_utf8_lossy(&head[..n])
        ));
        fs::OpenOptions::new()
            .append(true)
            .open(m.join("big"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
            .unwrap();
        let meta = fs::metadata(m.join("big")).unwrap();
        seen.push(format!("big after the append: {} bytes", meta.len()));
        seen
    };
    let opts = "metacopy=on,redirect_dir=on";
    let kernel = Fixture::new(2);
    populate(&kernel);
    let theirs = {
        let k = kernel.kernel_mount_with(opts);
        run(&k.path)
    };
    let f = Fixture::new(2);
    populate(&f);
    let log = f.dir.path().join("daemon.log");
    let mut c = f.mount_command();
    c.args(["-o", opts]);
    let (mut daemon, m) = f.spawn_logged(c, "layerfs=warn", &log);
    let ours = run(&m.path);
    let rss = rss_kib(daemon.id());
    drop(m);
    assert!(daemon.wait().unwrap().success());
    assert_eq!(ours, theirs);
    assert!(rss < RSS_LIMIT_KIB, "the daemon holds {rss} KiB");
    let said = fs::read_to_string(&log).unwrap();
    assert!(!said.contains("panicked"), "{said}");
}

/// A metacopy stub in a lower layer without metacopy=on is refused at its lookup (EPERM)
/// and still listed, as on the kernel, instead of served as the sparse file it is.
#[test]
fn a_lower_stub_without_metacopy_is_refused_as_on_the_kernel() {
    require_fuse!();
    let populate = |f: &Fixture| {
        fs::write(f.lower(1).join("stub"), "0123456789").unwrap();
        fs::File::create(f.lower(0).join("stub"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        xattr::set(f.lower(0).join("stub"), "trusted.overlay.metacopy", b"").unwrap();
        fs::write(f.lower(0).join("plain"), "plain\n").unwrap();
    };
    let run = |m: &Path| {
        let listed = names(m);
        let stub = fs::metadata(m.join("stub")).map(|m| m.len());
        let plain = fs::read_to_string(m.join("plain")).ok();
        vec![
            format!("{listed:?}"),
            format!("{:?}", stub.map_err(|e| e.raw_os_error())),
            format!("{plain:?}"),
        ]
    };
    let kernel = Fixture::new(2);
    populate(&kernel);
    let theirs = run(&kernel.kernel_mount().path);
    let f = Fixture::new(2);
    populate(&f);
    let ours = run(&f.mount().path);
    assert_eq!(ours, theirs);
    assert_eq!(
        theirs,
        [r#"["plain", "stub"]"#, "Err(Some(1))", r#"Some("plain\n")"#]
    );
}
