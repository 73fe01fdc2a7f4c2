//! FUSE passthrough: data written through an upper file goes straight to the kernel (no
//! WRITE reaches the daemon); with `passthrough=off` it takes the cached path through the
//! daemon. Either way readers see what writers wrote, also across the switch between the
//! two paths on one file.
mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};

/// Mounts `f` with the extra arguments `opts`, logging every request; the daemon, the
/// mount and the log's path.
fn logged_mount<'a>(
    f: &'a Fixture,
    opts: &[&str],
) -> (std::process::Child, Mounted<'a>, std::path::PathBuf) {
    let log = f.dir.path().join("daemon.log");
    let mut c = f.mount_command();
    c.args(opts);
    let (daemon, m) = f.spawn_logged(c, "layerfs=debug", &log);
    (daemon, m, log)
}

/// Runs `work` on a fresh mount with `opts` over a lower file `lower` ("l"); the logged
/// requests that `counted` picks.
fn logged_requests(
    opts: &[&str],
    work: impl FnOnce(&Mounted<'_>),
    counted: impl Fn(&str) -> bool,
) -> usize {
    let f = Fixture::new(1);
    put(f.lower(0), "lower", "l");
    let (mut daemon, m, log) = logged_mount(&f, opts);
    work(&m);
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    text.lines().filter(|l| counted(l)).count()
}

/// The sizes (after `field`) of the requests logged in `text` whose lines hold `what`.
fn logged_sizes(text: &str, what: &str, field: &str) -> Vec<usize> {
    text.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.rsplit_once(field)?.1.parse().ok())
        .collect()
}

/// Writes and reads through the mount with `opts`; returns the WRITE and READ requests the
/// daemon saw for the upper file.
fn requests(opts: &[&str]) -> (usize, usize) {
    let f = Fixture::new(1);
    put(f.lower(0), "lower", "from the lower layer\n");
    let (mut daemon, m, log) = logged_mount(&f, opts);
    let data = vec![7u8; 4 << 20];
    fs::write(m.p("new"), &data).unwrap();
    let h = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("new"))
        .unwrap();
    h.write_all_at(b"patched", 4096).unwrap();
    let mut back = vec![0u8; 7];
    h.read_exact_at(&mut back, 4096).unwrap();
    assert_eq!(&back, b"patched");
    drop(h);
    // A lower file: copied up by the open for writing, then passed through too.
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("lower"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    assert_eq!(read(m.p("lower")), "from the lower layer\nappended\n");
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    (count("] write "), count("] read "))
}

#[test]
fn writes_pass_through_and_the_fallback_serves_them() {
    require_fuse!();
    let (writes, _) = requests(&[]);
    assert_eq!(writes, 0, "writes reached the daemon with passthrough on");
    let (writes, reads) = requests(&["-o", "passthrough=off"]);
    assert!(
        writes > 0 && reads > 0,
        "passthrough=off: {writes} writes, {reads} reads"
    );
}

/// Writes cost no round trip for privileges: the daemon takes over clearing setuid/setgid
/// and `security.capability` (FUSE_HANDLE_KILLPRIV_V2), so the kernel marks the superblock
/// as having none to check and stops asking for `security.capability` before each write.
/// Without it, each of these writes would send a GETXATTR first, passthrough or not.
#[test]
fn writes_ask_for_no_capability_xattr() {
    require_fuse!();
    for opts in [&[][..], &["-o", "passthrough=off"]] {
        let writes = |m: &Mounted<'_>| {
            for name in ["new", "lower"] {
                let h = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(m.p(name))
                    .unwrap();
                for i in 0..2000u64 {
                    h.write_all_at(&[1u8; 512], (i * 4096) % (1 << 20)).unwrap();
                }
            }
        };
        let asked = logged_requests(opts, writes, |l| {
            l.contains("] getxattr ") && l.contains("security.capability")
        });
        assert!(
            asked <= 2,
            "{opts:?}: {asked} GETXATTRs of security.capability for 4,000 writes"
        );
    }
}

