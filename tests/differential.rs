//! Differential tests against kernel overlayfs: the same operations on identical layers
//! must give the same errno, the same merged view and the same upper directory; and the
//! upper that layerfs wrote must mount with kernel overlayfs and show the same tree.
mod common;
use common::*;
use layerfs::sys;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One scripted operation, paths relative to the mount root.
#[derive(Debug, Clone)]
enum Op {
    Write(&'static str, &'static str),
    Append(&'static str, &'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Unlink(&'static str),
    Rename(&'static str, &'static str),
    Rename2(&'static str, &'static str, u32),
    Symlink(&'static str, &'static str),
    Link(&'static str, &'static str),
    Chmod(&'static str, u32),
    Chown(&'static str, u32, u32),
    Truncate(&'static str, u64),
    SetXattr(&'static str, &'static str, &'static str),
    RemoveXattr(&'static str, &'static str),
    Mkfifo(&'static str),
    Read(&'static str),
    Stat(&'static str),
    CreateNew(&'static str),
    OpenDir(&'static str),
    /// The link count (or the errno, negated).
    Links(&'static str),
}

fn apply(root: &Path, op: &Op) -> i32 {
    let p = |s: &str| root.join(s);
    match op {
        Op::Write(f, c) => errno(fs::write(p(f), c)),
        Op::Append(f, c) => errno(
            fs::OpenOptions::new()
                .append(true)
                .open(p(f))
                .and_then(|mut h| std::io::Write::write_all(&mut h, c.as_bytes())),
        ),
        Op::Mkdir(d) => errno(fs::create_dir(p(d))),
        Op::Rmdir(d) => errno(fs::remove_dir(p(d))),
        Op::Unlink(f) => errno(fs::remove_file(p(f))),
        Op::Rename(a, b) => errno(fs::rename(p(a), p(b))),
        Op::Rename2(a, b, flags) => {
            let r = fs::File::open(root).unwrap();
            errno(sys::renameat2(
                r.as_fd(),
                OsStr::new(a),
                r.as_fd(),
                OsStr::new(b),
                *flags,
            ))
        }
        Op::Symlink(t, l) => errno(std::os::unix::fs::symlink(t, p(l))),
        Op::Link(a, b) => errno(fs::hard_link(p(a), p(b))),
        Op::Chmod(f, m) => errno(fs::set_permissions(p(f), fs::Permissions::from_mode(*m))),
        Op::Chown(f, u, g) => errno(std::os::unix::fs::lchown(p(f), Some(*u), Some(*g))),
        Op::Truncate(f, n) => errno(
            fs::OpenOptions::new()
                .write(true)
                .open(p(f))
                .and_then(|h| h.set_len(*n)),
        ),
        Op::SetXattr(f, k, v) => errno(xattr::set(p(f), k, v.as_bytes())),
        Op::RemoveXattr(f, k) => errno(xattr::remove(p(f), k)),
        Op::Mkfifo(f) => {
            let ok = std::process::Command::new("mkfifo")
                .arg(p(f))
                .output()
                .unwrap();
            if ok.status.success() { 0 } else { libc::EEXIST }
        }
        Op::Read(f) => errno(fs::read(p(f))),
        Op::Stat(f) => errno(fs::symlink_metadata(p(f))),
        Op::CreateNew(f) => errno(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p(f)),
        ),
        Op::OpenDir(d) => errno(fs::read_dir(p(d))),
        Op::Links(f) => match fs::symlink_metadata(p(f)) {
            Ok(m) => std::os::unix::fs::MetadataExt::nlink(&m) as i32,
            Err(e) => -e.raw_os_error().unwrap_or(0),
        },
    }
}

/// The lower layers every scenario starts from (overlay-format whiteouts only: kernel
/// overlayfs does not read the AUFS format).
fn populate(f: &Fixture) {
    let (l0, l1) = (f.lower(0), f.lower(1));
    put(l1, "etc/passwd", "root:x:0:0");
    put(l1, "etc/hosts", "127.0.0.1 localhost");
    put(l1, "etc/conf.d/a", "a");
    put(l1, "etc/conf.d/b", "b");
    put(l0, "etc/conf.d/c", "c");
    put(l0, "etc/hosts", "127.0.0.1 layer0");
    mkwhiteout(l0, "etc/conf.d/b");
    put(l1, "opaque/hidden", "h");
    put(l0, "opaque/shown", "s");
    xattr::set(l0.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    put(l1, "bin/tool", "#!/bin/sh");
    fs::set_permissions(l1.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("tool", l1.join("bin/tool-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-layerfs-target", l0.join("abs-link")).unwrap();
    put(l1, "hard/one", "linked");
    fs::hard_link(l1.join("hard/one"), l1.join("hard/two")).unwrap();
    put(l1, "empty-in-lower/.keep", "");
    fs::remove_file(l1.join("empty-in-lower/.keep")).unwrap();
    put(l0, "owned", "o");
    std::os::unix::fs::chown(l0.join("owned"), Some(1000), Some(1000)).unwrap();
    xattr::set(l0.join("owned"), "user.tag", b"t").unwrap();
    put(l1, "deep/a/b/c/d", "deep");
}

fn script() -> Vec<Op> {
    use Op::*;
    vec![
        Read("etc/hosts"),
        Append("etc/hosts", "\n10.0.0.1 extra"),
        Write("etc/new", "new file"),
        Unlink("etc/passwd"),
        Unlink("etc/passwd"),
        Stat("etc/passwd"),
        Rmdir("etc/conf.d"),
        Unlink("etc/conf.d/a"),
        Unlink("etc/conf.d/c"),
        Rmdir("etc/conf.d"),
        Mkdir("etc/conf.d"),
        Write("etc/conf.d/fresh", "f"),
        Mkdir("etc"),
        Rmdir("etc/new"),
        Unlink("bin"),
        Rename("bin/tool", "bin/tool2"),
        Rename("etc", "etc2"),
        Rename("opaque/shown", "shown-moved"),
        Rename2("etc/new", "shown-moved", libc::RENAME_EXCHANGE),
        Rename2("etc/new", "owned", libc::RENAME_NOREPLACE),
        Rename2("etc/hosts", "nothing", libc::RENAME_EXCHANGE),
        Symlink("../etc/hosts", "bin/hosts-link"),
        Symlink("x", "bin/hosts-link"),
        Link("etc/hosts", "etc/hosts-hard"),
        Link("bin/tool", "bin/tool-hard"),
        Link("etc", "etc-link"),
        Chmod("owned", 0o600),
        Chown("bin/tool-link", 12, 34),
        Chown("owned", 2000, 2000),
        Truncate("deep/a/b/c/d", 2),
        SetXattr("owned", "user.second", "2"),
        RemoveXattr("owned", "user.tag"),
        RemoveXattr("owned", "user.absent"),
        Mkfifo("fifo"),
        CreateNew("owned"),
        CreateNew("brand-new"),
        Mkdir("newdir"),
        Mkdir("newdir/sub"),
        Write("newdir/sub/f", "x"),
        Rename("newdir", "newdir-moved"),
        Rmdir("newdir-moved"),
        OpenDir("owned"),
        Rmdir("empty-in-lower"),
        Mkdir("empty-in-lower"),
        Read("abs-link"),
        Stat("abs-link"),
        Unlink("deep/a/b/c/d"),
        Rmdir("deep/a/b/c"),
        Rmdir("deep/a"),
    ]
}

/// Runs `ops` on kernel overlayfs and on layerfs over identical layers and lists every
/// difference: errnos, merged views, upper directories, and each upper mounted by the other.
fn compare(ops: &[Op]) -> Vec<String> {
    compare_in(ops, Features::Plain)
}

/// The overlay features both mounts run with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Features {
    /// The defaults: no redirects written, full copy-ups.
    Plain,
    /// `redirect_dir=on`: directory renames write redirects.
    Redirects,
    /// `metacopy=on` (with redirect_dir=on): metadata changes copy up stubs.
    Metacopy,
    /// `index=on`: lower hard links stay one inode across copy-up and remount.
    Index,
    /// `redirect_dir=on,index=on,metacopy=on`: everything at once.
    All,
}

impl Features {
    /// Whether the lower hard links are part of the game: only where the kernel keeps
    /// them linked (index=on), as layerfs always does.
    fn links(self) -> bool {
        matches!(self, Features::Index | Features::All)
    }
}

/// [`populate`], and lower hard links to play with: three names of one file in two
/// directories, and a pair in the top lower.
fn populate_links(f: &Fixture) {
    populate(f);
    let (l0, l1) = (f.lower(0), f.lower(1));
    put(l1, "links/x", "xyz");
    fs::hard_link(l1.join("links/x"), l1.join("links/y")).unwrap();
    put(l1, "other/.keep", "");
    fs::hard_link(l1.join("links/x"), l1.join("other/z")).unwrap();
    put(l0, "hard2/p", "pq");
    fs::hard_link(l0.join("hard2/p"), l0.join("hard2/q")).unwrap();
}

fn compare_in(ops: &[Op], features: Features) -> Vec<String> {
    let (kernel, ours): (&str, &[&str]) = match features {
        Features::Plain => ("", &[]),
        Features::Redirects => ("redirect_dir=on", &["-o", "redirect_dir=on"]),
        Features::Metacopy => (
            "redirect_dir=on,metacopy=on",
            &["-o", "redirect_dir=on,metacopy=on"],
        ),
        Features::Index => ("index=on", &["-o", "index=on"]),
        Features::All => (
            "redirect_dir=on,index=on,metacopy=on",
            &["-o", "redirect_dir=on,index=on,metacopy=on"],
        ),
    };
    let fill = if features.links() {
        populate_links
    } else {
        populate
    };
    compare_with_kernel_using(2, fill, kernel, ours, |root| {
        ops.iter()
            .map(|op| (format!("{op:?}"), apply(root, op)))
            .collect()
    })
}

#[test]
fn script_matches_kernel_overlayfs() {
    require_fuse!();
    let problems = compare(&script());
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

/// The script and then directory moves, with redirect_dir=on on both sides: the same
/// errnos, trees, and redirect/opaque xattrs in the upper, and each upper mounted by the
/// other shows the same tree.
/// Metadata changes of lower files under metacopy=on copy up stubs; then their data is
/// read, written, truncated, moved and linked, with the kernel's stubs, redirects and
/// origins in the upper, and each upper mounted by the other.
#[test]
fn script_matches_kernel_overlayfs_with_metacopy() {
    require_fuse!();
    use Op::*;
    let mut ops = vec![
        Chmod("etc/hosts", 0o600),
        Chown("etc/passwd", 1, 1),
        SetXattr("bin/tool", "user.m", "v"),
        Chmod("deep/a/b/c/d", 0o640),
        Chmod("owned", 0o600),
        Read("etc/hosts"),
        Read("deep/a/b/c/d"),
        Rename("etc/hosts", "etc/hosts2"),
        Rename("etc/passwd", "passwd"),
        Link("bin/tool", "tool2"),
        Append("etc/hosts2", "+"),
        Truncate("passwd", 2),
        Write("owned", "new"),
        Read("tool2"),
        Rename("deep", "deep2"),
        Read("deep2/a/b/c/d"),
        Append("deep2/a/b/c/d", "+"),
        Unlink("tool2"),
        Chmod("etc/group-missing", 0o600),
    ];
    ops.extend(script());
    let problems = compare_in(&ops, Features::Metacopy);
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

/// With the topmost lower on another filesystem than the upper, redirects, metacopy
/// stubs, origins and index entries (naming that filesystem's UUID) come out as the
/// kernel's, and each upper mounts on the other side.
#[test]
fn a_lower_on_another_filesystem_matches_kernel_overlayfs() {
    require_fuse!();
    use Op::*;
    let mut ops = vec![
        Chmod("etc/hosts", 0o600),
        Rename("etc/hosts", "hosts2"),
        Append("hosts2", "+"),
        Rename("etc", "etc2"),
        Read("etc2/conf.d/c"),
        Chmod("etc2/conf.d/c", 0o600),
        Rename("etc2/conf.d", "conf"),
        // hard2/ is a pair of links on the tmpfs: its index entry is named after a tmpfs
        // file handle.
        Links("hard2/q"),
        Append("hard2/p", "+"),
        Links("hard2/q"),
        Read("hard2/q"),
        Unlink("hard2/p"),
        Links("hard2/q"),
    ];
    ops.extend(script());
    let fixture = || Fixture::with_lower_on_tmpfs(2, 0);
    let run = |root: &Path| {
        ops.iter()
            .map(|op| (format!("{op:?}"), apply(root, op)))
            .collect::<Vec<_>>()
    };
    let all = "redirect_dir=on,index=on,metacopy=on";
    let problems = compare_with_kernel_on(fixture, populate_links, all, &["-o", all], run);
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

#[test]
fn script_matches_kernel_overlayfs_with_redirects() {
    require_fuse!();
    use Op::*;
    let mut ops = script();
    ops.extend([
        Rename("deep", "deep2"),
        Rename("deep2/a/b", "b-moved"),
        Rename("etc", "bin/etc"),
        Read("bin/etc/hosts"),
        Mkdir("bin/etc/made"),
        Rename("b-moved", "bin/etc/made/b"),
        Rename("bin", "deep2/a/bin"),
        Rename2("opaque", "owned", libc::RENAME_EXCHANGE),
        Rename2("deep2", "empty-in-lower", libc::RENAME_EXCHANGE),
        Rename("empty-in-lower/a/bin/etc/made/b/c", "c"),
        Read("c/d"),
        Unlink("c/d"),
        Rmdir("c"),
        Rename("hard", "deep2"),
        Rename("empty-in-lower/a/bin", "hard"),
        Rename("empty-in-lower", "hard/etc"),
        Rename("hard/etc/a", "a"),
        Rmdir("hard/etc"),
        Rename("a", "hard/etc"),
    ]);
    let problems = compare_in(&ops, Features::Redirects);
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

/// What index=on is about: names of lower hard links written, linked, moved, removed
/// and replaced, each name's link count and data checked, then the whole script.
fn index_script() -> Vec<Op> {
    use Op::*;
    let mut ops = vec![
        Links("hard/two"),
        Append("hard/one", "+"),
        Links("hard/two"),
        Read("hard/two"),
        Stat("links/y"),
        Link("hard/one", "hard/three"),
        Links("hard/two"),
        Unlink("hard/two"),
        Links("hard/one"),
        Read("hard/three"),
        Chmod("links/x", 0o600),
        Read("other/z"),
        Rename("links/x", "links/x2"),
        Unlink("other/z"),
        Links("links/y"),
        Rename("hard/one", "hard2/q"),
        Read("hard2/p"),
        Truncate("hard2/p", 1),
        Unlink("hard/three"),
        Unlink("hard2/q"),
        Links("hard2/p"),
        Unlink("hard2/p"),
        Rename("links/y", "links/x2"),
        Append("links/x2", "!"),
        Link("links/x2", "other/again"),
        Unlink("links/x2"),
    ];
    ops.extend(script());
    ops
}

#[test]
fn script_matches_kernel_overlayfs_with_index() {
    require_fuse!();
    let problems = compare_in(&index_script(), Features::Index);
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

#[test]
fn script_matches_kernel_overlayfs_with_every_feature() {
    require_fuse!();
    let problems = compare_in(&index_script(), Features::All);
    assert!(problems.is_empty(), "differences:\n{}", problems.join("\n"));
}

/// Paths the random sequences work on: existing lower content, and names to create. The
/// lower hard link `hard/one`+`hard/two` stays out: layerfs keeps such links across copy-up
/// (kernel `index=on` behaviour) while the reference mount runs with `index=off`.
const PATHS: &[&str] = &[
    "etc",
    "etc/hosts",
    "etc/passwd",
    "etc/conf.d",
    "etc/conf.d/a",
    "etc/conf.d/b",
    "etc/conf.d/c",
    "opaque",
    "opaque/shown",
    "opaque/hidden",
    "bin",
    "bin/tool",
    "bin/tool-link",
    "owned",
    "deep",
    "deep/a",
    "deep/a/b",
    "deep/a/b/c",
    "deep/a/b/c/d",
    "empty-in-lower",
    "n1",
    "n2",
    "etc/n3",
    "bin/n4",
    "deep/a/n5",
    "n1/x",
    "n2/y",
];

/// The names of lower hard links ([`populate_links`]), which sequences under index=on
/// work on too.
const LINK_PATHS: &[&str] = &[
    "hard", "hard/one", "hard/two", "links", "links/x", "links/y", "other/z", "hard2/p", "hard2/q",
];

/// Picks operations and the paths they work on.
struct Picker {
    r: Rng,
    paths: Vec<&'static str>,
}

impl Picker {
    fn next(&mut self) -> u64 {
        self.r.next()
    }

    fn path(&mut self) -> &'static str {
        self.paths[(self.r.next() % self.paths.len() as u64) as usize]
    }
}

fn random_ops(seed: u64, n: usize, links: bool) -> Vec<Op> {
    let mut paths = PATHS.to_vec();
    if links {
        paths.extend(LINK_PATHS);
    }
    let mut r = Picker {
        r: Rng::new(seed),
        paths,
    };
    (0..n)
        .map(|_| match r.next() % 17 {
            0 => Op::Write(r.path(), "w"),
            1 => Op::Append(r.path(), "+"),
            2 => Op::Mkdir(r.path()),
            3 => Op::Rmdir(r.path()),
            4 => Op::Unlink(r.path()),
            5 => Op::Rename(r.path(), r.path()),
            6 => Op::Rename2(r.path(), r.path(), libc::RENAME_NOREPLACE),
            7 => Op::Rename2(r.path(), r.path(), libc::RENAME_EXCHANGE),
            8 => Op::Symlink("target", r.path()),
            9 => Op::Link(r.path(), r.path()),
            10 if r.next().is_multiple_of(2) => Op::Chown(r.path(), 1, 1),
            10 => Op::Chmod(r.path(), 0o700),
            11 => Op::Truncate(r.path(), 1),
            12 => Op::SetXattr(r.path(), "user.r", "v"),
            13 => Op::RemoveXattr(r.path(), "user.tag"),
            14 => Op::Read(r.path()),
            15 => Op::Links(r.path()),
            _ => Op::CreateNew(r.path()),
        })
        .collect()
}

/// Seeded random sequences (`LAYERFS_DIFF_SEQUENCES` of them, default 12); a failure names
/// the seed, and `LAYERFS_DIFF_SEED` repeats one.
#[test]
fn random_sequences_match_kernel_overlayfs() {
    require_fuse!();
    let seeds: Vec<u64> = match std::env::var("LAYERFS_DIFF_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n = std::env::var("LAYERFS_DIFF_SEQUENCES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(12);
            (1..=n).collect()
        }
    };
    let (mut sequences, mut operations) = (0, 0);
    for &seed in &seeds {
        // Seeds take turns: the defaults, directory redirects, metacopy, the index, all.
        let features = [
            Features::Plain,
            Features::Redirects,
            Features::Metacopy,
            Features::Index,
            Features::All,
        ][seed as usize % 5];
        let ops = random_ops(seed, 40, features.links());
        let problems = compare_in(&ops, features);
        assert!(
            problems.is_empty(),
            "seed {seed}, {features:?} (rerun with LAYERFS_DIFF_SEED={seed}):\n{}\nops: {ops:#?}",
            problems.join("\n")
        );
        sequences += 1;
        operations += ops.len();
    }
    eprintln!(
        "differential: {sequences} sequences (seeds {}..={}), {operations} operations, \
         all matched kernel overlayfs",
        seeds[0],
        seeds[seeds.len() - 1]
    );
}
