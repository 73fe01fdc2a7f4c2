//! The FUSE wire format for the io_uring transport (fuser reads and writes it for
//! /dev/fuse): a request's header and arguments decoded into an [`Op`], and replies
//! encoded into a payload buffer. Layouts are the kernel's `include/uapi/linux/fuse.h`
//! (protocol 7.41); every number is native-endian.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::union::Attr;

use super::attrs::encode_dev;

/// `struct fuse_in_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

pub(super) const IN_HEADER_LEN: usize = 40;

fn u16at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl InHeader {
    pub fn parse(b: &[u8]) -> Option<InHeader> {
        // A request with extensions (security context, groups) was not negotiated.
        if u16at(b, 36)? != 0 {
            return None;
        }
        Some(InHeader {
            len: u32at(b, 0)?,
            opcode: u32at(b, 4)?,
            unique: u64at(b, 8)?,
            nodeid: u64at(b, 16)?,
            uid: u32at(b, 24)?,
            gid: u32at(b, 28)?,
            pid: u32at(b, 32)?,
        })
    }
}

/// `struct fuse_setattr_in`, as far as layerfs acts on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SetattrIn {
    pub valid: u32,
    pub fh: u64,
    pub size: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub(super) const FATTR_MODE: u32 = 1 << 0;
pub(super) const FATTR_UID: u32 = 1 << 1;
pub(super) const FATTR_GID: u32 = 1 << 2;
pub(super) const FATTR_SIZE: u32 = 1 << 3;
pub(super) const FATTR_ATIME: u32 = 1 << 4;
pub(super) const FATTR_MTIME: u32 = 1 << 5;
pub(super) const FATTR_FH: u32 = 1 << 6;
pub(super) const FATTR_ATIME_NOW: u32 = 1 << 7;
pub(super) const FATTR_MTIME_NOW: u32 = 1 << 8;

/// `FUSE_WRITE_KILL_SUIDGID` in `fuse_write_in.write_flags`.
pub(super) const WRITE_KILL_SUIDGID: u32 = 1 << 2;

