"""The sandbox's init: runs the program as its child, reports how it ended, leaves nothing behind.

This file runs as a stand-alone script (``python -I -S -B init.py config.json``), inside
bubblewrap's namespaces or directly in the fallback modes; it imports only the standard
library and nothing of infscale. The caller writes the config (see ``run.plan``):

1. it joins the run's cgroups when told to (the fallback modes; under bubblewrap a wrapper
   outside the sandbox has done it), becomes the run's child subreaper, and gives the run a
   fresh, empty session keyring (the caller's keys are not reachable from it);
2. it makes itself non-dumpable, so a program running under the same uid cannot read its
   memory or ``/proc`` files;
3. it forks the program: the child copies ``main.py`` into place, drops to the run's uid when
   told (the init itself stays where the program cannot reach it), sets the rlimits and nice,
   loads the seccomp filter (libseccomp, when installed) and executes the interpreter;
4. it waits, enforcing its own wall deadline (in case the caller died), reports one JSON line on
   the status pipe -- ``{"status": wait status, "timed_out": bool}`` or ``{"setup_error":
   message}`` -- and kills whatever of the run is left.

Under bubblewrap the init is pid 1 of the run's pid namespace: the program cannot signal it,
and when it exits the kernel kills every process left in the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import sys
import time
from typing import Any

_NICE = 10  # sandboxed programs yield the CPU to the host
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 1, 4, 36
_KEYCTL_JOIN_SESSION_KEYRING = 1

# System calls a test program never needs, denied with EPERM. Most need privileges the
# program does not have anyway; the filter also closes what an unprivileged process could
# otherwise reach: other processes' memory and limits (ptrace, process_vm_*, prlimit64 of
# another pid -- the init's included), the kernel keyring, new user namespaces (unshare,
# setns, clone with a CLONE_NEW* flag), and large kernel attack surfaces (bpf,
# perf_event_open, userfaultfd, io_uring, the new mount API, handle-based opens).
DENIED_SYSCALLS = (
    "add_key", "keyctl", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "lookup_dcookie", "vhangup",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "uselib", "nfsservctl",
)
_CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000  # | errno
_SCMP_CMP_NE, _SCMP_CMP_MASKED_EQ = 1, 7
_EPERM, _ENOSYS = 1, 38


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _libseccomp() -> Any:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _load_seccomp() -> None:
    """Deny :data:`DENIED_SYSCALLS`, namespace-creating clones and ``clone3`` (ENOSYS: the C
    library falls back to ``clone``, whose flags the filter can see). System calls of another
    architecture (x32, i386 through ``int 0x80``) kill the process: libseccomp's default."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")

    def rule(name: str, action: int, *cmps: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # no such system call on this architecture
        arr = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
        rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for {name}: {os.strerror(-rc)}")

    try:
        for name in DENIED_SYSCALLS:
            rule(name, _SCMP_ACT_ERRNO | _EPERM)
        rule("prlimit64", _SCMP_ACT_ERRNO | _EPERM, (0, _SCMP_CMP_NE, 0, 0))
        for flag in _CLONE_NEW_FLAGS:
            rule("clone", _SCMP_ACT_ERRNO | _EPERM, (0, _SCMP_CMP_MASKED_EQ, flag, flag))
        rule("clone3", _SCMP_ACT_ERRNO | _ENOSYS)
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def _fresh_session_keyring(libc: Any) -> None:
    """Replace the inherited session keyring (the caller's) by a new, empty, anonymous one.

    Where ``keyctl`` itself is denied (a container's own seccomp profile, a kernel without
    keys), no keyring is reachable from here at all, which is what this is for.
    """
    try:
        nr = _libseccomp().seccomp_syscall_resolve_name(b"keyctl")
    except OSError:
        nr = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine, -1)
    if nr < 0:
        raise OSError("keyctl: unknown system call number on this architecture")
    if libc.syscall(nr, _KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        err = ctypes.get_errno()
        if err not in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            raise OSError(err, f"keyctl(JOIN_SESSION_KEYRING): {os.strerror(err)}")


def _prctl(libc: Any, option: int, arg: int) -> None:
    c = ctypes.c_ulong
    if libc.prctl(option, c(arg), c(0), c(0), c(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _children(parent: int) -> list[int]:
    """Live children of ``parent``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and int(fields[1]) == parent and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _exec_program(libc: Any, cfg: dict[str, Any]) -> None:
    """In the forked child: take the program's identity and limits, then become it."""
    _prctl(libc, _PR_SET_PDEATHSIG, signal.SIGKILL)
    if cfg["setuid"] is not None:
        uid, gid = cfg["setuid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # clears every capability
        _prctl(libc, _PR_SET_PDEATHSIG, signal.SIGKILL)  # changing credentials cleared it
    os.chdir(cfg["cwd"])  # after the uid change: /tmp may be closed to the init itself
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.nice(_NICE)
    if cfg["seccomp"]:
        _load_seccomp()
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def main(config_path: str) -> int:
    with open(config_path) as f:
        cfg = json.load(f)
    status_fd = cfg["status_fd"]
    report = lambda obj: os.write(status_fd, (json.dumps(obj) + "\n").encode())  # noqa: E731
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for procs in cfg["cgroup_procs"]:
            with open(procs, "w") as f:
                f.write("0")
        # Orphans of the run become our children (not the host's pid 1's), so we can reap them.
        _prctl(libc, _PR_SET_CHILD_SUBREAPER, 1)
        _prctl(libc, _PR_SET_DUMPABLE, 0)
        if cfg["keyring"]:
            _fresh_session_keyring(libc)
        if cfg["copy_source"]:
            src, dst = cfg["copy_source"]
            with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
                fdst.write(fsrc.read())
            if cfg["setuid"] is not None:
                os.chown(dst, *cfg["setuid"])  # the file first: then /tmp is closed to us
                os.chown(os.path.dirname(dst), *cfg["setuid"])
        os.set_inheritable(status_fd, False)
    except BaseException as exc:  # noqa: BLE001 - reported to the caller, who raises
        report({"setup_error": f"{type(exc).__name__}: {exc}"})
        return 125
    deadline = time.monotonic() + cfg["timeout"]
    err_r, err_w = os.pipe2(os.O_CLOEXEC)  # the child's setup error, if it has one
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            _exec_program(libc, cfg)
        except BaseException as exc:  # noqa: BLE001
            os.write(err_w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    timed_out = False

    def sweep() -> None:
        # As pid 1 of the namespace, kill(-1) reaches exactly the run's processes. Elsewhere
        # we kill our children until none is left: as the subreaper we inherit every orphan
        # of the run, session leaders and double-forked daemons included.
        if os.getpid() == 1:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        give_up = time.monotonic() + 2.0
        while time.monotonic() < give_up:
            for child in _children(os.getpid()):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return  # no children left, not even zombies
            time.sleep(0.005)

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal timed_out
        if time.monotonic() < deadline:  # a stray SIGALRM sent by the program itself
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.01))
            return
        timed_out = True
        sweep()
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.01))
    child_error = b""
    while True:
        try:
            child_error = os.read(err_r, 4096)  # empty once the program exec'd (close-on-exec)
            break
        except InterruptedError:
            continue
    os.close(err_r)
    status = None
    while status is None:
        try:
            waited, st = os.waitpid(-1, 0)  # reaps orphans too (we may be their init)
        except ChildProcessError:
            break
        if waited == pid:
            status = st
    signal.setitimer(signal.ITIMER_REAL, 0)
    if child_error:
        report({"setup_error": child_error.decode(errors="replace")})
    else:
        report({"status": status, "timed_out": timed_out})
    sweep()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
