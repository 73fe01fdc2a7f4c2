//! Shared fixture for the integration tests: layer directories in a `TempDir`, and
//! `Mounted` guards (layerfs or kernel overlayfs) that unmount on drop, even on panic.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_layerfs");

/// Mount options a whole pass of the suite runs with (`LAYERFS_TEST_OPTIONS`, e.g.
/// `uring=on` in the io_uring pass of `tools/test.sh`), added to every union a fixture
/// mounts.
pub fn suite_options(c: &mut Command) {
    if let Ok(o) = std::env::var("LAYERFS_TEST_OPTIONS")
        && !o.is_empty()
    {
        c.arg("-o").arg(o);
    }
}

/// Whether FUSE mounts can be made here. Under `CI=true` a missing FUSE is a failure.
pub fn fuse_available() -> bool {
    let ok = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
        && nix_is_root();
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("FUSE is not available (need root and /dev/fuse) but CI=true");
    }
    if !ok {
        eprintln!("skipping: FUSE not available");
    }
    ok
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Returns from the test early when FUSE is unavailable (fails under CI).
#[macro_export]
macro_rules! require_fuse {
    () => {
        if !common::fuse_available() {
            return;
        }
    };
}

/// A set of layer directories: `lowers[0]` is the topmost lower.
pub struct Fixture {
    /// Filesystems mounted on some of the directories (unmounted first on drop).
    pub filesystems: Vec<Tmpfs>,
    pub dir: TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
    /// How many of the last lowers are data-only layers (joined with `::`).
    pub data_only: usize,
}

impl Fixture {
    /// `n_lowers` lowers, lower `on_tmpfs` on a tmpfs of its own (another filesystem
    /// than the upper's).
    pub fn with_lower_on_tmpfs(n_lowers: usize, on_tmpfs: usize) -> Self {
        let mut f = Fixture::new(n_lowers);
        f.filesystems.push(Tmpfs::new(f.lower(on_tmpfs), "16m"));
        f
    }

    /// `n_lowers` lowers, the last `data_only` of them data-only layers.
    pub fn with_data_only(n_lowers: usize, data_only: usize) -> Self {
        Fixture {
            data_only,
            ..Fixture::new(n_lowers)
        }
    }

    pub fn new(n_lowers: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-test")
            .tempdir()
            .unwrap();
        let lowers: Vec<PathBuf> = (0..n_lowers)
            .map(|i| dir.path().join(format!("lower{i}")))
            .collect();
        for l in &lowers {
            fs::create_dir(l).unwrap();
        }
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        let mnt = dir.path().join("mnt");
        for d in [&upper, &work, &mnt] {
            fs::create_dir(d).unwrap();
        }
        Fixture {
            filesystems: Vec::new(),
            dir,
            lowers,
            upper,
            work,
            mnt,
            data_only: 0,
        }
    }

    /// A fixture whose directories all live on a fresh tmpfs of `size` (fast to fill;
    /// the tmpfs goes away when the returned guard drops, which must be before the
    /// fixture).
    pub fn on_tmpfs(n_lowers: usize, size: &str) -> (Self, Tmpfs) {
        let f = Fixture::new(n_lowers);
        let t = Tmpfs::new(f.dir.path(), size);
        for d in f.lowers.iter().chain([&f.upper, &f.work, &f.mnt]) {
            fs::create_dir(d).unwrap();
        }
        (f, t)
    }

    /// Empties the upper and the workdir (for a fresh start over the same lowers).
    pub fn clear_upper(&self) {
        for d in [&self.upper, &self.work] {
            fs::remove_dir_all(d).unwrap();
            fs::create_dir(d).unwrap();
        }
    }

