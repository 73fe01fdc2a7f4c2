//! Every user in a container: the same shell steps run as root and as uid 1000 (in and out
//! of the files' group, with only its effective uid changed, and as root of another user
//! namespace) on kernel overlayfs and on layerfs over identical layers; each step's exit
//! status and message, the merged views and the uppers must match. The steps cover the
//! kernel's permission checks, sticky and setgid directories, the setuid/setgid bits that
//! writes, truncation, fallocate and chown clear, and POSIX ACLs (enforced, inherited,
//! kept in step with chmod, kept through copy-up).
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::Command;

/// Who runs the steps.
#[derive(Clone, Copy, Debug)]
enum Who {
    Root,
    /// uid/gid 1000 with supplementary groups 500 and 600.
    InGroup,
    /// uid/gid 1000 and no other group.
    OutOfGroup,
    /// Only the effective uid/gid set to 1000 (real uid 0, no capabilities).
    EffectiveOnly,
    /// uid 1000 as root of a user namespace of its own.
    UserNamespace,
}

const EVERYONE: [Who; 5] = [
    Who::Root,
    Who::InGroup,
    Who::OutOfGroup,
    Who::EffectiveOnly,
    Who::UserNamespace,
];

fn shell(who: Who) -> Command {
    let setpriv = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(args);
        c
    };
    let mut c = match who {
        Who::Root => Command::new("sh"),
        Who::InGroup => setpriv(&["--reuid=1000", "--regid=1000", "--groups=500,600", "sh"]),
        Who::OutOfGroup => {
            let mut c = as_uid_1000();
            c.arg("sh");
            c
        }
        // dash gives up an effective uid that differs from the real one unless -p.
        Who::EffectiveOnly => {
            setpriv(&["--euid=1000", "--egid=1000", "--clear-groups", "sh", "-p"])
        }
        Who::UserNamespace => {
            let mut c = as_rootless_1000(false);
            c.arg("sh");
            c
        }
    };
    c.arg("-c");
    c
}

