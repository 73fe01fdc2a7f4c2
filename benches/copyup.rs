//! Copy-up cost on the core, without FUSE: the first open-for-write of a lower file.

use std::ffi::OsStr;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layerfs::layers::Layers;
use layerfs::workdir::WorkDir;
use layerfs::{FsConfig, LayerFs};

fn bench_copy_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("copy_up");
    group.sample_size(20);
    for size in [4u64 << 10, 1 << 20, 16 << 20] {
        let root = tempfile::tempdir().unwrap();
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
    let layers = Layers::open(Some(&upper.path().join("u")), &[lower.to_path_buf()], None).unwrap();
    let work = WorkDir::open(&upper.path().join("w")).unwrap();
    (
        LayerFs::new(layers, Some(work), FsConfig::default()).unwrap(),
        upper,
    )
}

criterion_group!(benches, bench_copy_up);
criterion_main!(benches);
