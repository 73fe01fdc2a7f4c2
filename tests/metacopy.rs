//! metacopy=on: a metadata change of a lower file copies up a stub that keeps its data
//! below, in the kernel's format; the first write brings the data up.
mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

const MC: [&str; 2] = ["-o", "metacopy=on"];

fn xattr_of(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).unwrap()
}

/// chmod and chown of a 48 MiB lower file copy no data: the upper holds a sparse stub of
/// the lower's size with `trusted.overlay.metacopy`; reads, st_size and st_blocks come
/// from the lower; an append then brings the data up and drops the mark.
#[test]
fn metadata_changes_copy_up_a_stub_and_a_write_brings_the_data() {
    require_fuse!();
    let f = Fixture::new(1);
    let data: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(f.lower(0).join("big"), &data).unwrap();
    // Written out, so its block count no longer changes under the test (delayed allocation).
    fs::File::open(f.lower(0).join("big"))
        .unwrap()
        .sync_all()
        .unwrap();
    let lower = fs::metadata(f.lower(0).join("big")).unwrap();
    let m = f.mount_with(&MC);
    fs::set_permissions(m.p("big"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.p("big"), Some(1000), Some(1000)).unwrap();
    let stub = fs::metadata(f.upper.join("big")).unwrap();
    assert_eq!(stub.len(), lower.len());
    assert!(
        stub.blocks() < 64,
        "the stub holds data: {} blocks",
        stub.blocks()
    );
    assert_eq!(
        xattr_of(&f.upper.join("big"), "trusted.overlay.metacopy"),
        Some(Vec::new())
    );
    let shown = fs::metadata(m.p("big")).unwrap();
    assert_eq!((shown.mode() & 0o7777, shown.uid()), (0o600, 1000));
    assert_eq!(shown.blocks(), lower.blocks());
    assert_eq!(shown.ino(), lower.ino());
    let reader = fs::File::open(m.p("big")).unwrap();
    let mut head = vec![0; 4096];
    reader.read_exact_at(&mut head, 1 << 20).unwrap();
    assert_eq!(head, data[1 << 20..(1 << 20) + 4096]);
    assert_eq!(fs::read(m.p("big")).unwrap(), data);
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("big"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    // The reader opened before the data came up reads the new data, as on the kernel.
    let mut tail = [0u8; 1];
    reader.read_exact_at(&mut tail, data.len() as u64).unwrap();
    assert_eq!(&tail, b"!");
    assert_eq!(
        xattr_of(&f.upper.join("big"), "trusted.overlay.metacopy"),
        None
    );
    let up = fs::read(f.upper.join("big")).unwrap();
    assert_eq!(up.len(), data.len() + 1);
    assert_eq!(up[..data.len()], data[..]);
    assert_eq!(fs::metadata(m.p("big")).unwrap().ino(), lower.ino());
}

/// A stub found again after a remount reads its data (through its redirect once moved);
/// with metacopy=off the kernel refuses to follow a stub (EPERM), and so does layerfs; a
/// stub whose data is gone is EIO, as there.
#[test]
fn stubs_after_remount_and_with_metacopy_off() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "d/a", "data a");
    put(f.lower(0), "b", "data b");
    {
        let m = f.mount_with(&MC);
        fs::set_permissions(m.p("d/a"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(m.p("b"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(m.p("d/a"), m.p("a2")).unwrap();
    }
    assert_eq!(
        xattr_of(&f.upper.join("a2"), "trusted.overlay.redirect"),
        Some(b"/d/a".to_vec())
    );
    {
        let m = f.mount_with(&MC);
        assert_eq!(read(m.p("a2")), "data a");
        assert_eq!(read(m.p("b")), "data b");
        assert_eq!(fs::metadata(m.p("b")).unwrap().mode() & 0o777, 0o600);
    }
    {
        let m = f.mount();
        assert_eq!(errno(fs::metadata(m.p("b"))), libc::EPERM);
    }
    let k = f.kernel_mount();
    assert_eq!(errno(fs::metadata(k.p("b"))), libc::EPERM);
    drop(k);
    fs::remove_file(f.lower(0).join("b")).unwrap();
    let m = f.mount_with(&MC);
    assert_eq!(errno(fs::metadata(m.p("b"))), libc::EIO);
    drop(m);
    f.clear_work();
    let k = f.kernel_mount_with("metacopy=on,redirect_dir=on");
    assert_eq!(errno(fs::metadata(k.p("b"))), libc::EIO);
}

/// metacopy=on needs redirect_dir=on: given with another value, the mount is refused with
/// a one-line error and nothing is made.
#[test]
fn metacopy_conflicts_with_other_redirect_modes() {
    require_fuse!();
    let f = Fixture::new(1);
    let out = f
        .mount_command()
        .args(["-o", "metacopy=on,redirect_dir=follow"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("metacopy=on"), "{said}");
    assert!(!is_mounted(&f.mnt));
    assert_eq!(fs::read_dir(&f.upper).unwrap().count(), 0);
}
