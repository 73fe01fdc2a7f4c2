//! Mount options: the `-o` strings of the fuse-overlayfs command line and the mount
//! helpers, the `lowerdir=` list, and what they mean for layerfs. Parsing only; checking
//! the paths against the filesystem is `setup`'s job.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::idmap::{IdMap, Owners};
use crate::layers::MAX_LOWERS;
use crate::redirect::RedirectDir;
use crate::statoverride::OverrideXattr;
use crate::whiteout::WhiteoutFormat;

/// A command-line mistake, shown to the user as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// The longest message shown whole; longer ones (a huge option echoed back) lose their
/// middle, so the error stays one readable line.
const MAX_MESSAGE: usize = 400;

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = self.0.replace('\n', "\\n");
        let chars: Vec<char> = one_line.chars().collect();
        if chars.len() <= MAX_MESSAGE {
            return f.write_str(&one_line);
        }
        let head: String = chars[..MAX_MESSAGE / 2].iter().collect();
        let tail: String = chars[chars.len() - MAX_MESSAGE / 4..].iter().collect();
        let cut = chars.len() - MAX_MESSAGE / 2 - MAX_MESSAGE / 4;
        write!(f, "{head}[... {cut} characters ...]{tail}")
    }
}

impl std::error::Error for UsageError {}

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Everything a mount needs, as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub debug: bool,
    /// `ro`: the mount itself is read-only.
    pub read_only: bool,
    /// `dev`/`nodev` as given; `None` takes the default (see [`MountSpec::flags`]).
    pub dev: Option<bool>,
    /// `suid`/`nosuid` as given.
    pub suid: Option<bool>,
    pub exec: bool,
    /// `noatime`/`relatime`/`strictatime` as given.
    pub atime: Option<Atime>,
    /// `nodiratime`: listings never update a directory's access time.
    pub nodiratime: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    /// The whiteout format asked for; `None` probes the upper (overlay when mknod works).
    pub whiteout: Option<WhiteoutFormat>,
    /// `volatile`: fsync is a no-op and the work directory is marked as the kernel does.
    pub volatile: bool,
    pub fsync: bool,
    pub threads: usize,
    /// `uring=on`: requests come over io_uring queues, one per CPU, where the kernel offers
    /// FUSE over io_uring (the fuse module's `enable_uring`); else through /dev/fuse.
    pub uring: bool,
    /// Owner mapping and squashing.
    pub owners: Owners,
    /// How long the kernel caches entries and attributes (`timeout=`, seconds).
    pub timeout: std::time::Duration,
    /// `noxattrs=1`: extended attributes are not supported through the mount.
    pub xattrs: bool,
    /// `passthrough=`: which opens pass file data straight to the kernel.
    pub passthrough: Passthrough,
    /// `xattr_permissions=1|2`: the upper keeps owner and mode in this xattr.
    pub xattr_permissions: Option<OverrideXattr>,
    /// `redirect_dir=` as given; see [`MountSpec::redirect`].
    pub redirect_dir: Option<RedirectDir>,
    /// `metacopy=on`: a metadata change of a lower file copies up only its metadata.
    pub metacopy: bool,
    /// Data-only lower layers (after `::` in `lowerdir=`, or `datadir+=`), below the
    /// lowers: never merged, they serve the data of metacopy stubs whose absolute
    /// redirect points into them.
    pub data_lowers: Vec<PathBuf>,
    /// Layers were given one by one (`lowerdir+=`, `datadir+=`).
    pub layers_added: bool,
    /// `xino=on|auto`: layers on several filesystems get the kernel's xino numbers.
    pub xino: bool,
    /// `index=on`: lower hard links stay one inode across copy-up and remount (the
    /// kernel's inodes index in the workdir).
    pub index: bool,
    /// `uuid=`: whether the upper root keeps a persistent overlay UUID.
    pub uuid: Uuid,
}

