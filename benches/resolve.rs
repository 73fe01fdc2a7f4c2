//! Name resolution and listing on the core, without FUSE: a lookup of a name held by the
//! bottom of 1, 8 and 64 lower layers, and a full listing of a 10,000-entry directory merged
//! from two layers.

use std::ffi::OsStr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layerfs::LayerFs;

/// A union of `n` lower layers under an empty upper, in `root`.
fn union(root: &std::path::Path, n: usize, fill: impl Fn(usize, &std::path::Path)) -> LayerFs {
    layerfs::scratch::union_in(root, n, fill).unwrap()
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_through_layers");
    for n in [1usize, 8, 64] {
        let root = tempfile::tempdir().unwrap();
        let fs = union(root.path(), n, |i, l| {
            std::fs::create_dir_all(l.join("dir/sub")).unwrap();
            if i + 1 == n {
                std::fs::write(l.join("dir/sub/file"), "x").unwrap();
            }
        });
        let dir = fs.lookup(1, OsStr::new("dir")).unwrap().ino;
        let sub = fs.lookup(dir, OsStr::new("sub")).unwrap().ino;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let a = fs.lookup(sub, OsStr::new("file")).unwrap();
                fs.forget(a.ino, 1);
            })
        });
    }
    group.finish();
}

fn bench_readdir(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let fs = union(root.path(), 2, |i, l| {
        std::fs::create_dir(l.join("merged")).unwrap();
        for e in 0..5000 {
            std::fs::write(l.join(format!("merged/{i}-{e}")), "").unwrap();
        }
    });
    let dir = fs.lookup(1, OsStr::new("merged")).unwrap().ino;
    c.bench_function("readdir_merged_10000", |b| {
        b.iter(|| {
            let fh = fs.opendir(dir).unwrap();
            let (mut offset, mut seen) = (0, 0);
            loop {
                let batch = fs.readdir(fh, offset).unwrap();
                let Some((next, _)) = batch.last() else { break };
                offset = *next;
                seen += batch.len();
            }
            fs.releasedir(fh);
            assert_eq!(seen, 10_002);
        })
    });
}

criterion_group!(benches, bench_lookup, bench_readdir);
criterion_main!(benches);
