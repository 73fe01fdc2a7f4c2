//! A union over fresh directories, for the benchmarks and tests that drive the core
//! without FUSE.

use std::io;
use std::path::{Path, PathBuf};

use crate::layers::Layers;
use crate::union::{FsConfig, LayerFs};
use crate::workdir::WorkDir;

/// A union of `n` lower layers `root/l0` (topmost) .. `root/l{n-1}`, each filled by
/// `fill(i, dir)`, under an empty upper `root/u` with its workdir `root/w`.
pub fn union_in(root: &Path, n: usize, fill: impl Fn(usize, &Path)) -> io::Result<LayerFs> {
    let lowers: Vec<PathBuf> = (0..n).map(|i| root.join(format!("l{i}"))).collect();
    for (i, l) in lowers.iter().enumerate() {
        std::fs::create_dir(l)?;
        fill(i, l);
    }
    let (upper, work) = (root.join("u"), root.join("w"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    let layers = Layers::open(Some(&upper), &lowers, &[], None)?;
    LayerFs::new(layers, Some(WorkDir::open(&work)?), FsConfig::default())
}