/// `uuid=` (the kernel's): whether the overlay's own UUID is kept in the upper root
/// (`trusted.overlay.uuid`). File handles in origins carry the layers' UUIDs either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uuid {
    /// None kept.
    Null,
    /// Kept for an upper made by this or a newer mount (the root not yet impure), the
    /// kernel's default.
    Auto,
    /// Kept, made at the first mount.
    On,
}

/// Which opens pass file data straight between the kernel and a layer's file (FUSE
/// passthrough), so it never crosses into the daemon (`passthrough=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// `off`: all file data goes through the daemon and the mount's page cache.
    Off,
    /// `on`, the default: upper files opened for writing.
    Writes,
    /// `all`: also files opened only for reading, lower files included, whose pages are
    /// then the image's own, cached once however many mounts read them. While a lower
    /// file is open so, its data cannot change (the kernel keeps one backing file per
    /// inode): opening it for writing or truncating it fails with ETXTBSY until those
    /// handles close, and reads update its access time as the lower's own mount says.
    All,
}

/// The default kernel cache timeout for entries and attributes: as good as forever, since
/// the layers below do not change and every change goes through the daemon, which tells
/// the kernel where it changes something on its own (as fuse-overlayfs 2.0 does).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1_000_000_000);

/// The default number of FUSE event-loop threads.
pub const DEFAULT_THREADS: usize = 4;

/// When reads update access times, as the kernel's mount flags say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atime {
    /// `noatime`: never.
    Never,
    /// `relatime`: when the access time is not newer than the last change, or a day old.
    Relative,
    /// `strictatime`: on every access.
    Strict,
}

/// Who may use the mount besides the kernel's own checks of modes and owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only the user who mounted it (FUSE's default).
    Owner,
    /// `allow_root`: that user and root.
    RootAndOwner,
    /// `allow_other`: every user, as on kernel overlayfs.
    All,
}

/// The generic mount flags with the defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountFlags {
    pub read_only: bool,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    pub atime: Atime,
    pub nodiratime: bool,
    pub access: Access,
}

impl MountSpec {
    /// The flags of this mount made by root (`privileged`, also root in a user namespace)
    /// or by another user. Root gets what fuse-overlayfs gives itself and kernel overlayfs
    /// allows: every user in (`allow_other`), setuid binaries and devices usable, and
    /// `noatime`; anyone else the owner-only, `nosuid,nodev` mount fusermount3 makes.
    /// Options given explicitly always win.
    pub fn flags(&self, privileged: bool) -> MountFlags {
        let access = if self.allow_other || privileged {
            Access::All
        } else if self.allow_root {
            Access::RootAndOwner
        } else {
            Access::Owner
        };
        MountFlags {
            read_only: self.read_only,
            dev: self.dev.unwrap_or(privileged),
            suid: self.suid.unwrap_or(privileged),
            exec: self.exec,
            // `nodiratime` alone asks for access times with the kernel's default policy,
            // relatime, as mount(8) has it on any filesystem.
            atime: self.atime.unwrap_or(if self.nodiratime {
                Atime::Relative
            } else {
                Atime::Never
            }),
            nodiratime: self.nodiratime,
            access,
        }
    }

    /// What a user other than root may not ask for: `suid`/`dev` (fusermount3 would
    /// drop them) and `allow_other`/`allow_root` unless `fuse_conf` (the text of
    /// /etc/fuse.conf, if any) has `user_allow_other`.
    pub fn check_unprivileged(&self, fuse_conf: Option<&str>) -> Result<(), UsageError> {
        for (asked, name) in [(self.suid, "suid"), (self.dev, "dev")] {
            if asked == Some(true) {
                return usage(format!(
                    "option '{name}' needs root (fusermount3 mounts nosuid,nodev for other users)"
                ));
            }
        }
        let permitted = fuse_conf.is_some_and(|c| {
            c.lines()
                .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
        });
        if (self.allow_other || self.allow_root) && !permitted {
            let name = if self.allow_other {
                "allow_other"
            } else {
                "allow_root"
            };
            return usage(format!(
                "option '{name}' needs root or 'user_allow_other' in /etc/fuse.conf"
            ));
        }
        Ok(())
    }

