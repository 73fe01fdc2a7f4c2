//! Drop-in for fuse-overlayfs: an upper written by fuse-overlayfs (the Debian package,
//! 1.x) shows the same tree under layerfs, and one written by layerfs the same tree under
//! fuse-overlayfs; as root, and as an unprivileged user (uid 1000 as root of its own user
//! namespace, as rootless engines run it), where fuse-overlayfs writes its own
//! `user.fuseoverlayfs.*` markers. Also: those markers never show through layerfs.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Layerfs,
    FuseOverlayfs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Root,
    /// uid 1000 as root of a user namespace (and mount namespace) of its own.
    Rootless,
}

fn require_fuse_overlayfs() -> bool {
    let found = Command::new("fuse-overlayfs")
        .arg("--version")
        .output()
        .is_ok();
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("fuse-overlayfs is not installed but CI=true");
    }
    found
}

/// The layers: lower files and a directory, all owned by uid/gid 1000 (root inside the
/// rootless user namespace); the upper and both workdirs empty.
fn populate(f: &Fixture) {
    let l = f.lower(0);
    for (name, content) in [("a", "a\n"), ("b", "b\n"), ("c", "c\n"), ("f", "f\n")] {
        put(l, name, content);
    }
    put(l, "d/x", "x\n");
    put(l, "d/y", "y\n");
    xattr::set(l.join("c"), "user.origin", b"lower").unwrap();
    fs::create_dir(f.dir.path().join("work2")).unwrap();
    fs::create_dir(f.dir.path().join("out")).unwrap();
    let ok = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(f.dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    chown(f.dir.path(), Some(0), Some(0)).unwrap();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The shell command mounting `tool` over the fixture's layers (fuse-overlayfs's command
/// line for both).
fn mount_command(tool: Tool, f: &Fixture) -> String {
    let (bin, work) = match tool {
        Tool::Layerfs => (BIN.to_string(), f.work.clone()),
        Tool::FuseOverlayfs => ("fuse-overlayfs".to_string(), f.dir.path().join("work2")),
    };
    format!(
        "{bin} -o lowerdir={},upperdir={},workdir={} {}",
        f.lower(0).display(),
        f.upper.display(),
        work.display(),
        f.mnt.display()
    )
}

/// Changes that leave every kind of upper metadata: copy-ups, whiteouts, an opaque
/// directory, a rename, mode and xattr changes, new objects.
const CHANGES: &str = "echo new > new && echo more >> a && rm b && rm -r d && mkdir d \
    && echo n > d/n && mkdir e && echo e > e/f && chmod 600 c && ln -s a link \
    && setfattr -n user.tag -v v c && mv f g";

/// A listing of the mount: each path's type, mode, owner, size, content or target, and
/// xattrs (all namespaces the caller can read).
const LISTING: &str = "find . -mindepth 1 | sort | while read -r p; do \
    stat -c '%n %F %a %u:%g %s' \"$p\"; \
    if [ -L \"$p\" ]; then readlink \"$p\"; elif [ -f \"$p\" ]; then cat \"$p\"; fi; \
    getfattr -h -d -m - --absolute-names \"$p\" 2>/dev/null | grep -v '^#' | grep -v '^$' \
      | grep -v '^security\\.' || true; \
    done";

fn run_as(who: Who, script: &str) {
    let mut c = match who {
        Who::Root => Command::new("sh"),
        Who::Rootless => {
            let mut c = as_rootless_1000(true);
            c.arg("sh");
            c
        }
    };
    let out = c.arg("-c").arg(script).output().unwrap();
    assert_success(&out);
}

/// Writes CHANGES with `writer`, then lists the result through `writer` and `reader`.
fn cross(writer: Tool, reader: Tool, who: Who) -> (String, String) {
    let f = Fixture::new(1);
    populate(&f);
    let _dev = (who == Who::Rootless).then(OpenDevFuse::new);
    let mnt = f.mnt.display().to_string();
    let out = f.dir.path().join("out");
    let list = |tool: Tool, file: &str| {
        format!(
            "{} && (cd {mnt} && {LISTING}) > {}/{file}; umount {mnt}",
            mount_command(tool, &f),
            out.display()
        )
    };
    let script = format!(
        "set -e\ntrap 'umount -l {mnt} 2>/dev/null || true' EXIT\n\
         {}\n(cd {mnt} && {CHANGES})\numount {mnt}\n{}\n{}\n",
        mount_command(writer, &f),
        list(writer, "writer"),
        list(reader, "reader"),
    );
    run_as(who, &script);
    if who == Who::Root {
        unmount(&f.mnt);
    }
    (read(out.join("writer")), read(out.join("reader")))
}

fn check(writer: Tool, reader: Tool, who: Who) {
    let (w, r) = cross(writer, reader, who);
    assert!(
        w.contains("./d/n") && w.contains("./g") && !w.contains("./b "),
        "{w}"
    );
    assert_eq!(
        w, r,
        "{writer:?} wrote (left) as {who:?}, {reader:?} reads (right)"
    );
}

#[test]
fn layerfs_reads_what_fuse_overlayfs_wrote_as_root() {
    require_fuse!();
    if require_fuse_overlayfs() {
        check(Tool::FuseOverlayfs, Tool::Layerfs, Who::Root);
    }
}

#[test]
fn fuse_overlayfs_reads_what_layerfs_wrote_as_root() {
    require_fuse!();
    if require_fuse_overlayfs() {
        check(Tool::Layerfs, Tool::FuseOverlayfs, Who::Root);
    }
}

#[test]
fn layerfs_reads_what_rootless_fuse_overlayfs_wrote() {
    require_fuse!();
    if require_fuse_overlayfs() {
        check(Tool::FuseOverlayfs, Tool::Layerfs, Who::Rootless);
    }
}

#[test]
fn rootless_fuse_overlayfs_reads_what_rootless_layerfs_wrote() {
    require_fuse!();
    if require_fuse_overlayfs() {
        check(Tool::Layerfs, Tool::FuseOverlayfs, Who::Rootless);
    }
}

#[test]
fn fuse_overlayfs_markers_never_show() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "file", "x");
    put(f.lower(0), "opaque/hidden-below", "h");
    put(&f.upper, "opaque/shown", "s");
    for (name, value) in [
        ("user.fuseoverlayfs.origin", &b"o"[..]),
        ("user.fuseoverlayfs.override_stat", b"0:0:0644"),
        ("user.plain", b"p"),
    ] {
        xattr::set(f.lower(0).join("file"), name, value).unwrap();
    }
    xattr::set(f.upper.join("opaque"), "user.fuseoverlayfs.opaque", b"y").unwrap();
    let m = f.mount();
    let listed: Vec<String> = xattr::list(m.p("file"))
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, vec!["user.plain".to_string()]);
    assert_eq!(
        errno(xattr::get(m.p("file"), "user.fuseoverlayfs.origin")),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(xattr::set(m.p("file"), "user.fuseoverlayfs.opaque", b"y")),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(xattr::set(m.p("file"), "security.fuseoverlayfs.x", b"y")),
        libc::EOPNOTSUPP
    );
    // user.fuseoverlayfs.opaque=y in a layer makes the directory opaque.
    assert_eq!(names(&m.p("opaque")), vec!["shown"]);
}
