//! Copy-up before any change to a lower object: content, mode, owner, times, xattrs, holes,
//! symlinks and special files; parents first; atomic (nothing left in the workdir).
mod common;
use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn set_times(p: &Path, secs: &str) {
    assert!(
        Command::new("touch")
            .args(["-h", "-d", secs])
            .arg(p)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn write_copies_up_content_and_metadata() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "dir/sub/file", "lower content");
    let file = f.lower(0).join("dir/sub/file");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(f.lower(0).join("dir"), Some(42), Some(43)).unwrap();
    fs::set_permissions(f.lower(0).join("dir"), fs::Permissions::from_mode(0o751)).unwrap();
    xattr::set(&file, "user.test", b"value").unwrap();
    xattr::set(&file, "trusted.overlay.foo", b"internal").unwrap();
    set_times(&file, "2001-02-03 04:05:06");
    set_times(&f.lower(0).join("dir"), "2002-01-01 00:00:00");
    let before = fs::metadata(&file).unwrap();
    let m = f.mount();
    let ino_before = fs::metadata(m.p("dir/sub/file")).unwrap().ino();
    let mut fh = fs::OpenOptions::new()
        .append(true)
        .open(m.p("dir/sub/file"))
        .unwrap();
    fh.write_all(b" + more").unwrap();
    drop(fh);
    let up = f.upper.join("dir/sub/file");
    assert_eq!(read(&up), "lower content + more");
    assert_eq!(read(&file), "lower content", "lower untouched");
    let st = fs::metadata(&up).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o640);
    assert_eq!((st.uid(), st.gid()), (1234, 5678));
    assert_eq!(xattr::get(&up, "user.test").unwrap().unwrap(), b"value");
    assert!(xattr::get(&up, "trusted.overlay.foo").unwrap().is_none());
    let d = fs::metadata(f.upper.join("dir")).unwrap();
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (42, 43, 0o751));
    assert_eq!(
        d.mtime(),
        fs::metadata(f.lower(0).join("dir")).unwrap().mtime()
    );
    // Inode numbers do not change with copy-up.
    assert_eq!(fs::metadata(m.p("dir/sub/file")).unwrap().ino(), ino_before);
    assert_eq!(before.mtime(), fs::metadata(&file).unwrap().mtime());
    assert!(temporaries(&f.work).is_empty(), "workdir left clean");
}

#[test]
fn metadata_changes_copy_up() {
    require_fuse!();
    let f = Fixture::new(1);
    for n in ["chmod", "chown", "utime", "xattr", "trunc"] {
        put(f.lower(0), n, "data");
    }
    let m = f.mount();
    fs::set_permissions(m.p("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.p("chown"), Some(7), Some(8)).unwrap();
    set_times(&m.p("utime"), "1999-12-31 23:59:59");
    xattr::set(m.p("xattr"), "user.k", b"v").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("trunc"))
        .unwrap();
    assert_eq!(
        fs::metadata(f.upper.join("chmod")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(read(f.upper.join("chmod")), "data");
    assert_eq!(fs::metadata(f.upper.join("chown")).unwrap().uid(), 7);
    assert_eq!(
        fs::metadata(f.upper.join("utime")).unwrap().mtime(),
        fs::metadata(m.p("utime")).unwrap().mtime()
    );
    assert_eq!(
        xattr::get(f.upper.join("xattr"), "user.k")
            .unwrap()
            .unwrap(),
        b"v"
    );
    assert_eq!(read(f.upper.join("trunc")), "");
    for n in ["chmod", "chown", "utime", "xattr", "trunc"] {
        assert_eq!(read(f.lower(0).join(n)), "data");
    }
}

#[test]
fn reading_does_not_copy_up() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "d/a", "x");
    let m = f.mount();
    assert_eq!(read(m.p("d/a")), "x");
    let _ = fs::metadata(m.p("d/a")).unwrap();
    let _ = xattr::list(m.p("d/a")).unwrap().count();
    assert!(names(&f.upper).is_empty());
}

#[test]
fn sparse_files_keep_holes_and_large_offsets() {
    require_fuse!();
    let f = Fixture::new(1);
    let p = f.lower(0).join("sparse");
    let mut h = fs::File::create(&p).unwrap();
    h.write_all(b"start").unwrap();
    h.seek(SeekFrom::Start(5 << 30)).unwrap();
    h.write_all(b"end").unwrap();
    drop(h);
    let m = f.mount();
    let mut h = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("sparse"))
        .unwrap();
    h.seek(SeekFrom::Start((5 << 30) + 3)).unwrap();
    h.write_all(b"!").unwrap();
    h.seek(SeekFrom::Start(5 << 30)).unwrap();
    let mut tail = String::new();
    h.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "end!");
    let st = fs::metadata(f.upper.join("sparse")).unwrap();
    assert_eq!(st.len(), (5 << 30) + 4);
    assert!(
        st.blocks() * 512 < 1 << 20,
        "holes preserved: {} blocks",
        st.blocks()
    );
}