    /// Empties the workdir (before another overlay mounts this upper) but for its inodes
    /// index, which belongs with the upper.
    pub fn clear_work(&self) {
        for e in fs::read_dir(&self.work).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "index" {
                fs::remove_dir_all(e.path()).unwrap();
            }
        }
    }

    /// Asserts that kernel overlayfs with `kernel_opts`, mounted over these layers (after
    /// layerfs, with the workdir emptied), shows the tree `ours`, a snapshot layerfs showed.
    pub fn assert_kernel_shows(
        &self,
        kernel_opts: &str,
        ours: &BTreeMap<String, String>,
        what: &str,
    ) {
        self.clear_work();
        let kernel = self.kernel_mount_with(kernel_opts);
        let theirs = snapshot(&kernel.path, false);
        drop(kernel);
        let d = diff("kernel over layerfs's upper", &theirs, ours);
        assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
    }

    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    pub fn lowerdir(&self) -> OsString {
        let merged = self.lowers.len() - self.data_only;
        let mut out = OsString::new();
        for (i, l) in self.lowers.iter().enumerate() {
            if i > 0 {
                out.push(if i >= merged { "::" } else { ":" });
            }
            out.push(l);
        }
        out
    }

    /// `layerfs mount LOWERS UPPER MNT --workdir WORK [extra...]`.
    pub fn mount(&self) -> Mounted<'_> {
        self.mount_with(&[])
    }

    pub fn mount_with(&self, extra: &[&str]) -> Mounted<'_> {
        let mut c = self.mount_command();
        c.args(extra);
        self.run_mount(c)
    }

    /// `layerfs mount LOWERS UPPER MNT --workdir WORK`, not yet run.
    pub fn mount_command(&self) -> Command {
        self.mount_command_on(&self.upper, &self.work)
    }

    /// The same with another upper and workdir (on a filesystem of the test's choosing).
    pub fn mount_command_on(&self, upper: &Path, work: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.arg("mount")
            .arg(self.lowerdir())
            .arg(upper)
            .arg(&self.mnt)
            .arg("--workdir")
            .arg(work);
        suite_options(&mut c);
        c
    }

    /// Runs `c` (a mount command) in the foreground with `-f`, its log (`RUST_LOG=level`)
    /// going to `log`, and waits until the mount is live.
    pub fn spawn_logged(
        &self,
        mut c: Command,
        level: &str,
        log: &Path,
    ) -> (std::process::Child, Mounted<'_>) {
        let child = c
            .arg("-f")
            .env("RUST_LOG", level)
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !is_mounted(&self.mnt) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "never mounted: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (child, Mounted::adopt(self))
    }

    /// A read-only union of the lowers.
    pub fn mount_read_only(&self) -> Mounted<'_> {
        let mut c = Command::new(BIN);
        c.arg("mount")
            .arg(self.lowerdir())
            .arg("--read-only")
            .arg(&self.mnt);
        suite_options(&mut c);
        self.run_mount(c)
    }

    /// Runs a mount command that must succeed and returns the guard.
    pub fn run_mount(&self, mut c: Command) -> Mounted<'_> {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&self.mnt),
            "not mounted after the command returned"
        );
        Mounted {
            _fixture: self,
            path: self.mnt.clone(),
        }
    }

    /// Kernel overlayfs over the same directories (the oracle).
    pub fn kernel_mount(&self) -> Mounted<'_> {
        self.kernel_mount_with("")
    }

    /// Kernel overlayfs over the lowers alone (read-only).
    pub fn kernel_mount_read_only(&self) -> Mounted<'_> {
        self.kernel_mount_opts(format!("ro,lowerdir={}", self.lowerdir().to_str().unwrap()))
    }

    /// The same with `extra` mount options (comma-separated, may be empty).
    pub fn kernel_mount_with(&self, extra: &str) -> Mounted<'_> {
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off,xino=off",
            self.lowerdir().to_str().unwrap(),
            self.upper.display(),
            self.work.display()
        );
        if !extra.is_empty() {
            opts.push(',');
            opts.push_str(extra);
        }
        self.kernel_mount_opts(opts)
    }

    fn kernel_mount_opts(&self, opts: String) -> Mounted<'_> {
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&self.mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kernel overlay mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted {
            _fixture: self,
            path: self.mnt.clone(),
        }
    }
}