/// A passed-through write never reaches the daemon, so a writer without CAP_FSETID has the
/// setuid/setgid bits cleared when it opens the file for writing; the kernel, which cached
/// the mode and did not ask for that change, is told to drop it, so the mount shows the
/// cleared mode at once (without the notification it showed 6777 over an upper at 777).
#[test]
fn cleared_setuid_shows_at_once() {
    require_fuse!();
    for opts in [&[][..], &["-o", "passthrough=off"]] {
        let f = Fixture::new(1);
        put(f.lower(0), "lower", "l");
        let m = f.mount_with(opts);
        for name in ["new", "lower"] {
            fs::write(m.p(name), "x").unwrap();
            fs::set_permissions(m.p(name), fs::Permissions::from_mode(0o6777)).unwrap();
            let before = fs::metadata(m.p(name)).unwrap().permissions().mode();
            assert_eq!(before & 0o7777, 0o6777, "{opts:?} {name}");
            let out = as_uid_1000()
                .args(["sh", "-c", "printf y >> \"$0\""])
                .arg(m.p(name))
                .output()
                .unwrap();
            assert_success(&out);
            // stat(1) asks for the mode alone (statx STATX_MODE): the write made the
            // kernel drop its cached size and times, not the mode.
            let out = run(
                "stat",
                &["-c".as_ref(), "%a".as_ref(), m.p(name).as_os_str()],
            );
            assert_success(&out);
            let shown = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let kept = fs::metadata(f.upper.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                (shown.as_str(), kept & 0o7777),
                ("777", 0o777),
                "{opts:?} {name}: mode shown, mode in the upper"
            );
        }
    }
}

/// Closing files costs no round trip to the daemon: the first FLUSH is answered ENOSYS and
/// the kernel sends none after it, with passthrough and without.
#[test]
fn closes_send_one_flush_at_most() {
    require_fuse!();
    for opts in [&[][..], &["-o", "passthrough=off"]] {
        let closes = |m: &Mounted<'_>| {
            for i in 0..50 {
                fs::write(m.p(&format!("f{i}")), "data").unwrap();
                assert_eq!(read(m.p(&format!("f{i}"))), "data");
                assert_eq!(read(m.p("lower")), "l");
            }
        };
        let flushes = logged_requests(opts, closes, |l| l.contains("] flush "));
        assert_eq!(
            flushes, 1,
            "{opts:?}: {flushes} FLUSH requests for 150 closes"
        );
    }
}

/// Pages a reader cached stay right after a writer passed data past them: the next
/// cached open drops them.
#[test]
fn cached_pages_do_not_outlive_a_passthrough_write() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "f", "old content\n");
    let m = f.mount();
    assert_eq!(read(m.p("f")), "old content\n");
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .unwrap()
        .write_all_at(b"NEW", 0)
        .unwrap();
    assert_eq!(read(m.p("f")), "NEW content\n");
    // And a reader open while the writer writes sees each write at once.
    let reader = fs::File::open(m.p("f")).unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(m.p("f")).unwrap();
    w.write_all_at(b"xyz", 4).unwrap();
    w.flush().unwrap();
    let mut got = vec![0u8; 12];
    reader.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"NEW xyztent\n");
}

/// `passthrough=all`: reads of a lower file go straight to the lower (no READ reaches the
/// daemon). While it is open so, its data is held: an open for writing and a truncate
/// fail with ETXTBSY, and a metadata change (a copy-up of the same data) and another open
/// for reading still work. Once the readers close, a write copies it up as usual, and
/// the lower file is never changed. The one read of the copy once every handle closed
/// reaches the daemon, as by default (an upper file opened to read is not passed through:
/// the kernel would read it without O_NOATIME, touching its atime under noatime).
#[test]
fn all_passes_lower_reads_through_and_holds_their_data() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "f", "lower data\n");
    let (mut daemon, m, log) = logged_mount(&f, &["-o", "passthrough=all"]);
    let reader = fs::File::open(m.p("f")).unwrap();
    let mut got = vec![0u8; 11];
    reader.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, b"lower data\n");
    let busy = fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "open for writing");
    let busy = fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .unwrap_err();
    assert_eq!(
        busy.raw_os_error(),
        Some(libc::ETXTBSY),
        "open for writing again"
    );
    let busy = run(
        "truncate",
        &["-s".as_ref(), "3".as_ref(), m.p("f").as_os_str()],
    );
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(said.contains("Text file busy"), "truncate: {said}");
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(m.p("f")), "lower data\n");
    drop(reader);
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("f"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    assert_eq!(read(m.p("f")), "lower data\nmore\n");
    assert_eq!(read(f.lower(0).join("f")), "lower data\n");
    assert_eq!(read(f.upper.join("f")), "lower data\nmore\n");
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains("] read ")).count(), 1);
}

