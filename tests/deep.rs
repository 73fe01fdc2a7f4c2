//! A lower tree as deep as the lower filesystem allows (10,000 levels): what a container
//! does to it (`rm -rf`, `chmod -R`, `chown -R` under metacopy=on, `mv` under
//! redirect_dir=on, a write to the deepest file, `find`, a remount) keeps the daemon up
//! and gives kernel overlayfs's result over the same layers: the same output, the same
//! merged tree, the same upper, and the same tree again after a remount.
//!
//! Paths this deep are longer than PATH_MAX, so the shell reaches the bottom by `cd`
//! 2,000 levels at a time; and std's `remove_dir_all` recurses by depth, so the fixture's
//! layers are emptied with `rm -rf` before it drops.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const DEPTH: usize = 10_000;
/// Levels per `cd`: 4,000 bytes of `d/`, below PATH_MAX.
const PIECE: usize = 2_000;

/// Runs `script` in `dir` with `sh`, where `deepest TOP` changes into the deepest
/// directory of the chain that starts at `TOP`; returns its exit code and output.
fn sh(dir: &Path, script: &str) -> (i32, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "P=$(printf 'd/%.0s' $(seq {PIECE}))
             deepest() {{
               cd -P \"$1\" && cd -P \"${{P#d/}}\" || return 1
               for i in $(seq {}); do cd -P \"$P\" || return 1; done
             }}
             {script}",
            DEPTH / PIECE - 1
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Every object below `dir` (the tree is one chain, so depth and name say which), with
/// type, mode, owner and a file's size, and the overlay xattrs of the top entries and of
/// the deepest file.
fn view(dir: &Path) -> String {
    let (code, out) = sh(
        dir,
        "find . -mindepth 1 -type d -printf '%d %y %m %U:%G %f\\n' \
              -o -printf '%d %y %m %U:%G %s %f\\n' | sort
         getfattr --absolute-names -d -m 'overlay\\.(redirect|opaque|metacopy)' * 2>/dev/null
         for top in *; do
           [ -d \"$top\" ] || continue
           (deepest \"$top\" 2>/dev/null && cat f 2>/dev/null &&
            getfattr --absolute-names -d -m 'overlay\\.(redirect|opaque|metacopy)' f)
         done",
    );
    format!("exit {code}\n{out}")
}

/// Empties the fixture's layers with `rm -rf` when it drops (after its mounts).
struct EmptiedOnDrop<'a>(&'a Fixture);

impl Drop for EmptiedOnDrop<'_> {
    fn drop(&mut self) {
        let f = self.0;
        for d in f.lowers.iter().chain([&f.upper, &f.work]) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg("rm -rf -- * .[!.]*")
                .current_dir(d)
                .status();
        }
    }
}

/// What one side showed: the script's result, the merged tree after it, the upper, and
/// the merged tree after a remount.
#[derive(Debug, PartialEq)]
struct Seen {
    script: (i32, String),
    merged: String,
    upper: String,
    remounted: String,
}

fn populate(f: &Fixture) {
    let built = sh(
        f.lower(0),
        &format!(
            "for i in $(seq {}); do mkdir -p \"$P\" && cd -P \"$P\" || exit 1; done
             echo deep > f",
            DEPTH / PIECE
        ),
    );
    assert_eq!(built.0, 0, "{}", built.1);
}

/// Runs `script` in the mount over a fresh 10,000-level lower, on kernel overlayfs with
/// `kernel_opts` and on layerfs with `ours`, and asserts that both show the same.
fn same_as_kernel(kernel_opts: &str, ours: &[&str], script: &str) {
    same_as_kernel_on(false, kernel_opts, ours, script)
}

/// [`same_as_kernel`] with the layers on ext4 (the test directory's filesystem) or, if
/// `tmpfs`, on a tmpfs of their own.
fn same_as_kernel_on(tmpfs: bool, kernel_opts: &str, ours: &[&str], script: &str) {
    let side = |kernel: bool| {
        let (f, on) = if tmpfs {
            let (f, t) = Fixture::on_tmpfs(1, "256m");
            (f, Some(t))
        } else {
            (Fixture::new(1), None)
        };
        // A tmpfs goes with everything on it at once; ext4 is emptied with rm -rf.
        let _emptied = on.is_none().then(|| EmptiedOnDrop(&f));
        populate(&f);
        let mount = || {
            if kernel {
                f.clear_work();
                f.kernel_mount_with(kernel_opts)
            } else {
                f.mount_with(ours)
            }
        };
        let m = mount();
        let script = sh(&m.path, script);
        let merged = view(&m.path);
        drop(m);
        let upper = view(&f.upper);
        let m = mount();
        let remounted = view(&m.path);
        drop(m);
        Seen {
            script,
            merged,
            upper,
            remounted,
        }
    };
    let theirs = side(true);
    let ours = side(false);
    assert_eq!(ours.script, theirs.script, "the script's result");
    assert_eq!(ours.merged, theirs.merged, "the merged tree after it");
    assert_eq!(ours.upper, theirs.upper, "the upper");
    assert_eq!(ours.remounted, theirs.remounted, "the tree after a remount");
}

#[test]
fn find_lists_every_level() {
    require_fuse!();
    same_as_kernel("", &[], "find . | wc -l");
}

#[test]
fn rm_rf_removes_the_whole_tree() {
    require_fuse!();
    same_as_kernel("", &[], "rm -rf d; echo $?; ls -A");
}

#[test]
fn rm_rf_removes_the_whole_tree_on_tmpfs() {
    require_fuse!();
    same_as_kernel_on(true, "", &[], "find . | wc -l; rm -rf d; echo $?; ls -A");
}

#[test]
fn chmod_r_copies_up_every_level() {
    require_fuse!();
    same_as_kernel("", &[], "chmod -R 700 d; echo $?");
}

#[test]
fn chown_r_under_metacopy_leaves_a_stub_at_the_bottom() {
    require_fuse!();
    same_as_kernel(
        "metacopy=on,redirect_dir=on",
        &["-o", "metacopy=on,redirect_dir=on"],
        "chown -R 1000:1000 d; echo $?",
    );
}

#[test]
fn mv_of_the_top_directory_writes_a_redirect() {
    require_fuse!();
    same_as_kernel(
        "redirect_dir=on",
        &["-o", "redirect_dir=on"],
        "mv d e; echo $?; (deepest e && cat f) 2>&1; ls",
    );
}

#[test]
fn a_write_to_the_deepest_file_copies_up_every_ancestor() {
    require_fuse!();
    same_as_kernel("", &[], "deepest d && echo more >> f && cat f");
}