#[test]
fn symlinks_and_special_files_copy_up() {
    require_fuse!();
    let f = Fixture::new(1);
    std::os::unix::fs::symlink("../target/x", f.lower(0).join("link")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(f.lower(0).join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let m = f.mount();
    std::os::unix::fs::lchown(m.p("link"), Some(5), Some(6)).unwrap();
    fs::set_permissions(m.p("fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::read_link(f.upper.join("link")).unwrap(),
        Path::new("../target/x")
    );
    assert_eq!(fs::symlink_metadata(f.upper.join("link")).unwrap().uid(), 5);
    let fifo = fs::symlink_metadata(f.upper.join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    assert_eq!(fifo.mode() & 0o777, 0o600);
}

#[test]
fn open_reader_sees_copied_up_data() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "old");
    let m = f.mount();
    let mut reader = fs::File::open(m.p("a")).unwrap();
    fs::write(m.p("a"), "new!").unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "new!");
}

#[test]
fn workdir_leftovers_are_cleaned_at_mount() {
    require_fuse!();
    let f = Fixture::new(1);
    fs::create_dir_all(f.work.join("work/#lfs1.0/deep")).unwrap();
    put(&f.work, "work/#lfs1.1", "partial");
    let _m = f.mount();
    assert!(temporaries(&f.work).is_empty());
}

fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%f %S"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// On a filesystem that shares data (XFS with reflink), copy-up clones the file instead
/// of copying its bytes: a 48 MiB copy-up takes almost no space.
#[test]
fn copy_up_reflinks_where_the_filesystem_can() {
    require_fuse!();
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mkfs.xfs (xfsprogs) missing in CI"
        );
        eprintln!("skipping: no mkfs.xfs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let xfs = LoopFs::new(
        t.path(),
        "xfs",
        512 << 20,
        &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
        "",
    );
    let (lower, upper, work, mnt) = (
        xfs.at.join("lower"),
        xfs.at.join("upper"),
        xfs.at.join("work"),
        t.path().join("mnt"),
    );
    for d in [&lower, &upper, &work, &mnt] {
        fs::create_dir_all(d).unwrap();
    }
    let data: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(lower.join("big"), &data).unwrap();
    Command::new("sync").status().unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&lower)
        .arg(&upper)
        .arg(&mnt)
        .arg("--workdir")
        .arg(&work)
        .output()
        .unwrap();
    assert_success(&out);
    let mounted = UnmountOnDrop(mnt.clone());
    let before = free_bytes(&xfs.at);
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("big"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    Command::new("sync").status().unwrap();
    let used = before.saturating_sub(free_bytes(&xfs.at));
    let got = fs::read(mnt.join("big")).unwrap();
    drop(mounted);
    assert_eq!(got.len(), data.len() + 1);
    assert!(got[..data.len()] == data[..] && got[data.len()] == b'!');
    assert!(
        used < 4 << 20,
        "the copy-up of 48 MiB used {used} bytes: not a reflink"
    );
}
