#!/usr/bin/env python3
"""Runs a command as root of a new user namespace (and a new mount namespace), the way a
rootless container engine runs its mount program: uids and gids 0-65535 map to
themselves, so files keep their owners, but the command has no capability in the
initial namespace (the kernel refuses it FUSE passthrough, and kernel overlayfs needs
`userxattr` there). Must be started by root.

    tools/userns.py CMD [ARG...]
"""
import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: userns.py CMD [ARG...]")
    if os.geteuid() != 0:
        sys.exit("userns.py: needs root (it writes the namespace's id maps)")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            os._exit(1)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        # Mounts made here stay here.
        os.system("mount --make-rprivate / 2>/dev/null")
        os.setgid(0)
        os.setuid(0)
        os.execvp(sys.argv[1], sys.argv[1:])
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"u":
        sys.exit("userns.py: the child could not make its namespaces")
    for name, text in [("uid_map", "0 0 65536\n"), ("gid_map", "0 0 65536\n")]:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
    os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