/// A decoded request: what the kernel asks, with borrowed names and data.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Op<'a> {
    Lookup {
        name: &'a OsStr,
    },
    Getattr {
        fh: Option<u64>,
    },
    Setattr(SetattrIn),
    Readlink,
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    Mknod {
        name: &'a OsStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    },
    Mkdir {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        name: &'a OsStr,
        newdir: u64,
        newname: &'a OsStr,
        flags: u32,
    },
    Link {
        old: u64,
        newname: &'a OsStr,
    },
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
        write_flags: u32,
    },
    Statfs,
    Release {
        fh: u64,
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Setxattr {
        name: &'a OsStr,
        value: &'a [u8],
        flags: i32,
    },
    Getxattr {
        name: &'a OsStr,
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Flush,
    Opendir,
    Readdir {
        fh: u64,
        offset: u64,
        size: u32,
        plus: bool,
    },
    Releasedir {
        fh: u64,
    },
    Fsyncdir,
    Access,
    Create {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
        flags: u32,
    },
    Fallocate {
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    },
    Destroy,
    /// Not served (locks, ioctl, poll, lseek, copy_file_range, statx, tmpfile, ...):
    /// ENOSYS, after which the kernel does without it.
    Unsupported(u32),
}

/// The NUL-terminated names at the start of `b`: `n` of them, then what follows.
fn names<const N: usize>(b: &[u8]) -> Option<([&OsStr; N], &[u8])> {
    let mut out = [OsStr::new(""); N];
    let mut rest = b;
    for slot in &mut out {
        let end = rest.iter().position(|&c| c == 0)?;
        *slot = OsStr::from_bytes(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Some((out, rest))
}

fn name(b: &[u8]) -> Option<&OsStr> {
    names::<1>(b).map(|([n], _)| n)
}

impl<'a> Op<'a> {
    /// Decodes request `opcode` from its first argument `arg` (the per-op struct, empty for
    /// some) and the rest of its arguments `rest` (names, data); `None` if malformed.
    pub fn decode(opcode: u32, arg: &'a [u8], rest: &'a [u8]) -> Option<Op<'a>> {
        let a = arg;
        Some(match opcode {
            1 => Op::Lookup { name: name(rest)? },
            3 => Op::Getattr {
                fh: (u32at(a, 0)? & 1 != 0).then_some(u64at(a, 8)?),
            },
            4 => Op::Setattr(SetattrIn {
                valid: u32at(a, 0)?,
                fh: u64at(a, 8)?,
                size: u64at(a, 16)?,
                atime: (u64at(a, 32)? as i64, u32at(a, 56)?),
                mtime: (u64at(a, 40)? as i64, u32at(a, 60)?),
                mode: u32at(a, 68)?,
                uid: u32at(a, 76)?,
                gid: u32at(a, 80)?,
            }),
            5 => Op::Readlink,
            6 => {
                let ([name, target], _) = names::<2>(rest)?;
                Op::Symlink { name, target }
            }
            8 => Op::Mknod {
                name: name(rest)?,
                mode: u32at(a, 0)?,
                rdev: u32at(a, 4)?,
                umask: u32at(a, 8)?,
            },
            9 => Op::Mkdir {
                name: name(rest)?,
                mode: u32at(a, 0)?,
                umask: u32at(a, 4)?,
            },
            10 => Op::Unlink { name: name(rest)? },
            11 => Op::Rmdir { name: name(rest)? },
            12 | 45 => {
                let ([name, newname], _) = names::<2>(rest)?;
                let flags = if opcode == 45 { u32at(a, 8)? } else { 0 };
                Op::Rename {
                    name,
                    newdir: u64at(a, 0)?,
                    newname,
                    flags,
                }
            }
            13 => Op::Link {
                old: u64at(a, 0)?,
                newname: name(rest)?,
            },
            14 => Op::Open {
                flags: u32at(a, 0)?,
            },
            15 => Op::Read {
                fh: u64at(a, 0)?,
                offset: u64at(a, 8)?,
                size: u32at(a, 16)?,
            },
            16 => {
                let size = u32at(a, 16)? as usize;
                Op::Write {
                    fh: u64at(a, 0)?,
                    offset: u64at(a, 8)?,
                    data: rest.get(..size)?,
                    write_flags: u32at(a, 20)?,
                }
            }
            17 => Op::Statfs,
            18 => Op::Release { fh: u64at(a, 0)? },
            20 => Op::Fsync {
                fh: u64at(a, 0)?,
                datasync: u32at(a, 8)? & 1 != 0,
            },
            21 => {
                let size = u32at(a, 0)? as usize;
                let ([name], value) = names::<1>(rest)?;
                Op::Setxattr {
                    name,
                    value: value.get(..size)?,
                    flags: u32at(a, 4)? as i32,
                }
            }
            22 => Op::Getxattr {
                name: name(rest)?,
                size: u32at(a, 0)?,
            },
            23 => Op::Listxattr { size: u32at(a, 0)? },
            24 => Op::Removexattr { name: name(rest)? },
            25 => Op::Flush,
            27 => Op::Opendir,
            28 | 44 => Op::Readdir {
                fh: u64at(a, 0)?,
                offset: u64at(a, 8)?,
                size: u32at(a, 16)?,
                plus: opcode == 44,
            },
            29 => Op::Releasedir { fh: u64at(a, 0)? },
            30 => Op::Fsyncdir,
            34 => Op::Access,
            35 => Op::Create {
                name: name(rest)?,
                flags: u32at(a, 0)?,
                mode: u32at(a, 4)?,
                umask: u32at(a, 8)?,
            },
            43 => Op::Fallocate {
                fh: u64at(a, 0)?,
                offset: u64at(a, 8)?,
                length: u64at(a, 16)?,
                mode: u32at(a, 24)? as i32,
            },
            38 => Op::Destroy,
            other => Op::Unsupported(other),
        })
    }
}

/// Appends native-endian numbers to a reply.
struct Out<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.buf
            .get_mut(self.at..self.at + bytes.len())?
            .copy_from_slice(bytes);
        self.at += bytes.len();
        Some(())
    }
    fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }
    fn u64(&mut self, v: u64) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }
}