    pub fn new(mountpoint: PathBuf) -> Self {
        MountSpec {
            lowers: Vec::new(),
            upper: None,
            workdir: None,
            mountpoint,
            foreground: false,
            debug: false,
            read_only: false,
            dev: None,
            suid: None,
            exec: true,
            atime: None,
            nodiratime: false,
            allow_other: false,
            allow_root: false,
            fsname: None,
            subtype: None,
            whiteout: None,
            volatile: false,
            fsync: true,
            threads: DEFAULT_THREADS,
            uring: false,
            owners: Owners::default(),
            timeout: DEFAULT_TIMEOUT,
            xattrs: true,
            passthrough: Passthrough::Writes,
            xattr_permissions: None,
            redirect_dir: None,
            metacopy: false,
            data_lowers: Vec::new(),
            layers_added: false,
            xino: false,
            index: false,
            uuid: Uuid::Auto,
        }
    }

    /// Applies one `-o` string (comma-separated, values may be double-quoted).
    pub fn apply_options(&mut self, opts: &OsStr) -> Result<(), UsageError> {
        for (key, value) in split_options(opts)? {
            self.apply_one(&key, value)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, key: &str, value: Option<OsString>) -> Result<(), UsageError> {
        let flag = |v: &Option<OsString>| -> Result<(), UsageError> {
            match v {
                None => Ok(()),
                Some(_) => usage(format!("option '{key}' takes no value")),
            }
        };
        let text = |v: Option<OsString>| -> Result<String, UsageError> {
            let v = v.ok_or_else(|| UsageError(format!("option '{key}' needs a value")))?;
            v.into_string()
                .map_err(|_| UsageError(format!("option '{key}': value is not UTF-8")))
        };
        let path = |v: Option<OsString>| -> Result<PathBuf, UsageError> {
            match v {
                Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
                _ => usage(format!("option '{key}' needs a path")),
            }
        };
        match key {
            "lowerdir" => {
                let v =
                    value.ok_or_else(|| UsageError("option 'lowerdir' needs a value".into()))?;
                if self.layers_added {
                    return usage("lowerdir= cannot be mixed with lowerdir+= or datadir+=");
                }
                (self.lowers, self.data_lowers) = split_lowerdir(&v)?;
            }
            // The kernel's one-layer-per-option forms (new mount API).
            "lowerdir+" | "datadir+" => {
                let p = path(value)?;
                if !self.layers_added && !self.lowers.is_empty() {
                    return usage(format!("{key}= cannot be mixed with lowerdir="));
                }
                self.layers_added = true;
                if key == "datadir+" {
                    self.data_lowers.push(p);
                } else if self.data_lowers.is_empty() {
                    self.lowers.push(p);
                } else {
                    return usage(
                        "lowerdir+= cannot follow datadir+= (data-only layers are the lowest)",
                    );
                }
            }
            "upperdir" => self.upper = Some(path(value)?),
            "workdir" => self.workdir = Some(path(value)?),
            "ro" => {
                flag(&value)?;
                self.read_only = true;
            }
            "rw" => {
                flag(&value)?;
                self.read_only = false;
            }
            "dev" | "nodev" => {
                flag(&value)?;
                self.dev = Some(key == "dev");
            }
            "suid" | "nosuid" => {
                flag(&value)?;
                self.suid = Some(key == "suid");
            }
            "exec" => {
                flag(&value)?;
                self.exec = true;
            }
            "noexec" => {
                flag(&value)?;
                self.exec = false;
            }
            // As mount(8): `atime` lifts `noatime`, leaving the kernel's default, relatime.
            "atime" | "relatime" => {
                flag(&value)?;
                self.atime = Some(Atime::Relative);
            }
            "strictatime" => {
                flag(&value)?;
                self.atime = Some(Atime::Strict);
            }
            "noatime" => {
                flag(&value)?;
                self.atime = Some(Atime::Never);
            }
            "nodiratime" | "diratime" => {
                flag(&value)?;
                self.nodiratime = key == "nodiratime";
            }
            "allow_other" => {
                flag(&value)?;
                self.allow_other = true;
            }
            "allow_root" => {
                flag(&value)?;
                self.allow_root = true;
            }
            // Always on: the kernel checks permissions against the modes layerfs shows.
            "default_permissions" => flag(&value)?,
            // Accepted from fstab and mount(8); they do not concern the filesystem.
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser"
            | "async" => flag(&value)?,
            "fsname" => self.fsname = Some(text(value)?),
            "subtype" => self.subtype = Some(text(value)?),
            "volatile" => {
                flag(&value)?;
                self.volatile = true;
                self.fsync = false;
            }
            "fsync" => match text(value)?.as_str() {
                "0" => self.fsync = false,
                "1" => self.fsync = true,
                v => return usage(format!("option 'fsync' takes 0 or 1, not '{v}'")),
            },
            "whiteout" => {
                self.whiteout = match text(value)?.as_str() {
                    "overlay" | "chardev" => Some(WhiteoutFormat::Overlay),
                    "aufs" | "wh" => Some(WhiteoutFormat::Aufs),
                    v => {
                        return usage(format!(
                            "option 'whiteout' takes 'overlay' or 'aufs', not '{v}'"
                        ));
                    }
                }
            }
            "threads" => {
                let v = text(value)?;
                self.threads = match v.parse::<usize>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return usage(format!("option 'threads' takes 1 to 64, not '{v}'")),
                }
            }
            "uring" => match text(value)?.as_str() {
                "on" | "1" => self.uring = true,
                "off" | "0" => self.uring = false,
                v => return usage(format!("option 'uring' takes on or off, not '{v}'")),
            },
            "threaded" => match text(value)?.as_str() {
                "0" => self.threads = 1,
                "1" => self.threads = self.threads.max(DEFAULT_THREADS),
                v => return usage(format!("option 'threaded' takes 0 or 1, not '{v}'")),
            },
            // SELinux labels: accepted; nothing to apply while SELinux is not in use.
            "context" | "fscontext" | "defcontext" | "rootcontext" => drop(text(value)?),
            // Kernel overlayfs features layerfs does not have yet: only "off" is accepted.
            "redirect_dir" => {
                let v = text(value)?;
                self.redirect_dir = Some(RedirectDir::parse(&v).ok_or_else(|| {
                    UsageError(format!(
                        "option 'redirect_dir' takes on, follow, nofollow or off, not '{v}'"
                    ))
                })?);
            }
            "metacopy" => match text(value)?.as_str() {
                "on" => self.metacopy = true,
                "off" => self.metacopy = false,
                v => return usage(format!("option 'metacopy' takes on or off, not '{v}'")),
            },
            "uuid" => match text(value)?.as_str() {
                "on" => self.uuid = Uuid::On,
                "auto" => self.uuid = Uuid::Auto,
                "null" => self.uuid = Uuid::Null,
                "off" => {
                    return usage(
                        "option 'uuid=off' (file handles without UUIDs) is not supported; uuid=null keeps no overlay UUID",
                    );
                }
                v => {
                    return usage(format!(
                        "option 'uuid' takes on, auto, null or off, not '{v}'"
                    ));
                }
            },
            "xino" => match text(value)?.as_str() {
                "on" | "auto" => self.xino = true,
                "off" => self.xino = false,
                v => return usage(format!("option 'xino' takes on, auto or off, not '{v}'")),
            },
            "index" => match text(value)?.as_str() {
                "on" => self.index = true,
                "off" => self.index = false,
                v => return usage(format!("option 'index' takes on or off, not '{v}'")),
            },
            "nfs_export" => {
                let v = text(value)?;
                if v != "off" {
                    return usage(format!("option '{key}={v}' is not supported (only 'off')"));
                }
            }
            "uidmapping" | "gidmapping" => {
                let map = IdMap::parse(&text(value)?)
                    .map_err(|e| UsageError(format!("option '{key}': {e}")))?;
                if key == "uidmapping" {
                    self.owners.uids = map;
                } else {
                    self.owners.gids = map;
                }
            }
            "squash_to_root" => {
                flag(&value)?;
                self.owners.squash_uid.get_or_insert(0);
                self.owners.squash_gid.get_or_insert(0);
            }
            "squash_to_uid" | "squash_to_gid" => {
                let v = text(value)?;
                let id = v
                    .parse::<u32>()
                    .map_err(|_| UsageError(format!("option '{key}' takes an id, not '{v}'")))?;
                if key == "squash_to_uid" {
                    self.owners.squash_uid = Some(id);
                } else {
                    self.owners.squash_gid = Some(id);
                }
            }
            "passthrough" => match text(value)?.as_str() {
                "on" | "1" => self.passthrough = Passthrough::Writes,
                "off" | "0" => self.passthrough = Passthrough::Off,
                "all" => self.passthrough = Passthrough::All,
                v => {
                    return usage(format!(
                        "option 'passthrough' takes on, off or all, not '{v}'"
                    ));
                }
            },
            "noxattrs" => match text(value)?.as_str() {
                "0" => self.xattrs = true,
                "1" => self.xattrs = false,
                v => return usage(format!("option 'noxattrs' takes 0 or 1, not '{v}'")),
            },
            "timeout" => {
                let v = text(value)?;
                self.timeout = match v.parse::<f64>() {
                    Ok(t) if t.is_finite() && (0.0..=1e9).contains(&t) => {
                        std::time::Duration::from_secs_f64(t)
                    }
                    _ => return usage(format!("option 'timeout' takes seconds, not '{v}'")),
                }
            }
            "xattr_permissions" => {
                self.xattr_permissions =
                    OverrideXattr::from_option(&text(value)?).map_err(UsageError)?;
            }
            _ if key.starts_with("x-") || key.starts_with("comment=") => {}
            _ => return usage(format!("unknown mount option '{key}'")),
        }
        Ok(())
    }

