//! Awkward names and paths behave as on the kernel; the daemon never follows a symlink
//! inside a layer, even one swapped in behind its back.
mod common;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[test]
fn long_odd_and_non_utf8_names() {
    require_fuse!();
    let f = Fixture::new(1);
    let long = "L".repeat(255);
    put(f.lower(0), &long, "long");
    let odd = OsStr::from_bytes(b"new\nline \xff\xfe bytes");
    fs::write(f.lower(0).join(odd), "odd").unwrap();
    let m = f.mount();
    assert_eq!(read(m.p(&long)), "long");
    fs::write(m.p(&long), "changed").unwrap();
    assert_eq!(read(f.upper.join(&long)), "changed");
    assert_eq!(
        errno(fs::write(m.p(&"M".repeat(256)), "")),
        libc::ENAMETOOLONG
    );
    assert_eq!(fs::read(m.path.join(odd)).unwrap(), b"odd");
    let listed: Vec<_> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.iter().any(|n| n == odd));
    let odd2 = OsStr::from_bytes(b"\x80\x81 created");
    fs::write(m.path.join(odd2), "x").unwrap();
    fs::rename(m.path.join(odd), m.path.join(OsStr::from_bytes(b"ren\xff"))).unwrap();
    assert!(f.upper.join(odd2).exists());
    assert!(
        fs::symlink_metadata(f.upper.join(odd)).is_ok(),
        "whiteout for the old name"
    );
    std::os::unix::fs::symlink("../../../../etc/passwd", m.p("dots")).unwrap();
    assert_eq!(
        fs::read_link(f.upper.join("dots")).unwrap(),
        PathBuf::from("../../../../etc/passwd")
    );
}

#[test]
fn deep_paths() {
    require_fuse!();
    let f = Fixture::new(1);
    let mut rel = PathBuf::new();
    for i in 0..200 {
        rel.push(format!("d{i:03}xxxxxxxxxxxx"));
    }
    fs::create_dir_all(f.lower(0).join(&rel)).unwrap();
    fs::write(f.lower(0).join(&rel).join("leaf"), "deep").unwrap();
    let m = f.mount();
    assert_eq!(read(m.path.join(&rel).join("leaf")), "deep");
    fs::write(m.path.join(&rel).join("leaf"), "written").unwrap();
    assert_eq!(read(f.upper.join(&rel).join("leaf")), "written");
}

#[test]
fn symlink_swapped_into_the_upper_is_not_followed() {
    require_fuse!();
    let f = Fixture::new(1);
    let outside = f.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    put(f.lower(0), "d/x", "lower");
    put(f.lower(0), "e/y", "lower");
    let m = f.mount();
    // The kernel has looked the directories up as lower-only.
    assert_eq!(read(m.p("d/x")), "lower");
    assert_eq!(read(m.p("e/y")), "lower");
    // Someone plants symlinks in the upper where copy-up will create the parents.
    std::os::unix::fs::symlink(&outside, f.upper.join("d")).unwrap();
    std::os::unix::fs::symlink("../outside", f.upper.join("e")).unwrap();
    let r1 = fs::write(m.p("d/x"), "escaped?");
    let r2 = fs::write(m.p("e/y"), "escaped?");
    assert!(r1.is_err() && r2.is_err(), "{r1:?} {r2:?}");
    assert!(names(&outside).is_empty(), "wrote outside the layers");
    // And a symlink planted in a lower directory is never followed when resolving paths.
    fs::remove_file(f.upper.join("d")).unwrap();
    fs::remove_file(f.upper.join("e")).unwrap();
    drop(m);
    fs::remove_dir_all(f.lower(0).join("e")).unwrap();
    std::os::unix::fs::symlink(&outside, f.lower(0).join("e")).unwrap();
    fs::write(outside.join("secret"), "s").unwrap();
    let m = f.mount();
    assert!(
        fs::symlink_metadata(m.p("e"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::os::unix::fs::lchown(m.p("e"), Some(3), Some(3)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(&outside).unwrap()),
        0,
        "chown went through the symlink"
    );
}

/// An open directory, reached through `/proc/self/fd` so that paths of any depth can be
/// walked with short path strings.
struct Dir(fs::File);

impl Dir {
    fn open(p: &Path) -> std::io::Result<Dir> {
        fs::File::open(p).map(Dir)
    }

    fn p(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd())).join(rel)
    }

    /// Goes `n` levels down through directories called `comp`, `make`-ing them on the way.
    fn descend(mut self, comp: &str, n: usize, make: bool) -> std::io::Result<Dir> {
        for _ in 0..n {
            if make {
                fs::create_dir(self.p(comp))?;
            }
            self = Dir::open(&self.p(comp))?;
        }
        Ok(self)
    }

    /// (name, type) of each entry, sorted; a whiteout shows as "c".
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.p(""))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                let k = if t.is_dir() {
                    "d"
                } else if t.is_char_device() {
                    "c"
                } else {
                    "f"
                };
                format!("{} {k}", e.file_name().to_string_lossy())
            })
            .collect();
        v.sort();
        v
    }
}

const COMP: &str = "a-rather-long-directory-name-0123456789";
const DEPTH: usize = 150;

/// Operations at a depth whose full path is longer than PATH_MAX, with their answers.
fn deep_ops(mnt: &Path) -> Vec<String> {
    let d = Dir::open(mnt).unwrap().descend(COMP, DEPTH, false).unwrap();
    let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error {e}"));
    let ok = |r: std::io::Result<()>| show(r.map(|()| "ok".into()));
    let mut out = vec![
        show(fs::read_to_string(d.p("leaf"))),
        ok(fs::write(d.p("leaf2"), "changed")),
        ok(fs::write(d.p("new"), "made")),
        ok(fs::create_dir(d.p("sub"))),
        ok(fs::rename(d.p("new"), d.p("sub/moved"))),
        ok(fs::remove_file(d.p("leaf"))),
        show(fs::read_to_string(d.p("sub/moved"))),
        show(fs::read_to_string(d.p("leaf2"))),
    ];
    out.extend(d.listing());
    out
}

/// A tree deeper than PATH_MAX in a lower: reading, copy-up, create, rename and whiteouts
/// there give the same answers and the same upper as kernel overlayfs.
#[test]
fn paths_longer_than_path_max() {
    require_fuse!();
    let setup = |f: &Fixture| {
        let d = Dir::open(f.lower(0))
            .unwrap()
            .descend(COMP, DEPTH, true)
            .unwrap();
        fs::write(d.p("leaf"), "deep").unwrap();
        fs::write(d.p("leaf2"), "deep2").unwrap();
    };
    assert!(DEPTH * (COMP.len() + 1) > 4096);
    let k = Fixture::new(1);
    setup(&k);
    let kernel = deep_ops(&k.kernel_mount().path);
    let f = Fixture::new(1);
    setup(&f);
    let ours = deep_ops(&f.mount().path);
    assert_eq!(ours, kernel);
    let upper_listing = |f: &Fixture| {
        let d = Dir::open(&f.upper)
            .unwrap()
            .descend(COMP, DEPTH, false)
            .unwrap();
        (d.listing(), fs::read_to_string(d.p("leaf2")).unwrap())
    };
    assert_eq!(upper_listing(&f), upper_listing(&k));
}
