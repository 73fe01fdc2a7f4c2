//! podman with layerfs as the overlay driver's mount program, end to end: containers that
//! change the image, commit, diff, several containers at once, and clean removal; a
//! container running as a non-root user, a setuid-root program in the image (and
//! no-new-privileges), each compared with podman on kernel overlayfs; and rootless podman.
mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which overlay serves the containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// layerfs as the overlay driver's mount program.
    Layerfs,
    /// Kernel overlayfs (no mount program): the reference.
    Kernel,
}

/// A podman with its own store in a temp dir.
struct Podman {
    dir: tempfile::TempDir,
    engine: Engine,
    /// Extra `--storage-opt` values.
    storage_opts: Vec<String>,
    /// Rootless: the unprivileged user podman runs as (with a subuid/subgid range).
    rootless: Option<RootlessUser>,
}

/// The user rootless podman runs as: made for the tests if missing, with a subordinate
/// id range in /etc/subuid and /etc/subgid.
struct RootlessUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

const ROOTLESS_USER: &str = "lfsrootless";

impl RootlessUser {
    fn ensure() -> Self {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id")
                .arg(flag)
                .arg(ROOTLESS_USER)
                .output()
                .ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if id("-u").is_none() {
            let out = Command::new("useradd")
                .args(["--no-create-home", "--shell", "/bin/sh", ROOTLESS_USER])
                .output()
                .unwrap();
            assert_success(&out);
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            if !text
                .lines()
                .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
            {
                let line = format!("{ROOTLESS_USER}:300000:65536\n");
                fs::write(file, text + &line).unwrap();
            }
        }
        RootlessUser {
            name: ROOTLESS_USER,
            uid: id("-u").unwrap(),
            gid: id("-g").unwrap(),
        }
    }
}

impl Podman {
    fn new() -> Self {
        Self::with_storage_opts(&[])
    }

    fn with_storage_opts(opts: &[&str]) -> Self {
        Self::make(Engine::Layerfs, opts, None)
    }

    fn kernel() -> Self {
        Self::make(Engine::Kernel, &[], None)
    }

    /// Rootless podman on layerfs: layerfs runs as root of podman's user namespace.
    fn rootless() -> Self {
        Self::make(Engine::Layerfs, &[], Some(RootlessUser::ensure()))
    }

    fn make(engine: Engine, opts: &[&str], rootless: Option<RootlessUser>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-podman")
            .tempdir()
            .unwrap();
        // Rootless engines have no cgroup delegation here: cgroupfs, no network.
        let extra = if rootless.is_some() {
            "netns = \"none\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
        } else {
            "[engine]\n"
        };
        fs::write(
            dir.path().join("containers.conf"),
            format!("[containers]\ndefault_ulimits = []\n{extra}runtime = \"runc\"\n"),
        )
        .unwrap();
        if let Some(u) = &rootless {
            for d in ["home", "xdg"] {
                fs::create_dir(dir.path().join(d)).unwrap();
            }
            // The daemon binary where the user can run it.
            fs::copy(BIN, dir.path().join("layerfs")).unwrap();
            let out = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.uid, u.gid))
                .arg(dir.path())
                .output()
                .unwrap();
            assert_success(&out);
            fs::set_permissions(dir.path().join("xdg"), fs::Permissions::from_mode(0o700)).unwrap();
        }
        Podman {
            dir,
            engine,
            storage_opts: opts.iter().map(|o| format!("--storage-opt={o}")).collect(),
            rootless,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut c = Command::new("timeout");
        c.arg("120");
        let bin = match &self.rootless {
            None => {
                c.env("CONTAINERS_CONF", d.join("containers.conf"));
                BIN.into()
            }
            Some(u) => {
                c.args([
                    "setpriv",
                    &format!("--reuid={}", u.uid),
                    &format!("--regid={}", u.gid),
                    "--init-groups",
                    "env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    &format!("USER={}", u.name),
                ])
                .arg(format!("HOME={}", d.join("home").display()))
                .arg(format!("XDG_RUNTIME_DIR={}", d.join("xdg").display()))
                .arg(format!(
                    "CONTAINERS_CONF={}",
                    d.join("containers.conf").display()
                ));
                d.join("layerfs")
            }
        };
        c.arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "overlay", "--runtime", "runc"]);
        if self.engine == Engine::Layerfs {
            c.arg(format!(
                "--storage-opt=overlay.mount_program={}",
                bin.display()
            ));
        }
        c.args(&self.storage_opts).args(args).output().unwrap()
    }

    /// Runs podman and returns stdout, failing the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A busybox image with some content to change, imported from a tar.
    fn import_busybox(&self, tag: &str) {
        let root = self.dir.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy(busybox(), root.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "ls", "rm", "mv", "mkdir", "echo", "sleep", "test", "id", "stat",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        for d in ["etc", "tmp", "proc", "sys", "dev", "data/dir"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("data/file"), "base\n").unwrap();
        fs::write(root.join("data/del"), "delete me\n").unwrap();
        fs::write(root.join("data/dir/x"), "in dir\n").unwrap();
        // What images for non-root users hold: a home, a sticky /tmp, a root-only file, a
        // setuid-root program.
        fs::create_dir_all(root.join("home/user")).unwrap();
        std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(root.join("secret"), "s\n").unwrap();
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        let suid = root.join("bin/suid-id");
        build_euid_program(&self.dir.path().join("euid.c"), &suid);
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        self.ok(&["import", tar.to_str().unwrap(), tag]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = self.run(&["rmi", "-af"]);
        if let Some(u) = &self.rootless {
            // Rootless podman keeps a pause process holding its user namespace.
            let _ = Command::new("pkill")
                .args(["-KILL", "-u"])
                .arg(u.uid.to_string())
                .status();
        }
        let root = self.dir.path().to_path_buf();
        // Anything still mounted below the store (after a failure) is unmounted.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if Path::new(m).starts_with(&root) {
                unmount(Path::new(m));
            }
        }
    }
}

