//! index=on: every name of a lower hard link is one inode across copy-up and remount, in
//! the kernel's format (`WORKDIR/index`, `trusted.overlay.nlink`), both ways with the
//! kernel; and the kernel's checks of the index at mount.
mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const INDEX: [&str; 2] = ["-o", "index=on"];

/// A lower file with four names in two directories, and one with a single name.
fn populate(f: &Fixture) {
    let l = f.lower(0);
    put(l, "hard/a", "data");
    fs::hard_link(l.join("hard/a"), l.join("hard/b")).unwrap();
    put(l, "other/.keep", "");
    fs::hard_link(l.join("hard/a"), l.join("other/c")).unwrap();
    fs::hard_link(l.join("hard/a"), l.join("other/d")).unwrap();
    put(l, "solo", "s");
}

fn append(p: &Path, s: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// (st_ino, st_nlink, content) of each name, `None` for a name that is gone.
fn names(root: &Path, names: &[&str]) -> Vec<Option<(u64, u64, String)>> {
    names
        .iter()
        .map(|n| {
            let p = root.join(n);
            let m = fs::symlink_metadata(&p).ok()?;
            Some((m.ino(), m.nlink(), read(&p)))
        })
        .collect()
}

/// Every listing's d_ino is the name's st_ino, under `root`.
fn assert_d_ino_is_st_ino(root: &Path) {
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::DirEntryExt::ino(&e),
            m.ino(),
            "{}: d_ino is not st_ino",
            e.path().display()
        );
        if m.is_dir() {
            assert_d_ino_is_st_ino(&e.path());
        }
    }
}

fn index_entries(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(f.work.join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('#'))
        .collect();
    v.sort();
    v
}

const ALL: [&str; 4] = ["hard/a", "hard/b", "other/c", "other/d"];