/// By default a read-only fd of a lower file reads the file's new data after another fd
/// copied it up and wrote it, as on kernel overlayfs (read-only opens are not passed
/// through there, since a passthrough handle cannot move to the copy), and the lower file
/// keeps its data.
#[test]
fn by_default_a_reader_of_a_lower_file_sees_its_copy_up() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "f", "old\n");
    let m = f.mount();
    let reader = fs::File::open(m.p("f")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("f"))
        .unwrap()
        .write_all(b"new\n")
        .unwrap();
    let mut got = vec![0u8; 4];
    reader.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, b"new\n");
    // The write went to the copy, never into the layer below.
    assert_eq!(read(f.lower(0).join("f")), "old\n");
    assert_eq!(read(f.upper.join("f")), "new\n");
}

/// Without passthrough (`passthrough=off`, what rootless mounts get) the kernel's writeback
/// cache gathers writes: a thousand 4 KiB writes reach the daemon as a few WRITEs of up to
/// 1 MiB (max_write and max_pages at the kernel's limit).
/// Appends, a write into the middle of a lower file's page through a write-only handle
/// (the kernel reads the page in through it), and a setuid bit that an unprivileged
/// writer clears come out as they do without the cache.
#[test]
fn without_passthrough_the_writeback_cache_gathers_writes() {
    require_fuse!();
    let f = Fixture::new(1);
    put(f.lower(0), "lower", "0123456789abcdef\n");
    let (mut daemon, m, log) = logged_mount(&f, &["-o", "passthrough=off"]);
    let mut w = fs::File::create(m.p("new")).unwrap();
    for i in 0..1000u32 {
        w.write_all(&[(i % 251) as u8; 4096]).unwrap();
    }
    drop(w);
    let back = fs::read(m.p("new")).unwrap();
    assert_eq!(back.len(), 4096 * 1000);
    assert!(
        back.chunks(4096)
            .enumerate()
            .all(|(i, c)| c[0] == (i % 251) as u8)
    );
    let mut a = fs::OpenOptions::new()
        .append(true)
        .open(m.p("lower"))
        .unwrap();
    a.write_all(b"one\n").unwrap();
    a.write_all(b"two\n").unwrap();
    drop(a);
    let w = fs::OpenOptions::new()
        .write(true)
        .open(m.p("lower"))
        .unwrap();
    w.write_all_at(b"XY", 4).unwrap();
    drop(w);
    assert_eq!(read(m.p("lower")), "0123XY6789abcdef\none\ntwo\n");
    fs::write(m.p("setuid"), "x").unwrap();
    fs::set_permissions(m.p("setuid"), fs::Permissions::from_mode(0o4777)).unwrap();
    let out = as_uid_1000()
        .args(["sh", "-c", "printf y >> \"$0\""])
        .arg(m.p("setuid"))
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(read(m.p("setuid")), "xy");
    let mode = fs::metadata(m.p("setuid")).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o7777,
        0o777,
        "setuid not cleared by uid 1000's write"
    );
    drop(m);
    daemon.wait().unwrap();
    assert_eq!(read(f.upper.join("lower")), "0123XY6789abcdef\none\ntwo\n");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("writeback cache on"), "no writeback cache");
    let writes = logged_sizes(&text, "] write ", "len=");
    assert!(
        writes.len() < 100,
        "{} WRITE requests for 1,000 writes",
        writes.len()
    );
    // max_write and max_pages at the kernel's limit: a WRITE carries up to 1 MiB.
    assert_eq!(
        writes.iter().max(),
        Some(&(1 << 20)),
        "WRITE sizes {writes:?}"
    );
}

/// Reads the daemon serves (a lower file opened for reading, by default) come in READs
/// of up to 1 MiB: the mount's readahead is widened from the 128 KiB a FUSE mount starts
/// with to one READ of the largest size.
#[test]
fn reads_through_the_daemon_come_in_large_reads() {
    require_fuse!();
    let f = Fixture::new(1);
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    fs::write(f.lower(0).join("big"), &data).unwrap();
    let (mut daemon, m, log) = logged_mount(&f, &[]);
    let dev = run("mountpoint", &["-d".as_ref(), m.path.as_os_str()]);
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    assert_eq!(read(&knob).trim(), "1024", "{knob}");
    let mut back = Vec::new();
    let mut h = fs::File::open(m.p("big")).unwrap();
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = std::io::Read::read(&mut h, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert!(back == data, "the file read back differs");
    drop(h);
    drop(m);
    daemon.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    let reads = logged_sizes(&text, "] read ", "size=");
    assert_eq!(reads.iter().max(), Some(&(1 << 20)), "READ sizes {reads:?}");
}