/// A tmpfs mounted at a directory (created if needed); unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn new(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// `mount -o remount,HOW` (e.g. `ro`, `rw`). A remount read-only fails while a file
    /// is open for writing, and a FUSE daemon closes its files a moment after the closes
    /// through the mount (release is asynchronous): tried for up to 5 s.
    pub fn remount(&self, how: &str) {
        for _ in 0..250 {
            let ok = Command::new("mount")
                .args(["-o", &format!("remount,{how}")])
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("remount {how} of {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// A filesystem made by `mkfs` in an image file and loop-mounted at a directory;
/// unmounted on drop.
pub struct LoopFs {
    pub image: PathBuf,
    pub at: PathBuf,
}

impl LoopFs {
    /// `mkfs` (the command and its options; the image path is appended) on a `size`-byte
    /// image `dir/NAME.img`, mounted at `dir/NAME` with `-o loop,OPTS`.
    pub fn new(dir: &Path, name: &str, size: u64, mkfs: &[&str], opts: &str) -> Self {
        let image = dir.join(format!("{name}.img"));
        let at = dir.join(name);
        fs::create_dir_all(&at).unwrap();
        fs::File::create(&image).unwrap().set_len(size).unwrap();
        let made = Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&image)
            .output()
            .unwrap();
        assert_success(&made);
        let mounted = Command::new("mount")
            .args(["-o", &format!("loop,{opts}")])
            .arg(&image)
            .arg(&at)
            .output()
            .unwrap();
        assert_success(&mounted);
        LoopFs { image, at }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        unmount(&self.at);
    }
}

/// Unmounts the path on drop (for mounts made without a fixture), even on panic.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// A live mount; unmounted on drop. Borrows the fixture so its directory outlives it.
pub struct Mounted<'a> {
    _fixture: &'a Fixture,
    pub path: PathBuf,
}

impl<'a> Mounted<'a> {
    /// Takes charge of a mount made some other way on the fixture's mountpoint.
    pub fn adopt(fixture: &'a Fixture) -> Self {
        assert!(is_mounted(&fixture.mnt), "nothing mounted to adopt");
        Mounted {
            _fixture: fixture,
            path: fixture.mnt.clone(),
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Unmounts now (drop does nothing afterwards).
    pub fn unmount(&self) {
        unmount(&self.path);
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        unmount(&self.path);
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let want = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(&m.replace("\\040", " ")) == want)
}

pub fn unmount(p: &Path) {
    for _ in 0..50 {
        if !is_mounted(p) {
            return;
        }
        let ok = Command::new("umount")
            .arg(p)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("umount").arg("-l").arg(p).status();
}

/// The errno of a failed call, or 0 on success.
pub fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn run(cmd: &str, args: &[&OsStr]) -> Output {
    Command::new(cmd).args(args).output().unwrap()
}

/// Names in a directory, sorted.
pub fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Is `p` an overlay whiteout (0/0 character device)?
/// What the work area `WORKDIR/work` holds besides the whiteout that overlay whiteouts
/// are linked from (kept for the mount's life, as kernel overlayfs keeps its own).
pub fn temporaries(workdir: &Path) -> Vec<String> {
    names(&workdir.join("work"))
        .into_iter()
        .filter(|n| !n.starts_with(layerfs::workdir::WHITEOUT_BASE_PREFIX))
        .collect()
}

pub fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

pub fn is_opaque(p: &Path) -> bool {
    matches!(xattr::get(p, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

/// Writes `content` to `root/rel`, creating parents.
pub fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

pub fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

/// Overlay whiteout (character device 0/0) at `root/rel`.
pub fn mkwhiteout(root: &Path, rel: &str) {
    let st = Command::new("mknod")
        .arg(root.join(rel))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The pid of the layerfs daemon serving `mnt`.
pub fn daemon_pid(mnt: &Path) -> u32 {
    let out = Command::new("pgrep")
        .args(["-f", &format!("layerfs.* {}( |$)", mnt.display())])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .expect("daemon process")
        .parse()
        .unwrap()
}

/// A tiny deterministic generator (xorshift), so a failing run repeats from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Opens /dev/fuse to everyone while alive (it is 0600 on the test machines), for mounts
/// made by unprivileged users; restores the mode on drop. One at a time per test binary
/// (test binaries run one after another).
pub struct OpenDevFuse(u32, #[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Serialises the tests of one binary that depend on the mode of /dev/fuse.
pub static DEV_FUSE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl OpenDevFuse {
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let guard = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
        OpenDevFuse(mode, guard)
    }
}

impl Drop for OpenDevFuse {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

/// `setpriv` running the command that follows as uid/gid 1000 with no other groups.
pub fn as_uid_1000() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=1000", "--regid=1000", "--clear-groups"]);
    c
}

/// The command that follows as uid 1000 made root of a user namespace of its own (as
/// rootless engines run), with a mount namespace of its own too when `mount_ns`.
pub fn as_rootless_1000(mount_ns: bool) -> Command {
    let mut c = as_uid_1000();
    c.args(["unshare", "--user", "--map-root-user"]);
    if mount_ns {
        c.arg("--mount");
    }
    c
}

/// Runs a shell script as uid/gid 1000 (no supplementary groups).
pub fn as_user(script: &str) -> Output {
    as_uid_1000().args(["sh", "-c", script]).output().unwrap()
}

/// Fails the test with the command's stderr unless it succeeded.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A comparable description of a tree: path → "type mode uid:gid size content xattrs".
pub fn snapshot(root: &Path, raw_upper: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, raw_upper, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, raw: bool, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let (kind, detail) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "link",
                fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
            )
        } else if ft.is_file() {
            ("file", format!("{:?}", fs::read_to_string(&p).unwrap()))
        } else if ft.is_char_device() && m.rdev() == 0 {
            ("whiteout", String::new())
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", format!("{}", m.rdev()))
        };
        let mut xattrs: Vec<String> = xattr::list(&p)
            .map(|l| l.collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| {
                !n.starts_with("trusted.overlay.")
                    || [
                        "trusted.overlay.opaque",
                        "trusted.overlay.redirect",
                        "trusted.overlay.origin",
                        "trusted.overlay.impure",
                        "trusted.overlay.metacopy",
                        "trusted.overlay.nlink",
                    ]
                    .contains(&n.as_str())
            })
            .filter(|n| !n.starts_with("security."))
            .map(|n| {
                // An origin names an inode of the fixture's own lower: only its presence
                // compares across fixtures.
                if n == "trusted.overlay.origin" {
                    return n;
                }
                let v = xattr::get(&p, &n).ok().flatten().unwrap_or_default();
                format!("{n}={}", String::from_utf8_lossy(&v))
            })
            .collect();
        xattrs.sort();
        let size = if ft.is_dir() { 0 } else { m.len() };
        let nlink = if ft.is_dir() || raw { 0 } else { m.nlink() };
        out.insert(
            rel,
            format!(
                "{kind} {:o} {}:{} size={size} nlink={nlink} {detail} [{}]",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                xattrs.join(",")
            ),
        );
        if ft.is_dir() {
            walk(root, &p, raw, out);
        }
    }
}

/// Runs `run` on kernel overlayfs and on layerfs over identical layers (`n_lowers` lowers
/// made by `populate`) and lists every difference: in what `run` reports step by step, in
/// the merged views, in the upper directories, and in each upper mounted by the other.
/// `layerfs_opts` are extra options for the layerfs mount.
pub fn compare_with_kernel<R: PartialEq + std::fmt::Debug>(
    n_lowers: usize,
    populate: impl Fn(&Fixture),
    layerfs_opts: &[&str],
    run: impl Fn(&Path) -> Vec<R>,
) -> Vec<String> {
    compare_with_kernel_using(n_lowers, populate, "", layerfs_opts, run)
}

/// [`compare_with_kernel`] with `kernel_opts` added to every kernel mount (e.g.
/// `redirect_dir=on`, given to layerfs too in `layerfs_opts`).
pub fn compare_with_kernel_using<R: PartialEq + std::fmt::Debug>(
    n_lowers: usize,
    populate: impl Fn(&Fixture),
    kernel_opts: &str,
    layerfs_opts: &[&str],
    run: impl Fn(&Path) -> Vec<R>,
) -> Vec<String> {
    let fixture = || Fixture::new(n_lowers);
    compare_with_kernel_on(fixture, populate, kernel_opts, layerfs_opts, run)
}

/// [`compare_with_kernel_using`] over fixtures `fixture` makes (two: one for each side).
pub fn compare_with_kernel_on<R: PartialEq + std::fmt::Debug>(
    fixture: impl Fn() -> Fixture,
    populate: impl Fn(&Fixture),
    kernel_opts: &str,
    layerfs_opts: &[&str],
    run: impl Fn(&Path) -> Vec<R>,
) -> Vec<String> {
    let kernel = fixture();
    let ours = fixture();
    populate(&kernel);
    populate(&ours);
    let (kview, kres) = {
        let m = kernel.kernel_mount_with(kernel_opts);
        let res = run(&m.path);
        (snapshot(&m.path, false), res)
    };
    let (oview, ores) = {
        let m = ours.mount_with(layerfs_opts);
        let res = run(&m.path);
        (snapshot(&m.path, false), res)
    };
    let mut problems = Vec::new();
    for (i, (k, o)) in kres.iter().zip(&ores).enumerate() {
        if k != o {
            problems.push(format!("step {i}: kernel {k:?} layerfs {o:?}"));
        }
    }
    if kres.len() != ores.len() {
        problems.push(format!(
            "{} steps on the kernel, {} on layerfs",
            kres.len(),
            ores.len()
        ));
    }
    problems.extend(diff("merged", &kview, &oview));
    problems.extend(diff(
        "upper",
        &snapshot(&kernel.upper, true),
        &snapshot(&ours.upper, true),
    ));
    problems.extend(diff(
        "index",
        &index_snapshot(&kernel),
        &index_snapshot(&ours),
    ));
    // The upper layerfs wrote, mounted by the kernel, shows the same tree.
    {
        ours.clear_work();
        let m = ours.kernel_mount_with(kernel_opts);
        problems.extend(diff(
            "kernel over layerfs upper",
            &kview,
            &snapshot(&m.path, false),
        ));
    }
    // And layerfs reads the upper the kernel wrote.
    {
        let m = kernel.mount_with(layerfs_opts);
        problems.extend(diff(
            "layerfs over kernel upper",
            &kview,
            &snapshot(&m.path, false),
        ));
    }
    problems
}

/// The inodes index of a fixture's workdir: each entry's file as the snapshot shows it,
/// in order (entry names are the file handles of the fixture's own lowers, which differ).
pub fn index_snapshot(f: &Fixture) -> BTreeMap<String, String> {
    let index = f.work.join("index");
    if !index.exists() {
        return BTreeMap::new();
    }
    let mut entries: Vec<String> = snapshot(&index, true)
        .into_iter()
        .filter(|(name, _)| !name.starts_with('#'))
        .map(|(_, v)| v)
        .collect();
    entries.sort();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("entry {i}"), v))
        .collect()
}

pub fn diff(what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            d.push(format!(
                "{what} {k}: kernel={:?} layerfs={:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    d
}