/// A write through one name copies the file up into the index; every name, also one
/// first met after a remount, is then that one file with the lower's inode number and
/// four links; a removed name counts down. The kernel with index=on shows exactly the
/// same on layerfs's upper, and layerfs on the kernel's.
#[test]
fn lower_hard_links_stay_one_inode_across_copy_up_and_remount() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    let lower_ino = fs::metadata(f.lower(0).join("hard/a")).unwrap().ino();
    let new = |n| Some((lower_ino, n, "data+".to_string()));
    {
        let m = f.mount_with(&INDEX);
        let _ = names(&m.path, &["hard/a", "hard/b"]);
        append(&m.p("hard/a"), "+");
        assert_eq!(names(&m.path, &["hard/a", "hard/b"]), vec![new(4), new(4)]);
        assert_d_ino_is_st_ino(&m.path);
    }
    let entries = index_entries(&f);
    assert_eq!(entries.len(), 1, "index: {entries:?}");
    let entry = f.work.join("index").join(&entries[0]);
    assert_eq!(
        xattr::get(&entry, "trusted.overlay.origin")
            .unwrap()
            .unwrap(),
        hex_decode(&entries[0]),
        "an index entry is named after its origin"
    );
    // Lookups wrote nothing: only the name written through is linked up, as on the kernel
    // (though `hard/b` was looked up last before the write).
    assert!(!f.upper.join("other").exists());
    assert!(!f.upper.join("hard/b").exists());
    assert_eq!(
        fs::metadata(f.upper.join("hard/a")).unwrap().ino(),
        fs::metadata(&entry).unwrap().ino()
    );
    assert_eq!(
        xattr::get(&entry, "trusted.overlay.nlink")
            .unwrap()
            .unwrap(),
        b"U+2"
    );
    {
        let m = f.mount_with(&INDEX);
        assert_d_ino_is_st_ino(&m.path);
        assert_eq!(names(&m.path, &ALL), vec![new(4); 4]);
        fs::remove_file(m.p("other/c")).unwrap();
        assert_eq!(names(&m.path, &ALL), vec![new(3), new(3), None, new(3)]);
        fs::hard_link(m.p("other/d"), m.p("e")).unwrap();
        assert_eq!(names(&m.path, &["hard/b", "e"]), vec![new(4), new(4)]);
        assert_d_ino_is_st_ino(&m.path);
    }
    f.clear_work();
    {
        let k = f.kernel_mount_with("index=on");
        assert_eq!(
            names(&k.path, &["hard/a", "hard/b", "other/c", "other/d", "e"]),
            vec![new(4), new(4), None, new(4), new(4)]
        );
    }
    // And the other way: the kernel copies up and removes, layerfs reads its upper.
    let k = Fixture::new(1);
    populate(&k);
    let kino = fs::metadata(k.lower(0).join("hard/a")).unwrap().ino();
    let knew = |n| Some((kino, n, "data+".to_string()));
    {
        let m = k.kernel_mount_with("index=on");
        append(&m.p("hard/b"), "+");
        fs::remove_file(m.p("hard/a")).unwrap();
    }
    k.clear_work();
    let m = k.mount_with(&INDEX);
    assert_eq!(names(&m.path, &ALL), vec![None, knew(3), knew(3), knew(3)]);
    fs::remove_file(m.p("hard/b")).unwrap();
    fs::remove_file(m.p("other/c")).unwrap();
    assert_eq!(names(&m.path, &["other/d"]), vec![knew(1)]);
    fs::remove_file(m.p("other/d")).unwrap();
    drop(m);
    assert_eq!(
        index_entries(&k),
        Vec::<String>::new(),
        "the last name took the entry"
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The mount command's result, for mounts expected to fail.
fn try_mount(f: &Fixture, upper: &Path, opts: &str) -> std::process::Output {
    let mut c = f.mount_command_on(upper, &f.work);
    c.args(["-o", opts]);
    let out = c.output().unwrap();
    if out.status.success() {
        let _ = Command::new(BIN).arg("umount").arg(&f.mnt).status();
    }
    out
}

fn refused(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

/// As the kernel: an upper whose root records another first lower, or a workdir whose
/// index belongs to another upper, is refused under index=on (with a one-line reason),
/// and mounts with index=off.
#[test]
fn the_index_is_refused_over_other_layers() {
    require_fuse!();
    let f = Fixture::new(2);
    populate(&f);
    drop(f.mount_with(&INDEX));
    assert!(
        xattr::get(&f.upper, "trusted.overlay.origin")
            .unwrap()
            .is_some()
    );
    // The same upper over other lowers (the second lower first).
    let mut c = Command::new(BIN);
    c.arg("mount")
        .arg(format!("{}:{}", f.lower(1).display(), f.lower(0).display()))
        .arg(&f.upper)
        .arg(&f.mnt)
        .args(["--workdir"])
        .arg(&f.work)
        .args(["-o", "index=on"]);
    let out = c.output().unwrap();
    if out.status.success() {
        let _ = Command::new(BIN).arg("umount").arg(&f.mnt).status();
    }
    refused(&out, "was made over other lower layers");
    // The same workdir with another upper.
    let other = f.dir.path().join("upper2");
    fs::create_dir(&other).unwrap();
    refused(
        &try_mount(&f, &other, "index=on"),
        "belongs to another upper",
    );
    // index=off mounts both.
    let out = try_mount(&f, &other, "index=off");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// At mount, as the kernel: leftovers of an interrupted copy-up (`#` names), stale
/// entries (an origin that is not their name) and orphans (a union count of nothing) are
/// removed; an entry that records no origin refuses the mount.
#[test]
fn mount_cleans_the_index_as_the_kernel() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    {
        let m = f.mount_with(&INDEX);
        append(&m.p("hard/a"), "+");
    }
    let index = f.work.join("index");
    let entry = index_entries(&f).remove(0);
    fs::write(index.join("#lfs1.2"), "leftover").unwrap();
    // Stale: the same file under another handle's name.
    let mut stale = entry.clone();
    let last = stale.pop().unwrap();
    stale.push(if last == '0' { '1' } else { '0' });
    fs::copy(index.join(&entry), index.join(&stale)).unwrap();
    for (k, v) in [
        ("trusted.overlay.origin", hex_decode(&entry)),
        ("trusted.overlay.nlink", b"U+3".to_vec()),
    ] {
        xattr::set(index.join(&stale), k, &v).unwrap();
    }
    drop(f.mount_with(&INDEX));
    assert_eq!(index_entries(&f), vec![entry.clone()]);
    assert!(!index.join("#lfs1.2").exists());
    // Orphan: no name left (the upper name gone, the count at nothing).
    fs::remove_file(f.upper.join("hard/a")).unwrap();
    xattr::set(index.join(&entry), "trusted.overlay.nlink", b"U-1").unwrap();
    drop(f.mount_with(&INDEX));
    assert_eq!(index_entries(&f), Vec::<String>::new());
    // An entry without an origin is not the kernel's to trust: refused.
    fs::write(index.join(&entry), "data+").unwrap();
    refused(&try_mount(&f, &f.upper, "index=on"), "records no origin");
}

/// index=on needs an upper to mean anything: a read-only union ignores it, as the kernel.
#[test]
fn index_on_without_an_upper_is_ignored() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    let mut c = Command::new(BIN);
    c.arg("mount")
        .arg(f.lowerdir())
        .arg("--read-only")
        .arg(&f.mnt)
        .args(["-o", "index=on"]);
    let m = f.run_mount(c);
    assert_eq!(read(m.p("other/d")), "data");
}

/// Mounts kernel overlayfs of `lowerdir` (with `upper` and its workdir, if given) on `at`,
/// unmounted on drop.
fn kernel_overlay(lowerdir: String, upper: Option<(&Path, &Path)>, at: &Path) -> Unmount {
    fs::create_dir_all(at).unwrap();
    let mut opts = format!("lowerdir={lowerdir}");
    if let Some((u, w)) = upper {
        opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
    }
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success());
    Unmount(at.to_path_buf())
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        // A daemon that served from it may take a moment to let go: then detached.
        let plain = Command::new("umount").arg(&self.0).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// An upper inside an overlayfs (a container running one, say): the kernel refuses it
/// ("not supported as upperdir"); layerfs serves it, and since overlayfs gives no file
/// handles to open, without the index, saying so in one line.
#[test]
fn an_upper_on_overlayfs_serves_without_the_index() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    let base = f.dir.path().join("base");
    let (bu, bw) = (f.dir.path().join("bu"), f.dir.path().join("bw"));
    for d in [&base, &bu, &bw] {
        fs::create_dir(d).unwrap();
    }
    let ov = f.dir.path().join("ov");
    let _ov = kernel_overlay(
        base.display().to_string(),
        Some((bu.as_path(), bw.as_path())),
        &ov,
    );
    let (upper, work) = (ov.join("upper"), ov.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let kernel = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            f.lower(0).display(),
            upper.display(),
            work.display()
        ))
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(
        !kernel.status.success(),
        "the kernel took an upper on overlayfs"
    );
    let mut c = f.mount_command_on(&upper, &work);
    c.args(["-o", "index=on,redirect_dir=on"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let m = Mounted::adopt(&f);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("falling back to index=off"), "{err}");
    append(&m.p("hard/a"), "+");
    assert_eq!(read(m.p("hard/b")), "data+");
    fs::rename(m.p("other"), m.p("moved")).unwrap();
    assert_eq!(read(m.p("moved/d")), "data+");
    drop(m);
    assert!(!work.join("index").exists());
}

/// A lower that is itself an overlayfs gives no file handles to open: layerfs mounts with
/// index=off and says so in one line, as the kernel falls back ("does not support file
/// handles, falling back to index=off"); no index is made.
#[test]
fn a_layer_without_file_handles_falls_back_to_index_off() {
    require_fuse!();
    let f = Fixture::new(1);
    populate(&f);
    let below = f.dir.path().join("below");
    fs::create_dir(&below).unwrap();
    let ov = f.dir.path().join("ov");
    let _ov = kernel_overlay(
        format!("{}:{}", f.lower(0).display(), below.display()),
        None,
        &ov,
    );
    let mut c = Command::new(BIN);
    c.arg("mount")
        .arg(&ov)
        .arg(&f.upper)
        .arg(&f.mnt)
        .arg("--workdir")
        .arg(&f.work)
        .args(["-o", "index=on"]);
    let out = c.output().unwrap();
    let m = Mounted::adopt(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("falling back to index=off"), "{err}");
    append(&m.p("hard/a"), "+");
    assert_eq!(read(m.p("hard/b")), "data+");
    drop(m);
    assert!(!f.work.join("index").exists());
}