    /// Checks what the options alone can tell: layers given, within the limit.
    pub fn check(&self) -> Result<(), UsageError> {
        if self.lowers.is_empty() {
            return usage("no lower layer given (lowerdir=)");
        }
        if self.lowers.len() + self.data_lowers.len() > MAX_LOWERS {
            return usage(format!(
                "{} lower layers given; at most {MAX_LOWERS} are allowed",
                self.lowers.len() + self.data_lowers.len()
            ));
        }
        if self.upper.is_none() && self.workdir.is_some() {
            return usage("workdir given without upperdir");
        }
        if let Some(r) = self.redirect_dir
            && self.metacopy
            && r != RedirectDir::On
        {
            return usage(format!(
                "conflicting options: metacopy=on needs redirect_dir=on, not {}",
                r.name()
            ));
        }
        Ok(())
    }

    /// What `redirect_dir=` comes to: as given, else `on` under metacopy (which needs
    /// it, as on the kernel), else `off`.
    pub fn redirect(&self) -> RedirectDir {
        match (self.redirect_dir, self.metacopy) {
            (Some(r), _) => r,
            (None, true) => RedirectDir::On,
            (None, false) => RedirectDir::Off,
        }
    }
}

/// Splits an option string at commas outside double quotes; quotes are removed.
pub fn split_options(opts: &OsStr) -> Result<Vec<(String, Option<OsString>)>, UsageError> {
    let bytes = opts.as_bytes();
    if bytes.len() > 1 << 20 {
        return usage("option string too long");
    }
    let mut items = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    for &b in bytes {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => items.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    if quoted {
        return usage("unbalanced double quote in options");
    }
    items.push(cur);
    let mut out = Vec::new();
    for item in items {
        if item.is_empty() {
            continue;
        }
        let (k, v) = match item.iter().position(|&b| b == b'=') {
            Some(i) => (&item[..i], Some(OsString::from_vec(item[i + 1..].to_vec()))),
            None => (&item[..], None),
        };
        let key = std::str::from_utf8(k)
            .map_err(|_| UsageError("option name is not UTF-8".into()))?
            .to_string();
        if key.is_empty() {
            return usage("empty option name");
        }
        out.push((key, v));
    }
    Ok(out)
}

/// Splits a `lowerdir=` value at `:` (`\:` escapes one) into the lower layers and, after
/// the first `::`, the data-only layers (separated by `::` each, as on the kernel).
pub fn split_lowerdir(value: &OsStr) -> Result<(Vec<PathBuf>, Vec<PathBuf>), UsageError> {
    let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut cur = Vec::new();
    let mut data = false;
    let mut bytes = value.as_bytes().iter().peekable();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&n) => cur.push(n),
                None => cur.push(b'\\'),
            },
            b':' => {
                if cur.is_empty() {
                    return usage("empty layer name in lowerdir (check for ':::' or a stray ':')");
                }
                out.push((std::mem::take(&mut cur), data));
                if bytes.peek() == Some(&&b':') {
                    bytes.next();
                    data = true;
                } else if data {
                    return usage(
                        "a lower layer cannot follow a data-only layer in lowerdir (use '::' between data-only layers)",
                    );
                }
            }
            _ => cur.push(b),
        }
    }
    out.push((cur, data));
    if out.iter().any(|(v, _)| v.is_empty()) {
        return usage("empty layer name in lowerdir (check for ':::' or a stray ':')");
    }
    let path = |v: Vec<u8>| PathBuf::from(OsString::from_vec(v));
    let (data, lowers): (Vec<_>, Vec<_>) = out.into_iter().partition(|(_, d)| *d);
    Ok((
        lowers.into_iter().map(|(v, _)| path(v)).collect(),
        data.into_iter().map(|(v, _)| path(v)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(opts: &str) -> Result<MountSpec, UsageError> {
        let mut s = MountSpec::new("/mnt".into());
        s.apply_options(OsStr::new(opts))?;
        Ok(s)
    }

    #[test]
    fn fuse_overlayfs_form() {
        let s = spec("lowerdir=/a:/b,upperdir=/u,workdir=/w").unwrap();
        assert_eq!(s.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(s.upper, Some("/u".into()));
        assert_eq!(s.workdir, Some("/w".into()));
        assert!(s.check().is_ok());
    }

    #[test]
    fn quoted_values_keep_commas() {
        let o = split_options(OsStr::new(
            r#"lowerdir=/l,context="system_u:object_r:container_file_t:s0:c1,c2",dev"#,
        ))
        .unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(
            o[1].1.as_deref(),
            Some(OsStr::new("system_u:object_r:container_file_t:s0:c1,c2"))
        );
        assert!(spec(r#"lowerdir=/l,context="a,b""#).is_ok());
    }

    #[test]
    fn escaped_colons_and_empty_layers() {
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            split_lowerdir(OsStr::new(r"/a\:b:/c")).unwrap(),
            (p(&["/a:b", "/c"]), vec![])
        );
        assert_eq!(
            split_lowerdir(OsStr::new("/a:/b::/d1::/d2")).unwrap(),
            (p(&["/a", "/b"]), p(&["/d1", "/d2"]))
        );
        assert!(split_lowerdir(OsStr::new("/a::/d1:/b")).is_err());
        assert!(split_lowerdir(OsStr::new("/a:::/b")).is_err());
        assert!(split_lowerdir(OsStr::new(":/b")).is_err());
        assert!(split_lowerdir(OsStr::new("")).is_err());
        let s = spec("lowerdir+=/a,lowerdir+=/b,datadir+=/d").unwrap();
        assert_eq!((s.lowers, s.data_lowers), (p(&["/a", "/b"]), p(&["/d"])));
        assert!(spec("lowerdir=/a,lowerdir+=/b").is_err());
        assert!(spec("datadir+=/d,lowerdir+=/b").is_err());
        assert!(spec("lowerdir+=/b,lowerdir=/a").is_err());
    }

    #[test]
    fn generic_options() {
        let s =
            spec("lowerdir=/a,ro,dev,suid,noexec,noatime,allow_other,fsname=x,subtype=y").unwrap();
        assert!(s.read_only && !s.exec && s.allow_other);
        assert_eq!((s.dev, s.suid), (Some(true), Some(true)));
        assert_eq!(s.atime, Some(Atime::Never));
        assert_eq!(s.fsname.as_deref(), Some("x"));
        assert!(spec("lowerdir=/a,default_permissions,nodev,nosuid,rw,exec,atime").is_ok());
    }

    #[test]
    fn defaults_for_root_and_other_users() {
        let s = spec("lowerdir=/a").unwrap();
        let root = s.flags(true);
        assert_eq!(
            root,
            MountFlags {
                read_only: false,
                dev: true,
                suid: true,
                exec: true,
                atime: Atime::Never,
                nodiratime: false,
                access: Access::All,
            }
        );
        let user = s.flags(false);
        assert_eq!((user.dev, user.suid), (false, false));
        assert_eq!((user.atime, user.access), (Atime::Never, Access::Owner));
        assert!(s.check_unprivileged(None).is_ok());
        // Explicit options win over the defaults.
        let s = spec("lowerdir=/a,nosuid,nodev,noexec,strictatime").unwrap();
        let root = s.flags(true);
        assert!(!root.dev && !root.suid && !root.exec);
        assert_eq!(root.atime, Atime::Strict);
        assert_eq!(
            spec("lowerdir=/a,noatime,atime").unwrap().flags(true).atime,
            Atime::Relative
        );
        assert_eq!(
            spec("lowerdir=/a,allow_root").unwrap().flags(false).access,
            Access::RootAndOwner
        );
        assert_eq!(
            spec("lowerdir=/a,allow_other").unwrap().flags(false).access,
            Access::All
        );
    }

    #[test]
    fn what_other_users_may_ask_for() {
        let other = spec("lowerdir=/a,allow_other").unwrap();
        let e = other.check_unprivileged(None).unwrap_err();
        assert!(e.0.contains("user_allow_other"), "{e}");
        assert!(
            other
                .check_unprivileged(Some("# user_allow_other\n"))
                .is_err()
        );
        assert!(
            other
                .check_unprivileged(Some("mount_max = 9\nuser_allow_other\n"))
                .is_ok()
        );
        assert!(
            spec("lowerdir=/a,suid")
                .unwrap()
                .check_unprivileged(Some("user_allow_other"))
                .is_err()
        );
        assert!(
            spec("lowerdir=/a,dev")
                .unwrap()
                .check_unprivileged(None)
                .is_err()
        );
        assert!(
            spec("lowerdir=/a,nosuid,nodev")
                .unwrap()
                .check_unprivileged(None)
                .is_ok()
        );
    }

    #[test]
    fn mistakes_are_errors() {
        assert!(spec("lowerdir=/a,upperdri=/u").is_err());
        assert!(spec("lowerdir=/a,ro=1").is_err());
        assert!(spec(r#"lowerdir=/a,context="x"#).is_err());
        assert!(spec("lowerdir=/a,fsync=2").is_err());
        assert!(spec("lowerdir=/a,=x").is_err());
        assert!(spec("lowerdir=/a,uidmapping=0:1").is_err());
        assert!(spec("lowerdir=/a,timeout=-1").is_err());
        assert!(spec("lowerdir=/a,squash_to_uid=x").is_err());
        assert!(spec("lowerdir=/a,xattr_permissions=3").is_err());
        assert!(spec("lowerdir=/a,xattr_permissions").is_err());
        assert!(spec("lowerdir=/a,passthrough=maybe").is_err());
        assert_eq!(
            spec("lowerdir=/a,passthrough=off").unwrap().passthrough,
            Passthrough::Off
        );
        assert_eq!(
            spec("lowerdir=/a,passthrough=all").unwrap().passthrough,
            Passthrough::All
        );
        assert_eq!(
            spec("lowerdir=/a").unwrap().passthrough,
            Passthrough::Writes
        );
        assert!(spec("lowerdir=/a,redirect_dir=maybe").is_err());
        assert!(spec("lowerdir=/a,index=on").unwrap().index);
        assert!(!spec("lowerdir=/a,index=off").unwrap().index);
        assert!(spec("lowerdir=/a,index=maybe").is_err());
        assert!(spec("lowerdir=/a,nfs_export=on").is_err());
        assert_eq!(spec("lowerdir=/a").unwrap().uuid, Uuid::Auto);
        assert_eq!(spec("lowerdir=/a,uuid=on").unwrap().uuid, Uuid::On);
        assert_eq!(spec("lowerdir=/a,uuid=null").unwrap().uuid, Uuid::Null);
        assert!(spec("lowerdir=/a,uuid=off").is_err());
        assert!(spec("lowerdir=/a,uuid=x").is_err());
        assert_eq!(
            spec("lowerdir=/a,redirect_dir=on").unwrap().redirect(),
            RedirectDir::On
        );
        assert_eq!(spec("lowerdir=/a").unwrap().redirect(), RedirectDir::Off);
        let meta = spec("lowerdir=/a,metacopy=on").unwrap();
        assert!(meta.metacopy);
        assert_eq!(meta.redirect(), RedirectDir::On);
        assert!(spec("lowerdir=/a,metacopy=on,redirect_dir=on").is_ok());
        let conflict = spec("lowerdir=/a,metacopy=on,redirect_dir=follow").unwrap();
        assert!(conflict.check().is_err());
        assert!(spec("lowerdir=/a,metacopy=maybe").is_err());
        assert!(spec("lowerdir=/a,xino=auto").unwrap().xino);
        assert!(!spec("lowerdir=/a,xino=off").unwrap().xino);
        assert!(spec("lowerdir=/a,xino=maybe").is_err());
        assert!(spec("upperdir=/u").unwrap().check().is_err());
    }

    #[test]
    fn layer_limit() {
        let many: Vec<String> = (0..=MAX_LOWERS).map(|i| format!("/l{i}")).collect();
        let s = spec(&format!("lowerdir={}", many.join(":"))).unwrap();
        assert!(s.check().is_err());
    }

    #[test]
    fn container_engine_options() {
        let s = spec("lowerdir=/a,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,squash_to_gid=5,noxattrs=1,timeout=30,threaded=0").unwrap();
        assert_eq!(s.owners.uids.show(1), 100000);
        assert_eq!(s.owners.gids.show(0), 1000);
        assert_eq!(s.owners.squash_gid, Some(5));
        assert!(!s.xattrs);
        assert_eq!(s.timeout, std::time::Duration::from_secs(30));
        assert_eq!(s.threads, 1);
        let x = spec("lowerdir=/a,xattr_permissions=2").unwrap();
        assert_eq!(x.xattr_permissions, Some(OverrideXattr::Containers));
        let x = spec("lowerdir=/a,xattr_permissions=1,xattr_permissions=0").unwrap();
        assert_eq!(x.xattr_permissions, None);
        let r = spec("lowerdir=/a,squash_to_root").unwrap();
        assert_eq!(
            (r.owners.squash_uid, r.owners.squash_gid),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn volatile_and_whiteout() {
        let s = spec("lowerdir=/a,volatile,whiteout=aufs").unwrap();
        assert!(s.volatile && !s.fsync);
        assert_eq!(s.whiteout, Some(WhiteoutFormat::Aufs));
    }

    #[test]
    fn long_messages_stay_one_short_line() {
        let e = UsageError(format!("unknown option '{}'\nsecond", "a".repeat(100_000)));
        let shown = e.to_string();
        assert!(shown.len() < 500 && !shown.contains('\n'), "{shown}");
        assert!(shown.starts_with("unknown option 'aaa") && shown.ends_with("\\nsecond"));
        assert_eq!(UsageError("short".into()).to_string(), "short");
    }
}
