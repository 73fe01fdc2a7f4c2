//! Inode numbers and the inode cache: unique, stable, unchanged by copy-up, shared by hard
//! links; the daemon's fds stay bounded whatever the tree size.
mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn walk(p: &Path, out: &mut Vec<(String, u64)>) {
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path().to_string_lossy().into_owned(), m.ino()));
        if m.is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[test]
fn unique_stable_and_kept_by_copy_up() {
    require_fuse!();
    let f = Fixture::new(2);
    // Same real inode numbers can occur in different layers; the mount keeps them apart.
    put(f.lower(0), "a", "0");
    put(f.lower(1), "b", "1");
    put(f.lower(1), "d/c", "1");
    put(&f.upper, "u", "u");
    let m = f.mount();
    let mut all = Vec::new();
    walk(&m.path, &mut all);
    let mut seen = HashMap::new();
    for (p, ino) in &all {
        assert!(
            seen.insert(*ino, p.clone()).is_none(),
            "duplicate ino {ino} at {p}"
        );
    }
    let before = fs::metadata(m.p("d/c")).unwrap().ino();
    fs::write(m.p("d/c"), "changed").unwrap();
    assert_eq!(fs::metadata(m.p("d/c")).unwrap().ino(), before);
    let dir_before = fs::metadata(m.p("d")).unwrap().ino();
    assert_eq!(fs::metadata(m.p("d")).unwrap().ino(), dir_before);
    // Still the same after the kernel drops its caches and looks everything up again.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(fs::metadata(m.p("d/c")).unwrap().ino(), before);
    assert_eq!(fs::metadata(m.p("d")).unwrap().ino(), dir_before);
}

