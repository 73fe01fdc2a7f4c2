//! Property tests of every parser of on-disk formats that a layer or the work directory
//! feeds the daemon (a crafted image is input, not trusted state): seeded random, overlong
//! and mutated values never make a parser panic, whatever it accepts encodes back to
//! itself, and a redirect it accepts never leads out of a layer. The seed of a failing
//! case is in the panic message; `LAYERFS_FUZZ_CASES` sets how many cases (default
//! 20,000 a parser).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Component;

use crate::index::{self, Nlink};
use crate::inode::LowerAt;
use crate::origin::Origin;
use crate::redirect;
use crate::statoverride::StatOverride;
use crate::whiteout;

/// xorshift64*: small, seeded, enough to spread cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Bytes of a length up to `max` (sometimes far beyond what any format holds), drawn
    /// from the bytes a format's values are made of, or from all of them.
    fn bytes(&mut self, max: u64, alphabet: &[u8]) -> Vec<u8> {
        let len = match self.below(8) {
            0 => self.below(5000),
            _ => self.below(max + 1),
        };
        let any = self.below(3) == 0;
        (0..len)
            .map(|_| {
                if any || alphabet.is_empty() {
                    self.next() as u8
                } else {
                    alphabet[self.below(alphabet.len() as u64) as usize]
                }
            })
            .collect()
    }

    /// `v` with a few bytes flipped, inserted, removed or duplicated.
    fn mutate(&mut self, mut v: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.below(4) {
            let at = self.below(v.len() as u64 + 1) as usize;
            match self.below(4) {
                0 if at < v.len() => v[at] ^= 1 << self.below(8),
                1 => v.insert(at, self.next() as u8),
                2 if at < v.len() => drop(v.remove(at)),
                _ => {
                    let tail = v[at..].to_vec();
                    v.extend_from_slice(&tail);
                }
            }
        }
        v
    }
}

fn cases() -> u64 {
    std::env::var("LAYERFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Runs `check` on `cases()` seeded generators; a panic names the seed.
fn each_seed(what: &str, check: impl Fn(&mut Rng) + std::panic::RefUnwindSafe) {
    for seed in 1..=cases() {
        let r =
            std::panic::catch_unwind(|| check(&mut Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: seed {seed}: {msg}");
        }
    }
}

fn valid_origin(r: &mut Rng) -> Vec<u8> {
    let handle = r.bytes(40, &[]);
    let mut v = vec![0u8, 0xfb, (21 + handle.len()) as u8, 0, r.next() as u8];
    v.extend((0..16).map(|_| r.next() as u8));
    v.extend_from_slice(&handle);
    v
}

#[test]
fn origins_and_index_names() {
    each_seed("origin", |r| {
        let v = match r.below(3) {
            0 => r.bytes(300, &[]),
            _ => {
                let v = valid_origin(r);
                r.mutate(v)
            }
        };
        if let Some(o) = Origin::decode(&v) {
            assert_eq!(Origin::decode(&o.encode()), Some(o), "{v:?}");
        }
        let name = index::entry_name(&v);
        let back = index::entry_origin(&name);
        assert_eq!(back.is_some(), Origin::decode(&v).is_some(), "{v:?}");
        let crafted = r.bytes(600, b"0123456789abcdefABCDEF#.");
        if let Some(o) = index::entry_origin(OsStr::from_bytes(&crafted)) {
            assert!(Origin::decode(&o).is_some());
        }
    });
}

#[test]
fn link_counts() {
    each_seed("nlink", |r| {
        let v = match r.below(3) {
            0 => r.bytes(40, b"UL+-0123456789"),
            1 => format!("U{:+}", r.next() as i64).into_bytes(),
            _ => format!("L{:+}", r.next() as i64).into_bytes(),
        };
        if let Some(n) = Nlink::decode(&v) {
            assert_eq!(Nlink::decode(n.encode().as_bytes()), Some(n));
            let counted = n.count(r.next(), r.next());
            assert!(counted.is_none_or(|c| c > 0));
        }
    });
}

#[test]
fn stat_overrides() {
    each_seed("override", |r| {
        let v = match r.below(3) {
            0 => r.bytes(60, b"0123456789:abcdefiklnoprstuw-\0"),
            _ => {
                let kind = [
                    "",
                    ":file",
                    ":dir",
                    ":symlink",
                    ":pipe",
                    ":socket",
                    ":block-8-1",
                    ":char-1-3",
                ];
                let k = kind[r.below(kind.len() as u64) as usize];
                let v = format!(
                    "{}:{}:0{:o}{k}",
                    r.next() as u32,
                    r.next() as u32,
                    r.below(0o10000)
                );
                r.mutate(v.into_bytes())
            }
        };
        if let Some(o) = StatOverride::parse(&v) {
            assert!(o.mode <= 0o7777);
            assert_eq!(StatOverride::parse(&o.encode()), Some(o), "{v:?}");
        }
    });
}

#[test]
fn redirects_never_lead_out_of_a_layer() {
    each_seed("redirect", |r| {
        let v = match r.below(3) {
            0 => r.bytes(4100, b"/.a"),
            1 => r.bytes(300, &[]),
            _ => {
                let v = b"/a/b/../c".to_vec();
                r.mutate(v)
            }
        };
        if !redirect::valid(&v) {
            return;
        }
        let from = [LowerAt::Name("x".into()), LowerAt::Path("p/q".into())];
        for at in &from {
            let to = redirect::follow(at, OsStr::from_bytes(&v));
            let path = match &to {
                LowerAt::Name(n) => std::path::PathBuf::from(n),
                LowerAt::Path(p) => p.clone(),
            };
            for c in path.components() {
                assert!(matches!(c, Component::Normal(_)), "{v:?} led to {path:?}");
            }
        }
    });
}

#[test]
fn whiteout_names() {
    each_seed("whiteout", |r| {
        let mut v = r.bytes(300, b".wh");
        if r.below(2) == 0 {
            let mut named = b".wh.".to_vec();
            named.append(&mut v);
            v = named;
        }
        let name = OsStr::from_bytes(&v);
        let (_, about) = whiteout::classify(name, r.below(2) == 0);
        assert!(name.as_bytes().ends_with(about.as_bytes()));
        if let Some(t) = whiteout::aufs_target(name) {
            assert!(!t.is_empty());
            assert_eq!(whiteout::aufs_name(t), name);
        }
    });
}
