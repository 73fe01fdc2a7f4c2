//! The command line: help and version, the three mount forms, and bad input — one line on
//! stderr, a non-zero exit, and nothing created or changed.
mod common;
use common::*;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn layerfs(args: &[&OsStr]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Everything below `root`, to check that a failed command changed nothing.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            v.push(p);
        }
    }
    v.sort();
    v
}

fn assert_refused(f: &Fixture, args: &[&OsStr], needle: &str) {
    let before = tree(f.dir.path());
    let out = layerfs(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.len() < 1000, "{args:?}: a {}-byte message", err.len());
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(!is_mounted(&f.mnt), "{args:?} mounted");
    assert_eq!(tree(f.dir.path()), before, "{args:?} changed the disk");
}

#[test]
fn help_and_version() {
    for args in [&["--help"][..], &["mount", "--help"], &["--version"]] {
        let a: Vec<&OsStr> = args.iter().map(|s| os(s)).collect();
        let out = layerfs(&a);
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let out = layerfs(&[os("mount"), os("--help")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--workdir") && text.contains("--read-only"));
}

#[test]
fn bad_input_is_refused_cleanly() {
    require_fuse!();
    let f = Fixture::new(2);
    let l0 = f.lower(0).as_os_str();
    let lowers = f.lowerdir();
    let up = f.upper.as_os_str();
    let mnt = f.mnt.as_os_str();
    let missing = f.dir.path().join("missing");
    let file = f.dir.path().join("file");
    fs::write(&file, "").unwrap();
    let inside_lower = f.lower(0).join("sub");
    fs::create_dir(&inside_lower).unwrap();
    let inside_upper = f.upper.join("w");
    fs::create_dir(&inside_upper).unwrap();
    let m = |args: &[&OsStr]| -> Vec<OsString> {
        let mut v = vec![OsString::from("mount")];
        v.extend(args.iter().map(|a| a.to_os_string()));
        v
    };
    let twice = OsString::from(format!("{}:{}", l0.to_str().unwrap(), l0.to_str().unwrap()));
    let upper_only = OsString::from(format!("upperdir={}", up.to_str().unwrap()));
    let lower_only = OsString::from(format!("lowerdir={}", lowers.to_str().unwrap()));
    let many: Vec<String> = (0..501).map(|i| format!("/l{i}")).collect();
    let many = OsString::from(many.join(":"));
    let huge_opt = OsString::from("x".repeat(100_000));
    let huge_lower = OsString::from(format!("lowerdir=/{}", "y".repeat(100_000)));
    let non_utf8 = OsString::from_vec(b"/no/such/\xff\xfe".to_vec());
    let mut non_utf8_opt = OsString::from("lowerdir=");
    non_utf8_opt.push(&non_utf8);
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (m(&[missing.as_os_str(), up, mnt]), "lower layer"),
        (m(&[file.as_os_str(), up, mnt]), "not a directory"),
        (m(&[&lowers, missing.as_os_str(), mnt]), "upper layer"),
        (m(&[&lowers, up, missing.as_os_str()]), "mountpoint"),
        (m(&[&lowers, up, file.as_os_str()]), "not a directory"),
        (m(&[&lowers, l0, mnt]), "also a lower layer"),
        (m(&[&lowers, inside_lower.as_os_str(), mnt]), "overlap"),
        (m(&[l0, f.dir.path().as_os_str(), mnt]), "overlap"),
        (m(&[&twice, up, mnt]), "twice"),
        (
            m(&[&lowers, up, mnt, os("--workdir"), inside_upper.as_os_str()]),
            "overlap",
        ),
        (
            m(&[&lowers, up, mnt, os("--workdir"), os("/dev/shm")]),
            "same filesystem",
        ),
        (
            m(&[&lowers, up, mnt, os("--workdir"), missing.as_os_str()]),
            "workdir",
        ),
        (m(&[os(""), up, mnt]), "empty layer"),
        (m(&[os("a:::b"), up, mnt]), "empty layer"),
        (
            m(&[os("a::b:c"), up, mnt]),
            "cannot follow a data-only layer",
        ),
        (
            m(&[&lowers, up, mnt, os("-o"), os("upperdri=/x")]),
            "unknown mount option",
        ),
        (
            m(&[&lowers, up, mnt, os("-o"), os("context=\"a,b")]),
            "unbalanced",
        ),
        (m(&[&lowers, up, mnt, os("-o"), os("fsync=7")]), "fsync"),
        (m(&[&many, up, mnt]), "at most 500"),
        (vec!["-o".into(), upper_only, mnt.into()], "no lower layer"),
        (
            vec!["-o".into(), "lowerdir=".into(), mnt.into()],
            "empty layer",
        ),
        (vec!["-o".into(), lower_only], "no mountpoint"),
        (
            m(&[&lowers, up, mnt, os("-o"), &huge_opt]),
            "unknown mount option",
        ),
        (vec!["-o".into(), huge_lower, mnt.into()], "lower layer"),
        (m(&[&non_utf8, up, mnt]), "lower layer"),
        (vec!["-o".into(), non_utf8_opt, mnt.into()], "lower layer"),
    ];
    for (args, needle) in &cases {
        let a: Vec<&OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        assert_refused(&f, &a, needle);
    }
    // The default workdir is not created when the mount is refused.
    assert_refused(
        &f,
        &[os("mount"), &lowers, up, missing.as_os_str()],
        "mountpoint",
    );
    assert!(!f.dir.path().join(".upper.layerfs-work").exists());
}

#[test]
fn mountpoint_inside_a_live_mount_that_is_a_file_is_refused() {
    require_fuse!();
    let f = Fixture::new(1);
    let _m = f.mount();
    // Mounting again on top works in Linux; a dead FUSE mount is the busy case the kernel
    // refuses (tests/daemon.rs). Here: a mountpoint that is a file inside the live mount.
    fs::write(f.mnt.join("plain"), "").unwrap();
    let out = layerfs(&[
        os("mount"),
        f.lower(0).as_os_str(),
        f.upper.as_os_str(),
        f.mnt.join("plain").as_os_str(),
    ]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn fuse_overlayfs_form_and_default_workdir() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(1), "x", "x");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        f.lowerdir().to_str().unwrap(),
        f.upper.display(),
        f.work.display()
    );
    let mut c = Command::new(BIN);
    c.args([
        "-o",
        &opts,
        "-o",
        "context=\"system_u:object_r:container_file_t:s0:c1,c2\"",
    ])
    .arg(&f.mnt);
    let m = f.run_mount(c);
    assert_eq!(read(m.p("x")), "x");
    drop(m);
    // Without a workdir, the documented default sibling is created and used.
    let mut c = Command::new(BIN);
    c.arg("mount").arg(f.lowerdir()).arg(&f.upper).arg(&f.mnt);
    let m = f.run_mount(c);
    fs::write(m.p("x"), "changed").unwrap();
    assert!(f.dir.path().join(".upper.layerfs-work/work").is_dir());
    assert!(!names(&m.path).iter().any(|n| n.contains("layerfs-work")));
}

#[test]
fn mount_helper_forms() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "a", "A");
    put(f.lower(1), "b", "B");
    // What mount.fuse3 runs for containerd: SOURCE MOUNTPOINT -o OPTS,dev,suid; and the
    // probe's read-only union of two lowers.
    let opts = format!("lowerdir={},dev,suid", f.lowerdir().to_str().unwrap());
    let mut c = Command::new(BIN);
    c.arg("overlay").arg(&f.mnt).args(["-o", &opts]);
    let m = f.run_mount(c);
    assert_eq!(names(&m.path), ["a", "b"]);
    assert_eq!(errno(fs::write(m.p("c"), "")), libc::EROFS);
    drop(m);
    // mount -t fuse.layerfs goes through mount.fuse3, which finds layerfs on PATH.
    if Command::new("mount.fuse3").arg("--help").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mount.fuse3 missing in CI"
        );
        return;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        f.lowerdir().to_str().unwrap(),
        f.upper.display(),
        f.work.display()
    );
    // mount(8) runs helpers with a fixed PATH, so put layerfs where it looks (for this
    // test only).
    let _installed = Installed::new(Path::new("/usr/local/sbin/layerfs"));
    let mut c = Command::new("mount");
    c.args(["-t", "fuse.layerfs", "-o", &opts, "layerfs"])
        .arg(&f.mnt);
    let m = f.run_mount(c);
    fs::write(m.p("c"), "C").unwrap();
    assert_eq!(read(f.upper.join("c")), "C");
    let line = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.contains(f.mnt.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(line.contains("fuse.layerfs"), "{line}");
}

