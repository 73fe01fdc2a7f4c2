//! Data-only lower layers (`lowerdir=meta::data`, `datadir+=`), laid out as composefs does:
//! a metadata layer of metacopy stubs whose absolute redirects point into a
//! content-addressed object store that is never merged into the tree.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A stub in `meta` at `rel` for the object `obj` of the data layer `data`.
fn stub(meta: &Path, rel: &str, data: &Path, obj: &str) {
    let p = meta.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let size = fs::metadata(data.join(obj)).unwrap().len();
    fs::File::create(&p).unwrap().set_len(size).unwrap();
    xattr::set(&p, "trusted.overlay.metacopy", b"").unwrap();
    xattr::set(&p, "trusted.overlay.redirect", format!("/{obj}").as_bytes()).unwrap();
}

fn populate(f: &Fixture) {
    let (meta, data) = (f.lower(0), f.lower(1));
    put(data, "objects/ab/cdef01", "127.0.0.1 localhost\n");
    put(data, "objects/12/345678", &"#!/bin/sh\n".repeat(4000));
    put(data, "objects/ff/ffffff", "never referenced\n");
    stub(meta, "etc/hosts", data, "objects/ab/cdef01");
    stub(meta, "usr/bin/tool", data, "objects/12/345678");
    stub(meta, "usr/bin/tool-copy", data, "objects/12/345678");
    put(meta, "etc/plain", "a plain file of the metadata layer\n");
}

/// A named step of a run and what it does (its errno).
type Step<'a> = (&'a str, Box<dyn Fn() -> i32 + 'a>);

fn data_fixture() -> Fixture {
    Fixture::with_data_only(2, 1)
}

/// Read-only: the tree is the metadata layer's (the object store never shows), stubs read
/// their objects and show the stub's inode number with the object's blocks, as on the
/// kernel; `datadir+=` names the same layout.
#[test]
fn read_only_union_reads_objects_through_stubs() {
    require_fuse!();
    let f = data_fixture();
    populate(&f);
    let m = f.mount_read_only();
    assert_eq!(names(&m.path), ["etc", "usr"]);
    assert_eq!(read(m.p("etc/hosts")), "127.0.0.1 localhost\n");
    assert_eq!(read(m.p("usr/bin/tool")), "#!/bin/sh\n".repeat(4000));
    assert_eq!(
        read(m.p("etc/plain")),
        "a plain file of the metadata layer\n"
    );
    let st = fs::metadata(m.p("usr/bin/tool")).unwrap();
    let object = fs::metadata(f.lower(1).join("objects/12/345678")).unwrap();
    assert_eq!(st.len(), object.len());
    assert_eq!(st.blocks(), object.blocks());
    assert_eq!(
        st.ino(),
        fs::metadata(f.lower(0).join("usr/bin/tool")).unwrap().ino()
    );
    assert_eq!(errno(fs::metadata(m.p("objects"))), libc::ENOENT);
    drop(m);
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"));
    c.arg("-o")
        .arg(format!(
            "ro,lowerdir+={},datadir+={}",
            f.lower(0).display(),
            f.lower(1).display()
        ))
        .arg(&f.mnt);
    let m = f.run_mount(c);
    assert_eq!(read(m.p("etc/hosts")), "127.0.0.1 localhost\n");
}

/// With an upper, against kernel overlayfs over identical layers: reads, a chmod (a full
/// copy-up whose data comes from the object store; a stub under metacopy=on), writes, a
/// move and a removal give the same errnos, trees and upper (stubs, redirects, origins),
/// and each upper mounted by the other shows the same tree.
#[test]
fn with_an_upper_matches_kernel_overlayfs() {
    require_fuse!();
    let run = |root: &Path| -> Vec<(String, i32)> {
        let p = |s: &str| root.join(s);
        let steps: Vec<Step<'_>> = vec![
            ("read", Box::new(|| errno(fs::read(p("etc/hosts"))))),
            (
                "chmod",
                Box::new(|| {
                    errno(fs::set_permissions(
                        p("etc/hosts"),
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    ))
                }),
            ),
            (
                "append",
                Box::new(|| {
                    errno(
                        fs::OpenOptions::new()
                            .append(true)
                            .open(p("usr/bin/tool"))
                            .and_then(|mut h| std::io::Write::write_all(&mut h, b"exit 0\n")),
                    )
                }),
            ),
            (
                "move",
                Box::new(|| errno(fs::rename(p("usr/bin/tool-copy"), p("tool3")))),
            ),
            (
                "chown",
                Box::new(|| errno(std::os::unix::fs::chown(p("tool3"), Some(7), None))),
            ),
            ("read moved", Box::new(|| errno(fs::read(p("tool3"))))),
            (
                "unlink",
                Box::new(|| errno(fs::remove_file(p("etc/plain")))),
            ),
            ("objects", Box::new(|| errno(fs::metadata(p("objects"))))),
        ];
        steps.iter().map(|(n, f)| (n.to_string(), f())).collect()
    };
    for (kernel, ours) in [
        ("", &[][..]),
        ("metacopy=on,redirect_dir=on", &["-o", "metacopy=on"][..]),
    ] {
        let problems = compare_with_kernel_on(data_fixture, populate, kernel, ours, run);
        assert!(
            problems.is_empty(),
            "{kernel:?}: differences:\n{}",
            problems.join("\n")
        );
    }
}

/// A stub whose object no data-only layer holds still shows (the kernel looks data-only
/// layers up lazily) and fails to open with ENOENT, beside kernel overlayfs.
#[test]
fn missing_object_shows_but_does_not_open() {
    require_fuse!();
    let f = data_fixture();
    populate(&f);
    fs::remove_file(f.lower(1).join("objects/ab/cdef01")).unwrap();
    let outcome = |root: &Path| {
        (
            errno(fs::metadata(root.join("etc/hosts"))),
            errno(fs::read(root.join("etc/hosts"))),
            read(root.join("usr/bin/tool")).len(),
        )
    };
    let ours = outcome(&f.mount_read_only().path);
    let kernel = outcome(&f.kernel_mount_read_only().path);
    assert_eq!(ours, (0, libc::ENOENT, 40000));
    assert_eq!(ours, kernel);
}