#[test]
fn unlinked_open_file_still_answers_fstat() {
    require_fuse!();
    let f = Fixture::new(1);
    let m = f.mount();
    fs::write(m.p("t"), "abc").unwrap();
    let h = fs::File::open(m.p("t")).unwrap();
    fs::remove_file(m.p("t")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(h.metadata().unwrap().len(), 3);
}

/// An object the kernel still uses after its last name is gone stays usable through the
/// open file (fchmod, fsetxattr, ftruncate, write) and inside a removed directory, and its
/// inode number is not handed to new objects meanwhile.
#[test]
fn unlinked_objects_stay_usable() {
    require_fuse!();
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new(1);
    put(f.lower(0), "lowerfile", "lower");
    let m = f.mount();
    fs::write(m.p("t"), "abc").unwrap();
    let h = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("t"))
        .unwrap();
    let ino = h.metadata().unwrap().ino();
    fs::remove_file(m.p("t")).unwrap();
    h.set_permissions(fs::Permissions::from_mode(0o640))
        .unwrap();
    xattr::FileExt::set_xattr(&h, "user.k", b"v").unwrap();
    h.set_len(2).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&h, b"Z", 1).unwrap();
    let meta = h.metadata().unwrap();
    assert_eq!(
        (meta.len(), meta.mode() & 0o777, meta.nlink()),
        (2, 0o640, 0)
    );
    assert_eq!(
        xattr::FileExt::get_xattr(&h, "user.k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    for i in 0..200 {
        fs::write(m.p(&format!("new{i}")), "n").unwrap();
        assert_ne!(fs::metadata(m.p(&format!("new{i}"))).unwrap().ino(), ino);
    }
    // A lower file deleted while open still reads.
    let l = fs::File::open(m.p("lowerfile")).unwrap();
    fs::remove_file(m.p("lowerfile")).unwrap();
    assert_eq!(l.metadata().unwrap().len(), 5);
    // A process inside a removed directory gets ENOENT, as on the kernel.
    fs::create_dir(m.p("gone")).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && rmdir ../gone && ls . ; touch x; echo $?",
            m.p("gone").display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn hard_links_share_inode_and_nlink() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "one", "x");
    fs::hard_link(f.lower(0).join("one"), f.lower(0).join("two")).unwrap();
    let m = f.mount();
    let (a, b) = (
        fs::metadata(m.p("one")).unwrap(),
        fs::metadata(m.p("two")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    fs::create_dir(m.p("sub")).unwrap();
    assert_eq!(fs::metadata(m.p("sub")).unwrap().nlink(), 2);
    // The names are one inode, and the link survives copy-up (kernel overlayfs with
    // index=on): both names end up as one hard link in the upper.
    fs::write(m.p("one"), "new").unwrap();
    assert_eq!(read(m.p("two")), "new");
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(read(m.p("two")), "new");
    assert_eq!(read(f.lower(0).join("one")), "x");
    assert_eq!(read(f.lower(0).join("two")), "x");
    let (u1, u2) = (
        fs::metadata(f.upper.join("one")).unwrap(),
        fs::metadata(f.upper.join("two")).unwrap(),
    );
    assert_eq!((u1.ino(), u1.nlink()), (u2.ino(), 2));
    assert_eq!(fs::metadata(m.p("one")).unwrap().ino(), a.ino());
    fs::remove_file(m.p("one")).unwrap();
    assert_eq!(read(m.p("two")), "new");
    assert_eq!(fs::metadata(m.p("two")).unwrap().nlink(), 1);
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn fds_stay_bounded_over_a_big_tree() {
    require_fuse!();
    let f = Fixture::new(2);
    for layer in 0..2 {
        for d in 0..100 {
            let dir = f.lower(layer).join(format!("d{d}"));
            fs::create_dir(&dir).unwrap();
            for i in 0..500 {
                fs::write(dir.join(format!("f{layer}-{i}")), "").unwrap();
            }
        }
    }
    let m = f.mount();
    let pid = daemon_pid(&m.path);
    let mut all = Vec::new();
    walk(&m.path, &mut all);
    assert_eq!(all.len(), 100 + 100 * 1000);
    // Directory fds are cached (bounded), beyond that only a few fixed ones.
    let fds = fd_count(pid);
    let bound = layerfs::dirfds::CAPACITY + 64;
    assert!(
        fds < bound,
        "daemon holds {fds} fds after walking 100,000 files (at most {bound})"
    );
}

/// Every name's st_ino, and every listing's d_ino, under `root`.
fn numbers(root: &Path) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut st, mut d) = (BTreeMap::new(), BTreeMap::new());
    fn go(root: &Path, dir: &Path, st: &mut BTreeMap<String, u64>, d: &mut BTreeMap<String, u64>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(e.path()).unwrap();
            st.insert(rel.clone(), m.ino());
            d.insert(rel, std::os::unix::fs::DirEntryExt::ino(&e));
            if m.is_dir() {
                go(root, &e.path(), st, d);
            }
        }
    }
    go(root, root, &mut st, &mut d);
    (st, d)
}

/// How each name's number relates to the layers: `lower` (its real lower object's, the
/// same path in the lowers), `upper` (the upper object's own) or `other`.
fn relation(f: &Fixture, st: &BTreeMap<String, u64>) -> BTreeMap<String, &'static str> {
    st.iter()
        .map(|(p, &ino)| {
            let real = |base: &Path| fs::symlink_metadata(base.join(p)).ok().map(|m| m.ino());
            let lower = (0..2).filter_map(|i| real(f.lower(i))).any(|n| n == ino);
            let kind = if lower {
                "lower"
            } else if real(&f.upper) == Some(ino) {
                "upper"
            } else {
                "other"
            };
            (p.clone(), kind)
        })
        .collect()
}

/// With every layer on one filesystem, inode numbers are the kernel's: a lower object
/// shows its real number, a copy keeps its origin's (a file with one link, a directory),
/// also after a rename and a remount (through `trusted.overlay.origin`), a new object shows
/// its own, and d_ino is st_ino everywhere. Checked against kernel overlayfs over identical
/// layers, and across: each mounts the other's upper and shows the same numbers.
#[test]
fn numbers_are_the_kernels_and_survive_copy_up_and_remount() {
    require_fuse!();
    numbers_survive_copy_up_and_remount("");
}

