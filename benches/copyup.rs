//! Copy-up cost on the core, without FUSE: the first open-for-write of a lower file, by
//! size, with a full copy (the temp directory's filesystem) and with a reflink (an XFS
//! loop filesystem with reflink, made when root and mkfs.xfs allow; skipped otherwise).

use std::ffi::OsStr;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layerfs::layers::Layers;
use layerfs::workdir::WorkDir;
use layerfs::{FsConfig, LayerFs};

const SIZES: [u64; 4] = [4 << 10, 1 << 20, 64 << 20, 1 << 30];

fn bench_copy_up(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    copy_ups(c, "copy_up", root.path());
    match Xfs::new() {
        Some(xfs) => copy_ups(c, "copy_up_reflink", &xfs.at),
        None => eprintln!("copy_up_reflink: skipped (needs root, mkfs.xfs and a loop device)"),
    }
}

/// The copy-up benchmarks of every size, with the layers in `dir`.
fn copy_ups(c: &mut Criterion, name: &str, dir: &Path) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for size in SIZES {
        let root = tempfile::tempdir_in(dir).unwrap();
        let lower = root.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::fs::write(lower.join("f"), vec![7u8; size as usize]).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_batched(
                || fresh_union(root.path(), &lower),
                |(fs, _upper)| {
                    let a = fs.lookup(1, OsStr::new("f")).unwrap();
                    let fh = fs.open(a.ino, libc::O_WRONLY, None).unwrap().fh;
                    fs.release(fh);
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn fresh_union(root: &Path, lower: &Path) -> (LayerFs, tempfile::TempDir) {
    let upper = tempfile::tempdir_in(root).unwrap();
    std::fs::create_dir(upper.path().join("u")).unwrap();
    std::fs::create_dir(upper.path().join("w")).unwrap();
    let layers = Layers::open(
        Some(&upper.path().join("u")),
        &[lower.to_path_buf()],
        &[],
        None,
    )
    .unwrap();
    let work = WorkDir::open(&upper.path().join("w")).unwrap();
    (
        LayerFs::new(layers, Some(work), FsConfig::default()).unwrap(),
        upper,
    )
}

/// An XFS filesystem with reflink on a loop device in a temp dir; unmounted on drop.
struct Xfs {
    _dir: tempfile::TempDir,
    at: std::path::PathBuf,
}

impl Xfs {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("xfs.img");
        let at = dir.path().join("xfs");
        std::fs::create_dir(&at).ok()?;
        std::fs::File::create(&image).ok()?.set_len(4 << 30).ok()?;
        let run = |cmd: &str, args: &[&OsStr]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let q = OsStr::new;
        if !run(
            "mkfs.xfs",
            &[q("-q"), q("-m"), q("reflink=1"), image.as_os_str()],
        ) || !run(
            "mount",
            &[q("-o"), q("loop"), image.as_os_str(), at.as_os_str()],
        ) {
            return None;
        }
        Some(Xfs { _dir: dir, at })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.at).status();
    }
}

criterion_group!(benches, bench_copy_up);
criterion_main!(benches);
