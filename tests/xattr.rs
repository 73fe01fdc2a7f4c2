//! Extended attributes through the mount; overlay's own xattrs are hidden and refused.
mod common;
use common::*;
use std::fs;

#[test]
fn get_set_list_remove() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "a", "x");
    xattr::set(f.lower(0).join("a"), "user.one", b"1").unwrap();
    let m = f.mount();
    assert_eq!(xattr::get(m.p("a"), "user.one").unwrap().unwrap(), b"1");
    xattr::set(m.p("a"), "user.two", b"2").unwrap();
    let mut l: Vec<String> = xattr::list(m.p("a"))
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    l.sort();
    assert_eq!(l, ["user.one", "user.two"]);
    xattr::remove(m.p("a"), "user.one").unwrap();
    assert!(xattr::get(m.p("a"), "user.one").unwrap().is_none());
    assert_eq!(errno(xattr::remove(m.p("a"), "user.one")), libc::ENODATA);
    assert_eq!(
        xattr::get(f.lower(0).join("a"), "user.one")
            .unwrap()
            .unwrap(),
        b"1",
        "lower untouched"
    );
    let big = vec![b'v'; 3000];
    xattr::set(m.p("a"), "user.big", &big).unwrap();
    assert_eq!(xattr::get(m.p("a"), "user.big").unwrap().unwrap(), big);
}

#[test]
fn internal_xattrs_hidden_and_refused() {
    require_fuse!();
    let f = Fixture::new(2);
    put(f.lower(0), "d/a", "x");
    put(f.lower(1), "d/b", "x");
    xattr::set(f.lower(0).join("d"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(f.lower(0).join("d"), "user.overlay.thing", b"z").unwrap();
    xattr::set(f.lower(0).join("d"), "user.visible", b"v").unwrap();
    let m = f.mount();
    let l: Vec<String> = xattr::list(m.p("d"))
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(l, ["user.visible"]);
    for name in [
        "trusted.overlay.opaque",
        "user.overlay.thing",
        "trusted.layerfs.x",
    ] {
        assert_eq!(
            errno(xattr::get(m.p("d"), name)),
            libc::EOPNOTSUPP,
            "{name}"
        );
        assert_eq!(
            errno(xattr::set(m.p("d"), name, b"y")),
            libc::EOPNOTSUPP,
            "{name}"
        );
        assert_eq!(
            errno(xattr::remove(m.p("d"), name)),
            libc::EOPNOTSUPP,
            "{name}"
        );
    }
    assert!(
        names(&f.upper).is_empty(),
        "refused calls copied nothing up"
    );
}

#[test]
fn xattrs_on_directories_and_symlinks() {
    require_fuse!();
    let f = Fixture::new(1);
    fs::create_dir(f.lower(0).join("d")).unwrap();
    std::os::unix::fs::symlink("d", f.lower(0).join("l")).unwrap();
    xattr::set(f.lower(0).join("d"), "user.d", b"1").unwrap();
    let m = f.mount();
    assert_eq!(xattr::get(m.p("d"), "user.d").unwrap().unwrap(), b"1");
    xattr::set(m.p("d"), "user.e", b"2").unwrap();
    assert_eq!(
        xattr::get(f.upper.join("d"), "user.e").unwrap().unwrap(),
        b"2"
    );
    // trusted xattrs on a symlink itself (user ones are not allowed there by Linux).
    xattr::set(m.p("l"), "trusted.t", b"3").unwrap();
    assert_eq!(xattr::get(m.p("l"), "trusted.t").unwrap().unwrap(), b"3");
    assert_eq!(
        xattr::get(f.upper.join("l"), "trusted.t").unwrap().unwrap(),
        b"3"
    );
}