/// Builds a static program printing its effective uid (to be made setuid root).
fn build_euid_program(src: &Path, out: &Path) {
    fs::write(
        src,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n",
    )
    .unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(src)
        .output()
        .unwrap();
    assert_success(&built);
}

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("busybox-static is not installed");
}

fn podman_available() -> bool {
    let ok = Command::new("podman").arg("--version").output().is_ok()
        && Command::new("runc").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "podman/runc missing under CI=true"
        );
        eprintln!("skipping: podman or runc not installed");
    }
    ok
}

/// layerfs mounts below the store.
fn leftovers(p: &Podman) -> Vec<String> {
    let root = p.dir.path().to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("fuse.layerfs") && l.contains(&root))
        .map(String::from)
        .collect()
}

/// Live (not zombie) layerfs daemons whose command line names the store.
fn live_daemons(p: &Podman) -> Vec<u32> {
    let root = p.dir.path().to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ours = cmd.contains(BIN) || cmd.starts_with(&format!("{root}/layerfs"));
        if ours && cmd.contains(&root) && !stat.contains(") Z ") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn containers_on_layerfs() {
    require_fuse!();
    if !podman_available() {
        return;
    }
    let p = Podman::new();
    p.import_busybox("localhost/lfs-bb:1");

    // Write, overwrite, delete and rename files and directories of the image.
    let script = "cat /data/file && echo more >> /data/file && echo over > /data/del2 && \
                  rm /data/del && mv /data/dir /data/dir2 && mkdir /data/new && \
                  echo n > /data/new/f && mv /data/new/f /data/new/g && ls /data && \
                  cat /data/file /data/dir2/x /data/new/g";
    let out = p.ok(&[
        "run",
        "--name",
        "c1",
        "localhost/lfs-bb:1",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out, "base\ndel2\ndir2\nfile\nnew\nbase\nmore\nin dir\nn\n");
    // `container diff`, not `diff`: `podman diff` looks the name up as an image first, and
    // "c1" is a hex prefix that matches the image's ID once in 256 imports (its whole tree
    // then shows as added).
    let mut diff: Vec<String> = p
        .ok(&["container", "diff", "c1"])
        .lines()
        .map(String::from)
        .collect();
    diff.sort();
    for want in [
        "A /data/del2",
        "A /data/new",
        "A /data/new/g",
        "C /data/file",
        "D /data/del",
    ] {
        assert!(
            diff.iter().any(|l| l == want),
            "diff lacks {want}: {diff:?}"
        );
    }
    assert!(diff.iter().any(|l| l == "A /data/dir2"), "{diff:?}");

    // Commit, and the two-layer image shows exactly the changes.
    p.ok(&["commit", "-q", "c1", "localhost/lfs-bb:2"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "localhost/lfs-bb:2",
        "sh",
        "-c",
        "ls /data; cat /data/file; test ! -e /data/del && test ! -e /data/dir && echo ok",
    ]);
    assert_eq!(out, "del2\ndir2\nfile\nnew\nbase\nmore\nok\n");
    // The original image is untouched.
    let out = p.ok(&["run", "--rm", "localhost/lfs-bb:1", "ls", "/data"]);
    assert_eq!(out, "del\ndir\nfile\n");

    // Several containers at once, each seeing only its own changes.
    for i in 0..3 {
        let name = format!("par{i}");
        let cmd = format!("echo {i} > /data/own{i}; echo {i} >> /data/file; sleep 300");
        p.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "localhost/lfs-bb:1",
            "sh",
            "-c",
            &cmd,
        ]);
    }
    for i in 0..3 {
        let name = format!("par{i}");
        let out = p.ok(&["exec", &name, "sh", "-c", "ls /data; cat /data/file"]);
        assert_eq!(
            out,
            format!("del\ndir\nfile\nown{i}\nbase\n{i}\n"),
            "{name}"
        );
    }
    assert!(leftovers(&p).len() >= 3, "three containers, three mounts");

    // Removal unmounts cleanly and leaves no layerfs mount behind.
    p.ok(&["rm", "-f", "-t", "0", "par0", "par1", "par2", "c1"]);
    assert!(leftovers(&p).is_empty(), "left behind: {:?}", leftovers(&p));
    let start = std::time::Instant::now();
    while !live_daemons(&p).is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "daemons still running: {:?}",
            live_daemons(&p)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// With `force_mask`, containers/storage keeps owners and modes in
/// `user.containers.override_stat` and mounts with `xattr_permissions=2`: the container
/// sees and changes the owners in the xattrs, and a commit carries them.
#[test]
fn force_mask_keeps_owners_in_xattrs() {
    require_fuse!();
    if !podman_available() {
        return;
    }
    let p = Podman::with_storage_opts(&["overlay.force_mask=shared"]);
    p.import_busybox("localhost/lfs-fm:1");
    let script = "chown 3:4 /data/file && echo n > /data/n && chown 11:12 /data/n && \
                  chmod 600 /data/n && mkdir -m 710 /data/d && \
                  busybox stat -c '%u:%g %a %n' /data/file /data/n /data/d /bin/busybox";
    let out = p.ok(&[
        "run",
        "--name",
        "c1",
        "localhost/lfs-fm:1",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out,
        "3:4 644 /data/file\n11:12 600 /data/n\n0:0 710 /data/d\n0:0 755 /bin/busybox\n"
    );
    // On disk the files belong to the engine; the owners are in the xattrs.
    let store = p.dir.path().join("root/overlay");
    let mut seen = false;
    for e in fs::read_dir(&store).unwrap().flatten() {
        let n = e.path().join("diff/data/n");
        if let Ok(Some(v)) = xattr::get(&n, "user.containers.override_stat") {
            assert!(
                String::from_utf8_lossy(&v).starts_with("11:12:0600"),
                "{v:?}"
            );
            seen = true;
        }
    }
    assert!(seen, "no override xattr in any upper");
    p.ok(&["commit", "-q", "c1", "localhost/lfs-fm:2"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "localhost/lfs-fm:2",
        "busybox",
        "stat",
        "-c",
        "%u:%g %a %n",
        "/data/file",
        "/data/n",
        "/data/d",
    ]);
    assert_eq!(
        out,
        "3:4 644 /data/file\n11:12 600 /data/n\n0:0 710 /data/d\n"
    );
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
    assert!(leftovers(&p).is_empty(), "left behind: {:?}", leftovers(&p));
}

/// What a container running as uid 1000 sees and leaves: it reads the image, is refused a
/// root-only file, writes to /tmp and its home (owned by it in the diff and the commit), and
/// a setuid-root program runs with euid 0 unless no-new-privileges.
fn non_root_user_session(p: &Podman) -> Vec<String> {
    p.import_busybox("localhost/lfs-user:1");
    let script = "cat /data/file; cat /secret; echo t > /tmp/t && echo h > /home/user/h \
                  && cat /tmp/t /home/user/h && id -u && /bin/suid-id; \
                  echo nope > /data/file; echo status $?";
    let run = p.run(&[
        "run",
        "--name",
        "u1",
        "--user",
        "1000:1000",
        "localhost/lfs-user:1",
        "sh",
        "-c",
        script,
    ]);
    let mut seen = vec![
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    ];
    let mut diff: Vec<String> = p
        .ok(&["container", "diff", "u1"])
        .lines()
        .map(String::from)
        .collect();
    diff.sort();
    seen.push(diff.join(","));
    p.ok(&["commit", "-q", "u1", "localhost/lfs-user:2"]);
    seen.push(p.ok(&[
        "run",
        "--rm",
        "localhost/lfs-user:2",
        "stat",
        "-c",
        "%u:%g %a %n",
        "/tmp/t",
        "/home/user/h",
        "/bin/suid-id",
    ]));
    seen.push(p.ok(&[
        "run",
        "--rm",
        "--user",
        "1000:1000",
        "--security-opt",
        "no-new-privileges",
        "localhost/lfs-user:1",
        "/bin/suid-id",
    ]));
    p.ok(&["rm", "-f", "-t", "0", "u1"]);
    seen
}

/// What that session gives (podman adds the user to /etc/passwd and /etc/group).
fn expected_user_session() -> Vec<String> {
    let diff = [
        "A /etc/group",
        "A /etc/passwd",
        "A /home/user/h",
        "A /tmp/t",
        "C /etc",
        "C /home",
        "C /home/user",
        "C /tmp",
    ];
    vec![
        "base\nt\nh\n1000\neuid=0\nstatus 1\n".into(),
        "cat: can't open '/secret': Permission denied\n\
         sh: can't create /data/file: Permission denied\n"
            .into(),
        diff.join(","),
        "1000:1000 644 /tmp/t\n1000:1000 644 /home/user/h\n0:0 4755 /bin/suid-id\n".into(),
        "euid=1000\n".into(),
    ]
}

#[test]
fn non_root_users_and_setuid_programs_as_on_kernel_overlayfs() {
    require_fuse!();
    if !podman_available() {
        return;
    }
    let ours = non_root_user_session(&Podman::new());
    let kernel = non_root_user_session(&Podman::kernel());
    assert_eq!(
        ours, kernel,
        "layerfs (left) and kernel overlayfs (right) differ"
    );
    assert_eq!(ours, expected_user_session());
}

/// Rootless podman (an unprivileged user with a subuid range): layerfs runs as root of
/// podman's user namespace. The same session as above, and a plain run, diff and commit.
#[test]
fn rootless_podman_on_layerfs() {
    require_fuse!();
    if !podman_available() {
        return;
    }
    let _dev = OpenDevFuse::new();
    let p = Podman::rootless();
    let seen = non_root_user_session(&p);
    assert_eq!(seen, expected_user_session());
    let out = p.ok(&[
        "run",
        "--name",
        "r1",
        "localhost/lfs-user:1",
        "sh",
        "-c",
        "echo more >> /data/file && rm /data/del && cat /data/file && id -u",
    ]);
    assert_eq!(out, "base\nmore\n0\n");
    let diff = p.ok(&["container", "diff", "r1"]);
    assert!(
        diff.contains("C /data/file") && diff.contains("D /data/del"),
        "{diff}"
    );
    p.ok(&["commit", "-q", "r1", "localhost/lfs-user:3"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "localhost/lfs-user:3",
        "sh",
        "-c",
        "cat /data/file; ls /data",
    ]);
    assert_eq!(out, "base\nmore\ndir\nfile\n");
    p.ok(&["rm", "-f", "-t", "0", "r1"]);
    // The containers really ran on layerfs: a daemon serves a running one.
    p.ok(&[
        "run",
        "-d",
        "--name",
        "r2",
        "localhost/lfs-user:1",
        "sleep",
        "300",
    ]);
    assert!(
        !live_daemons(&p).is_empty(),
        "no layerfs daemon for a rootless container"
    );
    p.ok(&["rm", "-f", "-t", "0", "r2"]);
}