/// `struct fuse_attr` (88 bytes).
fn attr(o: &mut Out<'_>, ino: u64, a: Option<&Attr>) -> Option<()> {
    let Some(a) = a else {
        return o.put(&[0u8; 88]);
    };
    let st = &a.st;
    o.u64(ino)?;
    o.u64(st.st_size as u64)?;
    o.u64(st.st_blocks as u64)?;
    o.u64(st.st_atime as u64)?;
    o.u64(st.st_mtime as u64)?;
    o.u64(st.st_ctime as u64)?;
    o.u32(st.st_atime_nsec as u32)?;
    o.u32(st.st_mtime_nsec as u32)?;
    o.u32(st.st_ctime_nsec as u32)?;
    o.u32(st.st_mode)?;
    o.u32(st.st_nlink as u32)?;
    o.u32(st.st_uid)?;
    o.u32(st.st_gid)?;
    o.u32(encode_dev(st.st_rdev))?;
    o.u32(st.st_blksize as u32)?;
    o.u32(0)
}

/// What a readdirplus entry of a [`DirOut`] carries (see `ops::Plus`).
pub(super) enum Listing<'a> {
    Dot,
    Node(&'a Attr),
    NoNode,
}

/// `struct fuse_entry_out` (128 bytes): `a` under node `a.ino`, or node 0 (a negative
/// entry) for `None`.
fn entry(o: &mut Out<'_>, a: Option<&Attr>, entry_ttl: Duration, attr_ttl: Duration) -> Option<()> {
    o.u64(a.map_or(0, |a| a.ino))?;
    o.u64(a.map_or(0, |a| a.generation))?;
    o.u64(entry_ttl.as_secs())?;
    o.u64(attr_ttl.as_secs())?;
    o.u32(entry_ttl.subsec_nanos())?;
    o.u32(attr_ttl.subsec_nanos())?;
    attr(o, a.map_or(0, |a| a.ino), a)
}

/// Reply encoders: each writes a reply's body into `buf` and returns its length.
pub(super) fn entry_out(
    buf: &mut [u8],
    a: Option<&Attr>,
    entry_ttl: Duration,
    attr_ttl: Duration,
) -> usize {
    let mut o = Out { buf, at: 0 };
    entry(&mut o, a, entry_ttl, attr_ttl).map_or(0, |()| o.at)
}

pub(super) fn attr_out(buf: &mut [u8], a: &Attr, ttl: Duration) -> usize {
    let mut o = Out { buf, at: 0 };
    let r = (|| {
        o.u64(ttl.as_secs())?;
        o.u32(ttl.subsec_nanos())?;
        o.u32(0)?;
        attr(&mut o, a.ino, Some(a))
    })();
    r.map_or(0, |()| o.at)
}

/// `struct fuse_open_out`: the handle, FOPEN_* flags and a backing id (0: none).
pub(super) fn open_out(buf: &mut [u8], fh: u64, flags: u32, backing_id: u32) -> usize {
    let mut o = Out { buf, at: 0 };
    let r = (|| {
        o.u64(fh)?;
        o.u32(flags)?;
        o.u32(backing_id)
    })();
    r.map_or(0, |()| o.at)
}

/// `struct fuse_entry_out` then `struct fuse_open_out`.
pub(super) fn create_out(
    buf: &mut [u8],
    a: &Attr,
    ttl: Duration,
    fh: u64,
    flags: u32,
    backing_id: u32,
) -> usize {
    let n = entry_out(buf, Some(a), ttl, ttl);
    n + open_out(&mut buf[n..], fh, flags, backing_id)
}

/// `struct fuse_write_out`, or `struct fuse_getxattr_out` (a size and padding).
pub(super) fn size_out(buf: &mut [u8], size: u32) -> usize {
    let mut o = Out { buf, at: 0 };
    (|| {
        o.u32(size)?;
        o.u32(0)
    })()
    .map_or(0, |()| o.at)
}

/// `struct fuse_statfs_out`.
pub(super) fn statfs_out(buf: &mut [u8], s: &libc::statfs) -> usize {
    let mut o = Out { buf, at: 0 };
    let r = (|| {
        for v in [s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree] {
            o.u64(v)?;
        }
        for v in [s.f_bsize as u32, s.f_namelen as u32, s.f_frsize as u32, 0] {
            o.u32(v)?;
        }
        o.put(&[0u8; 24])
    })();
    r.map_or(0, |()| o.at)
}

/// Fills a READDIR or READDIRPLUS reply of at most `buf.len()` bytes.
pub(super) struct DirOut<'b> {
    out: Out<'b>,
}

