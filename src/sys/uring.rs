//! FUSE over io_uring, the kernel side of it: one queue per CPU of ring entries, each a
//! header buffer and a payload buffer registered with the kernel. The kernel writes a
//! request into a free entry of the queue of the CPU the request came from and completes
//! that entry's command; the daemon answers in the same buffers and commits, which also
//! hands the entry back for the next request. Also the FUSE device's backing-file ioctls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// `struct fuse_uring_req_header`: `in_out` (the in or out header), `op_in` (the
/// request's first argument), `ring_ent_in_out` (the entry's commit id and payload size).
pub const HEADER_LEN: usize = 384;
/// Where `op_in` starts in the header buffer.
pub const OP_IN: usize = 128;
/// `ring_ent_in_out.commit_id` and `.payload_sz`.
const COMMIT_ID: usize = 256 + 8;
const PAYLOAD_SZ: usize = 256 + 16;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// One registered entry: the buffers the kernel reads and writes (never moved while the
/// ring lives: boxed, and the payload never resized).
struct Slot {
    header: Box<[u8; HEADER_LEN]>,
    payload: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
}

/// The entries of one queue and the io_uring that carries their commands.
pub struct FuseQueue {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: OwnedFd,
    qid: u16,
    slots: Vec<Slot>,
}

impl FuseQueue {
    /// A queue `qid` of `depth` entries with payloads of `payload_len` bytes, registered
    /// with the FUSE connection of `dev` (the kernel routes requests to the ring once every
    /// CPU's queue has an entry).
    pub fn register(dev: OwnedFd, qid: u16, depth: usize, payload_len: usize) -> io::Result<Self> {
        let ring = IoUring::builder().build(2 * depth as u32)?;
        let slots = (0..depth)
            .map(|_| {
                let mut header = Box::new([0u8; HEADER_LEN]);
                let mut payload = vec![0u8; payload_len].into_boxed_slice();
                let iov = Box::new([
                    libc::iovec {
                        iov_base: header.as_mut_ptr().cast(),
                        iov_len: HEADER_LEN,
                    },
                    libc::iovec {
                        iov_base: payload.as_mut_ptr().cast(),
                        iov_len: payload_len,
                    },
                ]);
                Slot {
                    header,
                    payload,
                    iov,
                }
            })
            .collect();
        let mut q = FuseQueue {
            ring,
            dev,
            qid,
            slots,
        };
        for i in 0..depth {
            q.push(CMD_REGISTER, i, 0)?;
        }
        q.ring.submit()?;
        Ok(q)
    }

    /// Queues the command `op` for entry `i` (submitted with the next wait).
    fn push(&mut self, op: u32, i: usize, commit_id: u64) -> io::Result<()> {
        // `struct fuse_uring_cmd_req`: flags, commit_id, qid.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev.as_raw_fd()), op)
            .cmd(cmd)
            .addr(Some(self.slots[i].iov.as_ptr() as u64))
            .build()
            .user_data(i as u64);
        // SAFETY: Entry128 is the kernel's 128-byte SQE (repr(C)); the FUSE command reads
        // its iovec count from `len` (offset 24), which the builder has no setter for.
        let sqe = unsafe {
            let mut raw: [u8; 128] = std::mem::transmute(sqe);
            raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
            std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
        };
        loop {
            // SAFETY: the iovecs and the buffers they point to live as long as the ring
            // (they are dropped after it, with `self`) and do not move.
            match unsafe { self.ring.submission().push(&sqe) } {
                Ok(()) => return Ok(()),
                Err(_) => {
                    self.ring.submit()?;
                }
            }
        }
    }

    /// Submits the queued commits and waits for requests: the entries that hold one,
    /// each with its result (negative: the entry is finished, e.g. at unmount).
    pub fn wait(&mut self, done: &mut Vec<(usize, i32)>) -> io::Result<()> {
        done.clear();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        done.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        Ok(())
    }

    /// Entry `i`'s request: the header buffer and the payload (its first `payload_sz`).
    pub fn request(&self, i: usize) -> (&[u8; HEADER_LEN], &[u8]) {
        let s = &self.slots[i];
        let n = u32::from_ne_bytes(s.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].try_into().unwrap());
        (&s.header, &s.payload[..(n as usize).min(s.payload.len())])
    }

    /// The unique id of entry `i`'s request.
    pub fn unique(&self, i: usize) -> u64 {
        u64::from_ne_bytes(self.slots[i].header[8..16].try_into().unwrap())
    }

    /// Entry `i`'s payload buffer, to write a reply into.
    pub fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.slots[i].payload
    }

    /// Answers entry `i`'s request `unique` with `error` and the first `len` bytes of its
    /// payload buffer, and hands the entry back for the next request.
    pub fn commit(&mut self, i: usize, unique: u64, error: i32, len: usize) -> io::Result<()> {
        let h = &mut self.slots[i].header;
        let commit_id = u64::from_ne_bytes(h[COMMIT_ID..COMMIT_ID + 8].try_into().unwrap());
        h[0..4].copy_from_slice(&(16 + len as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&error.to_ne_bytes());
        h[8..16].copy_from_slice(&unique.to_ne_bytes());
        h[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&(len as u32).to_ne_bytes());
        self.push(CMD_COMMIT_AND_FETCH, i, commit_id)
    }
}

/// Whether this process can set up an io_uring with 128-byte entries (a kernel without
/// io_uring, `kernel.io_uring_disabled`, a seccomp filter say no).
pub fn probe() -> io::Result<()> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(2)
        .map(drop)
}

/// The CPUs the kernel may run on (`/sys/devices/system/cpu/possible`, e.g. "0-3"): the
/// kernel wants one queue for each.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = text
        .trim()
        .rsplit([',', '-'])
        .next()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(last + 1)
}

/// Keeps the calling thread on `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in its bounds (it
    // ignores CPUs past them), and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        super::check(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// Sets the calling thread's scheduling policy: `SCHED_IDLE` when `idle`, else the normal
/// `SCHED_OTHER` (nice unchanged). Going back from `SCHED_IDLE` needs `CAP_SYS_NICE` or an
/// `RLIMIT_NICE` that allows the thread's nice value (EPERM otherwise).
pub fn set_idle_policy(idle: bool) -> io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param`, a valid sched_param.
    super::check(unsafe { libc::sched_setscheduler(0, policy, &param) })?;
    Ok(())
}

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// Releases a backing file id (see fuser's `BackingId::create_raw`) of the connection of
/// `dev`.
pub fn backing_close(dev: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    // SAFETY: the ioctl reads one u32 from the pointer, which is valid for the call.
    super::check(unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) })?;
    Ok(())
}
