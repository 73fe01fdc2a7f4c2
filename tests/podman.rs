//! podman with layerfs as the overlay driver's mount program, end to end: containers that
//! change the image, commit, diff, several containers at once, and clean removal.
mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A podman with its own store in a temp dir, using layerfs as mount program.
struct Podman {
    dir: tempfile::TempDir,
    /// Extra `--storage-opt` values.
    storage_opts: Vec<String>,
}

impl Podman {
    fn new() -> Self {
        Self::with_storage_opts(&[])
    }

    fn with_storage_opts(opts: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-podman")
            .tempdir()
            .unwrap();
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        Podman {
            dir,
            storage_opts: opts.iter().map(|o| format!("--storage-opt={o}")).collect(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("timeout")
            .arg("120")
            .arg("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "overlay", "--runtime", "runc"])
            .arg(format!("--storage-opt=overlay.mount_program={BIN}"))
            .args(&self.storage_opts)
            .args(args)
            .output()
            .unwrap()
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
            "sh", "cat", "ls", "rm", "mv", "mkdir", "echo", "sleep", "test",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        for d in ["etc", "tmp", "proc", "sys", "dev", "data/dir"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("data/file"), "base\n").unwrap();
        fs::write(root.join("data/del"), "delete me\n").unwrap();
        fs::write(root.join("data/dir/x"), "in dir\n").unwrap();
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
        if cmd.contains(BIN) && cmd.contains(&root) && !stat.contains(") Z ") {
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
    let mut diff: Vec<String> = p.ok(&["diff", "c1"]).lines().map(String::from).collect();
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
