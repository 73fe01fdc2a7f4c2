//! File handles (name_to_handle_at / open_by_handle_at, xfstests generic/426, 467, 477,
//! 756, 777): without nfs_export, kernel overlayfs refuses to make them (EOPNOTSUPP, and
//! xfstests reports those tests "not run"); layerfs refuses them the same way, rather
//! than handing out handles that go stale (ESTALE) while their file lives once the
//! kernel forgets its inode.
mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// A program that prints, for each path after the mount, what name_to_handle_at says and,
/// if it made a handle, what open_by_handle_at through the mount says.
const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    int mount_fd = open(argv[1], O_RDONLY | O_DIRECTORY);
    for (int i = 2; i < argc; i++) {
        struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
        h->handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, argv[i], h, &mount_id, 0) < 0) {
            printf("%s: name_to_handle_at %s\n", argv[i], strerrorname_np(errno));
            continue;
        }
        int fd = open_by_handle_at(mount_fd, h, O_RDONLY);
        printf("%s: open_by_handle_at %s\n", argv[i], fd < 0 ? strerrorname_np(errno) : "ok");
    }
    return 0;
}
"#;

fn build(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("handles.c");
    let out = dir.join("handles");
    fs::write(&src, PROGRAM).unwrap();
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap();
    assert_success(&built);
    out
}

fn populate(f: &Fixture) {
    put(f.lower(0), "low", "lower\n");
    fs::create_dir(f.lower(0).join("dir")).unwrap();
    put(&f.upper, "up", "upper\n");
}

fn handles(program: &Path, m: &Path) -> Vec<String> {
    let mut c = Command::new(program);
    c.arg(m);
    for p in ["low", "up", "dir", ""] {
        c.arg(m.join(p));
    }
    let out = c.output().unwrap();
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix(m.to_str().unwrap()).unwrap_or(l).to_string())
        .collect()
}

#[test]
fn file_handles_are_refused_as_on_the_kernel_without_nfs_export() {
    require_fuse!();
    let tools = tempfile::tempdir().unwrap();
    let program = build(tools.path());
    for opts in [&[][..], &["-o", "index=on"][..]] {
        let kernel_opts = if opts.is_empty() { "" } else { "index=on" };
        let run = |m: &Path| handles(&program, m);
        let problems = compare_with_kernel_using(1, populate, kernel_opts, opts, run);
        assert!(problems.is_empty(), "{opts:?}:\n{}", problems.join("\n"));
        let f = Fixture::new(1);
        populate(&f);
        let m = f.mount_with(opts);
        assert_eq!(
            handles(&program, &m.path),
            [
                "/low: name_to_handle_at EOPNOTSUPP",
                "/up: name_to_handle_at EOPNOTSUPP",
                "/dir: name_to_handle_at EOPNOTSUPP",
                "/: name_to_handle_at EOPNOTSUPP",
            ]
        );
    }
}