impl<'b> DirOut<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        DirOut {
            out: Out { buf, at: 0 },
        }
    }

    /// Adds `struct fuse_dirent` (`plus`: `struct fuse_direntplus`, with `a` under the
    /// TTLs); false when it does not fit (nothing of it is written then).
    pub fn add(
        &mut self,
        ino: u64,
        next: u64,
        mode: u32,
        name: &OsStr,
        plus: Option<(Listing<'_>, Duration, Duration)>,
    ) -> bool {
        let n = name.as_bytes();
        let dirent = (24 + n.len()).next_multiple_of(8);
        let len = dirent + if plus.is_some() { 128 } else { 0 };
        if self.out.at + len > self.out.buf.len() {
            return false;
        }
        let start = self.out.at;
        let r = (|| {
            if let Some((a, entry_ttl, attr_ttl)) = plus {
                match a {
                    Listing::Node(a) => entry(&mut self.out, Some(a), entry_ttl, attr_ttl)?,
                    // Node id 0: the kernel links nothing (it looks the name up when used).
                    Listing::NoNode => entry(&mut self.out, None, entry_ttl, attr_ttl)?,
                    // `.` and `..`: the kernel ignores their attributes.
                    Listing::Dot => {
                        self.out.u64(ino)?;
                        self.out.put(&[0u8; 32])?;
                        self.out.u64(ino)?;
                        self.out.put(&[0u8; 52])?;
                        self.out.u32(libc::S_IFDIR)?;
                        self.out.put(&[0u8; 24])?;
                    }
                }
            }
            self.out.u64(ino)?;
            self.out.u64(next)?;
            self.out.u32(n.len() as u32)?;
            self.out.u32((mode & libc::S_IFMT) >> 12)?;
            self.out.put(n)?;
            self.out.put(&[0u8; 8][..start + len - self.out.at])
        })();
        debug_assert!(r.is_some());
        true
    }

    pub fn len(&self) -> usize {
        self.out.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_of(ino: u64, mode: u32) -> Attr {
        use std::os::fd::AsFd;
        let root = std::fs::File::open("/").unwrap();
        let mut st = crate::sys::fstat(root.as_fd()).unwrap();
        st.st_mode = mode;
        st.st_size = 5;
        st.st_nlink = 1;
        st.st_mtime = -2;
        st.st_mtime_nsec = 7;
        Attr {
            ino,
            generation: 3,
            st,
            uncached_name: false,
            times_unseen: false,
        }
    }

    #[test]
    fn decodes_requests_with_names_and_data() {
        let mut hdr = vec![0u8; 40];
        hdr[0..4].copy_from_slice(&46u32.to_ne_bytes());
        hdr[4..8].copy_from_slice(&1u32.to_ne_bytes());
        hdr[8..16].copy_from_slice(&9u64.to_ne_bytes());
        hdr[16..24].copy_from_slice(&1u64.to_ne_bytes());
        hdr[24..28].copy_from_slice(&1000u32.to_ne_bytes());
        let h = InHeader::parse(&hdr).unwrap();
        assert_eq!((h.opcode, h.unique, h.nodeid, h.uid), (1, 9, 1, 1000));
        hdr[36] = 8;
        assert_eq!(
            InHeader::parse(&hdr),
            None,
            "extensions were not negotiated"
        );

        assert_eq!(
            Op::decode(1, &[], b"abc\0"),
            Some(Op::Lookup {
                name: OsStr::new("abc")
            })
        );
        assert_eq!(Op::decode(1, &[], b"abc"), None, "a name must end in NUL");
        let mut rename2 = vec![0u8; 16];
        rename2[0..8].copy_from_slice(&7u64.to_ne_bytes());
        rename2[8..12].copy_from_slice(&(libc::RENAME_NOREPLACE).to_ne_bytes());
        assert_eq!(
            Op::decode(45, &rename2, b"a\0b\0"),
            Some(Op::Rename {
                name: OsStr::new("a"),
                newdir: 7,
                newname: OsStr::new("b"),
                flags: libc::RENAME_NOREPLACE
            })
        );
        let mut write = vec![0u8; 40];
        write[0..8].copy_from_slice(&4u64.to_ne_bytes());
        write[8..16].copy_from_slice(&100u64.to_ne_bytes());
        write[16..20].copy_from_slice(&3u32.to_ne_bytes());
        write[20..24].copy_from_slice(&WRITE_KILL_SUIDGID.to_ne_bytes());
        assert_eq!(
            Op::decode(16, &write, b"xyzzy"),
            Some(Op::Write {
                fh: 4,
                offset: 100,
                data: b"xyz",
                write_flags: WRITE_KILL_SUIDGID
            })
        );
        assert_eq!(
            Op::decode(16, &write, b"xy"),
            None,
            "data shorter than its size"
        );
        let mut setx = vec![0u8; 8];
        setx[0..4].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(
            Op::decode(21, &setx, b"user.a\0hi"),
            Some(Op::Setxattr {
                name: OsStr::new("user.a"),
                value: b"hi",
                flags: 0
            })
        );
        assert_eq!(Op::decode(31, &[], &[]), Some(Op::Unsupported(31)));
    }

    #[test]
    fn encodes_entries_attributes_and_listings() {
        let a = attr_of(42, libc::S_IFREG | 0o644);
        let mut buf = [0u8; 256];
        let ttl = Duration::new(5, 6);
        assert_eq!(entry_out(&mut buf, Some(&a), ttl, ttl), 128);
        assert_eq!(u64at(&buf, 0), Some(42));
        assert_eq!(u64at(&buf, 8), Some(3));
        assert_eq!(u64at(&buf, 16), Some(5));
        assert_eq!(u32at(&buf, 32), Some(6));
        assert_eq!(u64at(&buf, 40), Some(42), "attr.ino");
        assert_eq!(u64at(&buf, 48), Some(5), "attr.size");
        assert_eq!(u64at(&buf, 40 + 32), Some(-2i64 as u64), "attr.mtime");
        assert_eq!(u32at(&buf, 40 + 52), Some(7), "attr.mtimensec");
        assert_eq!(
            u32at(&buf, 40 + 60),
            Some(libc::S_IFREG | 0o644),
            "attr.mode"
        );
        assert_eq!(entry_out(&mut buf, None, ttl, ttl), 128);
        assert_eq!(u64at(&buf, 0), Some(0), "a negative entry is node 0");
        assert_eq!(attr_out(&mut buf, &a, ttl), 104);
        assert_eq!(create_out(&mut buf, &a, ttl, 9, 2, 5), 144);
        assert_eq!(
            (u64at(&buf, 128), u32at(&buf, 136), u32at(&buf, 140)),
            (Some(9), Some(2), Some(5))
        );
        assert_eq!(
            open_out(&mut buf[..8], 1, 0, 0),
            0,
            "too small a buffer writes nothing"
        );

        let mut dir = [0u8; 64];
        let mut d = DirOut::new(&mut dir);
        assert!(d.add(42, 1, libc::S_IFDIR, OsStr::new("abc"), None));
        assert_eq!(d.len(), 32);
        assert!(d.add(43, 2, libc::S_IFREG, OsStr::new("defg"), None));
        assert_eq!(d.len(), 64);
        assert!(!d.add(44, 3, libc::S_IFREG, OsStr::new("h"), None), "full");
        assert_eq!(u32at(&dir, 20), Some(libc::DT_DIR as u32));
        assert_eq!(&dir[24..27], b"abc");
        let mut plus = [0u8; 512];
        let mut d = DirOut::new(&mut plus);
        assert!(d.add(
            42,
            1,
            a.st.st_mode,
            OsStr::new("f"),
            Some((Listing::Node(&a), ttl, ttl))
        ));
        assert_eq!(d.len(), 128 + 32);
        assert!(d.add(
            1,
            2,
            libc::S_IFDIR,
            OsStr::new(".."),
            Some((Listing::Dot, ttl, ttl))
        ));
        assert_eq!(d.len(), 2 * (128 + 32));
        assert_eq!(u64at(&plus, 0), Some(42));
        assert_eq!(u64at(&plus, 128), Some(42), "the dirent's ino");
        let dots = &plus[160..];
        assert_eq!(u64at(dots, 40), Some(1), "attr.ino of ..");
        assert_eq!(u32at(dots, 40 + 60), Some(libc::S_IFDIR), "attr.mode of ..");
        assert_eq!(u64at(dots, 128), Some(1));
        assert_eq!(&dots[152..154], b"..");
    }
}