/// The same with every kernel feature on: redirected directories, metacopy stubs, and
/// lower hard links through the index (whose names all show the origin's number).
#[test]
fn numbers_are_the_kernels_with_every_feature() {
    require_fuse!();
    numbers_survive_copy_up_and_remount("redirect_dir=on,index=on,metacopy=on");
}

fn numbers_survive_copy_up_and_remount(opts: &str) {
    let populate = |f: &Fixture| {
        put(f.lower(1), "etc/hosts", "h");
        put(f.lower(1), "etc/passwd", "p");
        put(f.lower(0), "etc/group", "g");
        put(f.lower(1), "usr/bin/tool", "t");
        put(f.lower(0), "usr/lib/x", "x");
        std::os::unix::fs::symlink("tool", f.lower(1).join("usr/bin/link")).unwrap();
        put(f.lower(1), "var/log/old", "o");
        // Without index, the kernel gives a copied hard link the copy's number.
        if !opts.is_empty() {
            put(f.lower(1), "hard/one", "1");
            fs::hard_link(f.lower(1).join("hard/one"), f.lower(1).join("var/two")).unwrap();
        }
    };
    let change = |m: &Path| {
        fs::OpenOptions::new()
            .append(true)
            .open(m.join("etc/hosts"))
            .unwrap();
        std::io::Write::write_all(
            &mut fs::OpenOptions::new()
                .append(true)
                .open(m.join("etc/hosts"))
                .unwrap(),
            b"+",
        )
        .unwrap();
        fs::set_permissions(
            m.join("usr/bin/tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::lchown(m.join("usr/bin/link"), Some(1), Some(1)).unwrap();
        put(m, "usr/lib/new", "n");
        fs::rename(m.join("etc/passwd"), m.join("var/passwd")).unwrap();
        fs::create_dir(m.join("var/log/sub")).unwrap();
        if !opts.is_empty() {
            fs::set_permissions(
                m.join("hard/one"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            // Moves of lower directories need redirects.
            fs::rename(m.join("usr/lib"), m.join("lib")).unwrap();
        }
    };
    let (kernel, ours) = (Fixture::new(2), Fixture::new(2));
    populate(&kernel);
    populate(&ours);
    let mut seen = Vec::new();
    for (f, is_kernel) in [(&kernel, true), (&ours, false)] {
        let mount = || {
            if is_kernel {
                f.kernel_mount_with(opts)
            } else if opts.is_empty() {
                f.mount()
            } else {
                f.mount_with(&["-o", opts])
            }
        };
        let m = mount();
        let (before, d_before) = numbers(&m.path);
        change(&m.path);
        let (after, d_after) = numbers(&m.path);
        drop(m);
        let m = mount();
        let (again, d_again) = numbers(&m.path);
        drop(m);
        for (what, st, d) in [
            ("before", &before, &d_before),
            ("after", &after, &d_after),
            ("remounted", &again, &d_again),
        ] {
            assert_eq!(
                st,
                d,
                "{} {what}: d_ino differs from st_ino",
                if is_kernel { "kernel" } else { "layerfs" }
            );
        }
        for (p, n) in &before {
            if after.contains_key(p) {
                assert_eq!(after[p], *n, "{p} changed number at copy-up ({is_kernel})");
            }
        }
        assert_eq!(
            after["var/passwd"], before["etc/passwd"],
            "kept across a rename"
        );
        assert_eq!(after, again, "kept across a remount ({is_kernel})");
        seen.push((relation(f, &before), relation(f, &after), after));
    }
    let (k, o) = (&seen[0], &seen[1]);
    assert_eq!(k.0, o.0, "before the changes");
    assert_eq!(k.1, o.1, "after the changes");
    // Across: layerfs over the kernel's upper, the kernel over layerfs's.
    kernel.clear_work();
    let ours_opts = ["-o", if opts.is_empty() { "index=off" } else { opts }];
    let over_kernel = numbers(&kernel.mount_with(&ours_opts).path).0;
    assert_eq!(over_kernel, k.2, "layerfs over the kernel's upper");
    ours.clear_work();
    let over_ours = numbers(&ours.kernel_mount_with(opts).path).0;
    assert_eq!(over_ours, o.2, "the kernel over layerfs's upper");
}

/// With the layers on several filesystems and xino=on, numbers are the kernel's xino
/// numbers: the same as kernel overlayfs's for every lower object, for a copied-up file and
/// directory (their origin's, also after a remount), and an upper object's own real number.
#[test]
fn xino_numbers_match_the_kernels_across_filesystems() {
    require_fuse!();
    let f = Fixture::new(2);
    let _t0 = Tmpfs::new(f.lower(0), "8m");
    let _t1 = Tmpfs::new(f.lower(1), "8m");
    put(f.lower(0), "a", "a");
    put(f.lower(0), "d/x", "x");
    put(f.lower(1), "b", "b");
    put(f.lower(1), "d/y", "y");
    let kernel = xino_run(&f, &|| f.kernel_mount_with("xino=on"));
    f.clear_upper();
    let ours = xino_run(&f, &|| f.mount_with(&["-o", "xino=on"]));
    assert_eq!(ours.0, kernel.0, "after the copy-ups");
    assert_eq!(ours.1, kernel.1, "after a remount");
    assert_eq!(ours.0, ours.1, "kept across the remount");
    assert_eq!(ours.0["a"] >> 62, 1);
    assert_eq!(ours.0["b"] >> 62, 2);
}

/// For [`xino_numbers_match_the_kernels_across_filesystems`]: copies up a file and a
/// directory and makes a new file; the numbers then and after a remount (the new file,
/// checked to show its own number, left out).
fn xino_run<'a>(
    f: &'a Fixture,
    mount: &dyn Fn() -> Mounted<'a>,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let numbers_of = |m: &Path| {
        let mut all = numbers(m).0;
        let c = fs::metadata(f.upper.join("c")).unwrap().ino();
        assert_eq!(
            all.remove("c"),
            Some(c),
            "an upper object shows its own number"
        );
        all
    };
    let m = mount();
    put(&m.path, "c", "c");
    fs::set_permissions(m.p("a"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(m.p("d/y"), fs::Permissions::from_mode(0o600)).unwrap();
    let first = numbers_of(&m.path);
    drop(m);
    (first, numbers_of(&mount().path))
}

/// The upper root keeps the overlay's UUID (`trusted.overlay.uuid`) as the kernel keeps
/// it: made at the first mount of a fresh upper (uuid=auto, the default, and uuid=on),
/// not for an upper an older mount used (its root impure, no UUID) unless uuid=on, never
/// under uuid=null; once there it stays, whichever side mounts.
#[test]
fn the_upper_root_keeps_the_overlay_uuid_as_the_kernel() {
    require_fuse!();
    let uuid = |f: &Fixture| xattr::get(&f.upper, "trusted.overlay.uuid").unwrap();
    let old_upper = |f: &Fixture| {
        f.clear_upper();
        xattr::set(&f.upper, "trusted.overlay.impure", b"y").unwrap();
    };
    for (opts, old, kept) in [
        ("uuid=auto", false, true),
        ("uuid=on", false, true),
        ("uuid=null", false, false),
        ("uuid=auto", true, false),
        ("uuid=on", true, true),
    ] {
        let k = Fixture::new(1);
        let o = Fixture::new(1);
        if old {
            old_upper(&k);
            old_upper(&o);
        }
        drop(k.kernel_mount_with(opts));
        drop(o.mount_with(&["-o", opts]));
        let (ku, ou) = (uuid(&k), uuid(&o));
        assert_eq!(ku.is_some(), kept, "kernel, {opts}, old upper {old}");
        assert_eq!(ou.is_some(), kept, "layerfs, {opts}, old upper {old}");
        if let Some(v) = &ou {
            assert_eq!(v.len(), 16);
            o.clear_work();
            drop(o.kernel_mount_with(opts));
            assert_eq!(uuid(&o).as_ref(), Some(v), "the kernel kept layerfs's UUID");
            o.clear_work();
            drop(o.mount_with(&["-o", opts]));
            assert_eq!(uuid(&o).as_ref(), Some(v), "layerfs kept its UUID");
        }
    }
}