/// A symlink to the layerfs binary, removed on drop (left alone if something was there).
struct Installed(Option<PathBuf>);

impl Installed {
    fn new(at: &Path) -> Self {
        if fs::symlink_metadata(at).is_ok() {
            return Installed(None);
        }
        std::os::unix::fs::symlink(BIN, at).unwrap();
        Installed(Some(at.to_path_buf()))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn no_access_to_dev_fuse() {
    require_fuse!();
    let _serial = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fixture::new(1);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    for d in [f.lower(0), &f.upper, &f.work, &f.mnt] {
        std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap();
    }
    let before = tree(f.dir.path());
    let out = as_uid_1000()
        .args([BIN, "mount"])
        .arg(f.lowerdir())
        .arg(&f.upper)
        .arg(&f.mnt)
        .arg("--workdir")
        .arg(&f.work)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/dev/fuse"), "{err}");
    assert_eq!(tree(f.dir.path()), before);
}

#[test]
fn unprivileged_mount_through_fusermount3() {
    require_fuse!();
    if Command::new("fusermount3").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "fusermount3 missing in CI"
        );
        return;
    }
    let _open = OpenDevFuse::new();
    let f = Fixture::new(1);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    put(f.lower(0), "a", "lower");
    put(f.lower(0), "b", "gone");
    for d in [f.lower(0), &f.upper, &f.work, &f.mnt, &f.lower(0).join("a")] {
        std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap();
    }
    let as_user = |args: &[&OsStr]| as_uid_1000().args(args).output().unwrap();
    let out = as_user(&[
        os(BIN),
        os("mount"),
        &f.lowerdir(),
        f.upper.as_os_str(),
        f.mnt.as_os_str(),
        os("--workdir"),
        f.work.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Mounted::adopt(&f);
    // What fusermount3 gives another user: owner only, nosuid, nodev.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == f.mnt.to_str())
        .unwrap();
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    assert!(!line.contains("allow_other"), "{line}");
    let other = Command::new("setpriv")
        .args(["--reuid=1001", "--regid=1001", "--clear-groups", "ls"])
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user got in");
    let script = format!(
        "echo more >> {0}/a && rm {0}/b && mkdir {0}/d && echo x > {0}/d/f",
        f.mnt.display()
    );
    let out = as_user(&[os("sh"), os("-c"), os(&script)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(f.upper.join("a")), "lowermore\n");
    assert!(is_whiteout(&f.upper.join("b")));
    let out = as_user(&[os(BIN), os("umount"), f.mnt.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&f.mnt));
    drop(guard);
}

/// Another user may not ask for what fusermount3 would refuse or drop: one line, exit 1,
/// nothing created.
#[test]
fn unprivileged_users_get_what_fusermount3_allows() {
    require_fuse!();
    let f = Fixture::new(1);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for d in [f.lower(0), &f.upper, &f.mnt] {
        std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap();
    }
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    let allowed = conf.lines().any(|l| l.trim() == "user_allow_other");
    let before = tree(f.dir.path());
    for (opt, needs) in [
        ("allow_other", "user_allow_other"),
        ("suid", "needs root"),
        ("dev", "needs root"),
    ] {
        if opt == "allow_other" && allowed {
            continue;
        }
        let out = as_uid_1000()
            .args([BIN, "mount"])
            .arg(f.lowerdir())
            .arg(&f.upper)
            .arg(&f.mnt)
            .args(["-o", opt])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{opt}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(opt) && err.contains(needs), "{err}");
        assert_eq!(tree(f.dir.path()), before, "{opt}: something was created");
    }
}

/// Layer paths that are not UTF-8 are paths like any other, in both command-line forms.
#[test]
fn non_utf8_layer_paths() {
    require_fuse!();
    let f = Fixture::new(1);
    let odd = f
        .dir
        .path()
        .join(OsString::from_vec(b"lower\xff\n".to_vec()));
    fs::create_dir(&odd).unwrap();
    put(&odd, "file", "odd\n");
    let mut c = Command::new(BIN);
    c.arg("mount")
        .arg(&odd)
        .arg(&f.upper)
        .arg(&f.mnt)
        .arg("--workdir")
        .arg(&f.work);
    let m = f.run_mount(c);
    assert_eq!(read(m.p("file")), "odd\n");
    drop(m);
    let mut opts = OsString::from("lowerdir=");
    opts.push(&odd);
    opts.push(format!(
        ",upperdir={},workdir={}",
        f.upper.display(),
        f.work.display()
    ));
    let mut c = Command::new(BIN);
    c.arg("-o").arg(&opts).arg(&f.mnt);
    let m = f.run_mount(c);
    fs::write(m.p("file"), "changed\n").unwrap();
    assert_eq!(read(f.upper.join("file")), "changed\n");
}