/// Runs `steps` (shell commands, paths relative to `root`) as `who` with umask 027;
/// reports each step's exit status and output.
fn run_steps(who: Who, root: &Path, steps: &[String]) -> Vec<String> {
    let mut script = format!("cd '{}' || exit 99\numask 027\n", root.display());
    for (i, s) in steps.iter().enumerate() {
        script.push_str(&format!(
            "out=$( {{ {s} ; }} 2>&1 ); echo \"{i} $? $out\"\n"
        ));
    }
    let out = shell(who).arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{who:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn file(root: &Path, rel: &str, m: u32, uid: u32, gid: u32) {
    put(root, rel, "#!/bin/sh\necho content\n");
    owned(root, rel, m, uid, gid);
}

fn owned(root: &Path, rel: &str, m: u32, uid: u32, gid: u32) {
    chown(root.join(rel), Some(uid), Some(gid)).unwrap();
    mode(&root.join(rel), m);
}

fn dir(root: &Path, rel: &str, m: u32, uid: u32, gid: u32) {
    fs::create_dir_all(root.join(rel)).unwrap();
    owned(root, rel, m, uid, gid);
}

fn setfacl(p: &Path, args: &[&str]) {
    let out = Command::new("setfacl").args(args).arg(p).output().unwrap();
    assert_success(&out);
}

/// An image as containers see them: system files, a user's home, group and setgid
/// directories, setuid programs, a sticky /tmp and ACLs.
fn populate(f: &Fixture) {
    mode(f.dir.path(), 0o755);
    let (top, base) = (f.lower(0), f.lower(1));
    for l in [top, base] {
        mode(l, 0o755);
    }
    file(base, "etc/passwd", 0o644, 0, 0);
    file(top, "etc/hosts", 0o644, 0, 0);
    dir(base, "private", 0o700, 0, 0);
    file(base, "private/secret", 0o600, 0, 0);
    dir(base, "shared", 0o2775, 0, 500);
    file(base, "shared/doc", 0o664, 0, 500);
    dir(top, "shared", 0o2775, 0, 500);
    file(top, "shared/top", 0o644, 0, 500);
    dir(base, "grp", 0o770, 0, 500);
    file(base, "grp/data", 0o660, 0, 500);
    dir(base, "tmp", 0o1777, 0, 0);
    file(base, "tmp/roots", 0o666, 0, 0);
    dir(base, "home/user", 0o755, 1000, 1000);
    file(base, "home/user/notes", 0o644, 1000, 1000);
    dir(base, "bin", 0o755, 0, 0);
    file(base, "bin/suid-root", 0o4755, 0, 0);
    file(base, "bin/suid-mine", 0o4777, 1000, 1000);
    file(base, "bin/both-group", 0o6777, 1000, 500);
    file(base, "bin/both-other", 0o6777, 0, 600);
    file(base, "bin/sgid-nox", 0o2666, 1000, 500);
    dir(base, "acl", 0o777, 0, 0);
    setfacl(
        &base.join("acl"),
        &["-d", "-m", "u:1000:rwx,g:600:r-x,m::rwx"],
    );
    file(base, "acl/readable", 0o600, 0, 0);
    setfacl(&base.join("acl/readable"), &["-m", "u:1000:r--"]);
    file(base, "acl/denied", 0o666, 0, 0);
    setfacl(&base.join("acl/denied"), &["-m", "u:1000:---"]);
    file(base, "acl/group", 0o640, 0, 0);
    setfacl(&base.join("acl/group"), &["-m", "g:500:rw-"]);
    // setgid directories anyone may write to, one with a default ACL.
    dir(base, "sgid-open", 0o2777, 0, 600);
    dir(base, "sgid-acl", 0o2777, 0, 600);
    setfacl(
        &base.join("sgid-acl"),
        &["-d", "-m", "u::rwx,g::rwx,o::rwx,u:1000:rwx"],
    );
}

/// A shell step creating `path` with open(O_CREAT) and `mode` (octal), as programs do;
/// the shell's own redirections cannot ask for setgid.
fn create_mode(path: &str, mode: &str) -> String {
    format!(
        "perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_CREAT|O_WRONLY|O_EXCL, {mode}) or die \"$!\\n\"' {path}"
    )
}

/// The steps every user runs.
fn steps() -> Vec<String> {
    let st = |p: &str| format!("stat -c '%n %a %u:%g' {p}");
    let facl = |p: &str| format!("getfacl -n -c {p}");
    let mut v: Vec<String> = [
        "cat etc/passwd",
        "echo x >> etc/passwd",
        "cat private/secret",
        "ls private",
        "ls -a shared",
        "echo new > home/user/new",
        "mkdir home/user/dir",
        "echo t > tmp/mine",
        "rm -f tmp/roots",
        "echo y > shared/new",
        "mkdir shared/sub",
        "mkdir shared/sub/deeper",
        "echo s > shared/sub/f",
        "cat grp/data",
        "echo z >> grp/data",
        "echo w >> bin/suid-mine",
        "truncate -s 2 bin/both-group",
        "fallocate -l 40 bin/both-other",
        "echo n >> bin/sgid-nox",
        "chmod 2755 home/user/notes",
        "chgrp 500 home/user/notes",
        "chmod 2755 home/user/new",
        "chown 1000:500 bin/suid-root",
        "chgrp 600 bin/sgid-nox",
        "chmod 6755 home/user/dir",
        "cat acl/readable",
        "echo a >> acl/readable",
        "cat acl/denied",
        "echo g >> acl/group",
        "echo n > acl/new",
        "mkdir acl/newdir",
        "echo m > acl/newdir/inner",
        "setfacl -m u:1000:rw home/user/notes",
        "setfacl -m g:500:rw grp/data",
        "chmod 600 home/user/notes",
        "setfacl -m u:1000:rwx,m::r-x acl/readable",
        "setfacl -b acl/denied",
        "setfacl -m g:600:rwx shared/new",
        "echo still >> home/user/notes",
        "rm acl/group",
        "mv shared/doc shared/doc2",
        "ln -s ../etc/hosts home/user/link",
        "ln etc/hosts home/user/hard",
        "mkfifo home/user/fifo",
        // A file created setgid keeps the bit only for a member of the group it gets.
        &create_mode("sgid-open/f", "02775"),
        &create_mode("sgid-acl/f", "02775"),
        &create_mode("acl/sg", "02775"),
        "mkdir -m 2755 sgid-open/d",
        // A default ACL set on an upper directory, then inherited there.
        "mkdir home/user/acldir",
        "setfacl -d -m u:1000:rwx,g:500:r-x home/user/acldir",
        "echo z > home/user/acldir/f",
        "mkdir home/user/acldir/sub",
        "echo y > home/user/acldir/sub/g",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in [
        "etc/passwd",
        "home/user/new",
        "home/user/dir",
        "home/user/notes",
        "tmp/mine",
        "shared/new",
        "shared/sub",
        "shared/sub/deeper",
        "shared/sub/f",
        "bin/suid-root",
        "bin/suid-mine",
        "bin/both-group",
        "bin/both-other",
        "bin/sgid-nox",
        "acl/new",
        "acl/newdir",
        "acl/newdir/inner",
        "sgid-open/f",
        "sgid-acl/f",
        "acl/sg",
        "sgid-open/d",
        "home/user/acldir/f",
        "home/user/acldir/sub",
        "home/user/acldir/sub/g",
    ] {
        v.push(st(p));
    }
    for p in [
        "acl",
        "acl/readable",
        "acl/new",
        "acl/newdir",
        "acl/newdir/inner",
        "home/user/notes",
        "shared/new",
        "grp/data",
        "sgid-acl/f",
        "home/user/acldir",
        "home/user/acldir/f",
        "home/user/acldir/sub",
        "home/user/acldir/sub/g",
    ] {
        v.push(facl(p));
    }
    v
}

#[test]
fn every_user_is_served_as_on_kernel_overlayfs() {
    require_fuse!();
    let steps = steps();
    let mut problems = Vec::new();
    for who in EVERYONE {
        for p in compare_with_kernel(2, populate, &[], |root| run_steps(who, root, &steps)) {
            problems.push(format!("{who:?}: {p}"));
        }
    }
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

/// Paths the random steps work on.
const PATHS: &[&str] = &[
    "home/user/notes",
    "home/user/n1",
    "shared/doc",
    "shared/top",
    "shared/n2",
    "grp/data",
    "tmp/roots",
    "tmp/n3",
    "bin/suid-mine",
    "bin/both-group",
    "bin/sgid-nox",
    "acl/readable",
    "acl/group",
    "acl/n4",
    "etc/hosts",
];

fn random_steps(seed: u64, n: usize) -> Vec<String> {
    let mut r = Rng::new(seed);
    let mut path = || PATHS[(r.next() % PATHS.len() as u64) as usize];
    let mut out = Vec::new();
    for i in 0..n {
        let p = path();
        let s = match i % 11 {
            0 => format!("cat {p}"),
            1 => format!("echo r >> {p}"),
            2 => format!("echo r > {p}"),
            3 => format!("chmod 2770 {p}"),
            4 => format!("truncate -s 1 {p}"),
            5 => format!("rm -f {p}"),
            6 => format!("mkdir {p}"),
            7 => format!("chgrp 500 {p}"),
            8 => format!("setfacl -m u:1000:rw {p}"),
            9 => format!("mv {p} {}", path()),
            _ => format!("chmod 4777 {p}"),
        };
        out.push(s);
        out.push(format!("stat -c '%n %a %u:%g' {p}"));
    }
    out
}

/// Seeded random steps run by uid 1000 with supplementary groups, and by uid 1000 alone.
#[test]
fn random_steps_of_uid_1000_match_kernel_overlayfs() {
    require_fuse!();
    for seed in 1..=3u64 {
        for who in [Who::InGroup, Who::OutOfGroup] {
            let steps = random_steps(seed, 30);
            let problems =
                compare_with_kernel(2, populate, &[], |root| run_steps(who, root, &steps));
            assert!(
                problems.is_empty(),
                "seed {seed} as {who:?}:\n{}\nsteps: {steps:#?}",
                problems.join("\n")
            );
        }
    }
}
