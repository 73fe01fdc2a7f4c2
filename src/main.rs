//! The `layerfs` command line: parses arguments and hands over to the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use layerfs::options::split_lowerdir;
use layerfs::{MountSpec, UsageError};

/// A copy-on-write union filesystem (overlayfs semantics) over FUSE.
///
/// Also runs as a mount program in the fuse-overlayfs form:
///   layerfs [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT
/// and as a mount.fuse3 helper: layerfs SOURCE MOUNTPOINT -o OPTIONS
#[derive(Parser, Debug)]
#[command(name = "layerfs", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
    /// [SOURCE] MOUNTPOINT (fuse-overlayfs and mount-helper forms)
    #[arg(value_name = "ARGS")]
    positional: Vec<OsString>,
}

#[derive(Args, Debug)]
struct Common {
    /// Mount options, comma-separated (may be given several times)
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<OsString>,
    /// Stay in the foreground
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Debug logging (implies --foreground)
    #[arg(short = 'd', long)]
    debug: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount LOWER[:LOWER...] with UPPER on MOUNTPOINT (leftmost lower is topmost)
    Mount(MountArgs),
    /// Unmount a layerfs mount (also clears a dead one)
    Umount {
        mountpoint: PathBuf,
        /// Detach now even if busy (umount -l)
        #[arg(short = 'l', long)]
        lazy: bool,
    },
}

#[derive(Args, Debug)]
struct MountArgs {
    /// Lower layers, topmost first, separated by ':' ('\:' for a colon in a name)
    #[arg(value_name = "LOWER[:LOWER...]")]
    lowers: OsString,
    /// The upper layer (omitted with --read-only)
    #[arg(value_name = "UPPER")]
    second: OsString,
    /// Where to mount
    #[arg(value_name = "MOUNTPOINT")]
    third: Option<OsString>,
    /// Work directory on the upper's filesystem [default: a hidden sibling of UPPER,
    /// .UPPERNAME.layerfs-work]
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// A read-only union of the lowers, without an upper layer
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    common: Common,
}

fn apply_common(spec: &mut MountSpec, c: &Common) -> Result<(), UsageError> {
    for o in &c.options {
        spec.apply_options(o)?;
    }
    spec.foreground |= c.foreground || c.debug;
    spec.debug |= c.debug;
    Ok(())
}

fn mount_form(a: &MountArgs) -> Result<MountSpec, UsageError> {
    let (lowers, upper, mnt) = match (a.read_only, &a.third) {
        (true, None) => (&a.lowers, None, &a.second),
        (false, Some(m)) => (&a.lowers, Some(&a.second), m),
        (true, _) => return Err(UsageError("--read-only takes LOWERS MOUNTPOINT".into())),
        (false, _) => {
            return Err(UsageError(
                "mount takes LOWERS UPPER MOUNTPOINT (or --read-only LOWERS MOUNTPOINT)".into(),
            ));
        }
    };
    let mut spec = MountSpec::new(PathBuf::from(mnt));
    (spec.lowers, spec.data_lowers) = split_lowerdir(lowers)?;
    spec.upper = upper.map(PathBuf::from);
    spec.workdir = a.workdir.clone();
    apply_common(&mut spec, &a.common)?;
    if a.read_only && spec.upper.is_some() {
        return Err(UsageError("--read-only conflicts with upperdir".into()));
    }
    Ok(spec)
}

fn compat_form(cli: &Cli) -> Result<MountSpec, UsageError> {
    let mnt = match cli.positional.as_slice() {
        [m] | [_, m] => m,
        [] => {
            return Err(UsageError(
                "no mountpoint given (see layerfs --help)".into(),
            ));
        }
        _ => return Err(UsageError("too many arguments (see layerfs --help)".into())),
    };
    let mut spec = MountSpec::new(PathBuf::from(mnt));
    apply_common(&mut spec, &cli.common)?;
    Ok(spec)
}

fn run(cli: Cli) -> Result<(), UsageError> {
    let spec = match &cli.command {
        Some(Command::Umount { mountpoint, lazy }) => {
            return layerfs::daemon::umount(mountpoint, *lazy);
        }
        Some(Command::Mount(a)) => mount_form(a)?,
        None => compat_form(&cli)?,
    };
    let level = if spec.debug {
        "layerfs=debug"
    } else {
        "layerfs=warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    layerfs::daemon::mount(&spec)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerfs: {e}");
            ExitCode::FAILURE
        }
    }
}
