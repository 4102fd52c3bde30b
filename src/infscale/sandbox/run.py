"""Running one program: the init's launch, rlimits, output caps, timeouts and the sweep.

:func:`run_code` validates its arguments, takes the mode the capability probe verified
(:mod:`.probe`), prepares the run's directory and cgroup, starts the init in its mode
(:mod:`.isolation`), feeds stdin and reads stdout/stderr with a cap while enforcing the wall
deadline, then sweeps: every process of the run -- found by its cgroup, its uid of its own and
its process group -- is killed and verified gone before the result is returned.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .cgroup import Cgroup
from .isolation import MIB, MODES, ModeProbe, is_root, plan, prepare_dir

log = logging.getLogger("infscale.sandbox")

#: What :attr:`SandboxResult.status` can be.
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed")

_SWEEP_SECONDS = 3.0  # how long to wait for a killed process tree to disappear
_LEADER_GRACE = 0.5  # how long the sweep lets bubblewrap / the init exit by itself
_UID_BASE = 1_870_000_000  # per-run uids come from [_UID_BASE, _UID_BASE + _UID_COUNT)
_UID_COUNT = 1_000_000
_CRASH_SIGNALS = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS", "SIGTRAP"}
_MEMORY_ERROR = re.compile(r"(?m)^MemoryError\b")
_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()

@dataclass
class SandboxResult:
    """What one sandboxed run did.

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit, an uncaught exception or a crash
    such as a segfault), ``timeout`` (wall timeout or CPU-seconds limit), ``memory`` (a
    ``MemoryError`` or the memory cgroup's OOM killer), ``output_limit`` (stdout or stderr
    passed ``max_output_bytes``; the run was killed) or ``killed`` (ended by another signal).
    ``returncode`` is the exit code, ``-N`` for signal N, ``None`` when the run was killed
    before it reported one. ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes
    replaced) and hold at most ``max_output_bytes`` each. ``contained`` is ``True`` when every
    process of the run is known to be gone; ``notes`` says what happened beyond the status.
    ``uid`` is the host uid the program ran under when the run had one of its own.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    mode: str
    contained: bool = True
    notes: list[str] = field(default_factory=list)
    uid: int | None = None

    @property
    def passed(self) -> bool:
        """The program ran to completion and exited with 0."""
        return self.status == "ok" and self.returncode == 0


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not the program's fault)."""



def _allocate_uid() -> int:
    """A uid (and gid) no other live run of this process uses; spread across processes."""
    with _uids_lock:
        while True:
            uid = _UID_BASE + int.from_bytes(os.urandom(4), "little") % _UID_COUNT
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    if uid is not None:
        with _uids_lock:
            _uids_in_use.discard(uid)



# --- sweeping ---


def _run_pids(pgid: int, uid: int | None) -> set[int]:
    """Live (non-zombie) processes in process group ``pgid`` or owned by ``uid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            owner = os.stat(f"/proc/{entry}").st_uid
        except (OSError, IndexError):
            continue
        if len(fields) < 3 or fields[0] in ("Z", "X"):
            continue
        if int(fields[2]) == pgid or (uid is not None and owner == uid):
            found.add(int(entry))
    return found


def _sweep(leader: int, uid: int | None, cgroup: Cgroup | None) -> bool:
    """Kill every process of a run until none is left; ``True`` when that was verified.

    A run's processes are those in its cgroup, those owned by its unique uid and those in the
    process group of ``leader``, the process we started (the caller has not reaped it yet, so
    its pid cannot have been reused). The leader is spared at first: it is ``unshare`` or the
    init, and given a moment it reaps its children and exits by itself, so nothing is left for
    the host's pid 1 to reap. (Processes that left the group without a uid or cgroup of their
    own -- ``rlimits`` mode -- are the init's to kill: it is the run's subreaper.)
    """
    started = time.monotonic()
    while True:
        live = _run_pids(leader, uid if is_root() else None)
        if cgroup is not None:
            live |= cgroup.pids()
        if not live:
            return True
        elapsed = time.monotonic() - started
        targets = live if elapsed > _LEADER_GRACE else live - {leader}
        if elapsed > _LEADER_GRACE:
            try:
                os.killpg(leader, signal.SIGKILL)
            except OSError:
                pass
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if elapsed > _SWEEP_SECONDS:
            return False
        time.sleep(0.005)


# --- one run -----------------------------------------------------------------------------


def _remove_files_of(uid: int) -> None:
    """Remove what a ``uid``-mode run left in the host's world-writable temporary directories.

    Without a private root the program sees the host's ``/tmp``, ``/var/tmp`` and ``/dev/shm``;
    whatever it created at their top level goes (the program's own directories with it).
    """
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(d, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_uid != uid:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _validate(**values: Any) -> None:
    from ..errors import ConfigError

    for name, value in values.items():
        if name == "env":
            strings = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            )
            if value is not None and not strings:
                raise ConfigError("env", f"must map strings to strings, got {value!r}", "dict[str, str]")
        elif name == "mode":
            if value is not None and value not in MODES:
                raise ConfigError("mode", f"unknown sandbox mode {value!r}", ", ".join(MODES))
        elif name == "ro_paths":
            for p in value:
                if not (isinstance(p, str) and os.path.isabs(p) and os.path.exists(p)):
                    raise ConfigError("ro_paths", f"{p!r} is not an existing absolute path", "absolute paths")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(name, f"must be a positive number, got {value!r}", "a number > 0")


def _exited(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _communicate(
    proc: subprocess.Popen, status_r: int, stdin: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bytes, str | None]:
    """Feed stdin, read stdout/stderr (capped) and the status pipe until exit or a limit.

    Returns ``(stdout, stderr, status_bytes, reason)`` where ``reason`` is ``"timeout"``,
    ``"output_limit"`` or ``None`` (the init exited).
    """
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), status_r: bytearray()}
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd, pending = proc.stdin.fileno(), memoryview(stdin)
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    reason = None
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # the init is gone; whatever still holds a pipe is swept next
            for key, _ in sel.select(min(deadline - now, 0.05)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[: 1 << 16])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed stdin or exited
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    continue
                buf = bufs[fd]
                if fd != status_r and len(buf) + len(data) > cap:
                    buf += data[: cap - len(buf)]
                    reason = "output_limit"
                    break
                buf += data
            if reason:
                break
    finally:
        sel.close()
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), bytes(bufs[status_r]), reason


def _classify(
    report: dict[str, Any] | None, reason: str | None, stderr: str, oom: bool, proc_rc: int | None
) -> tuple[str, int | None, list[str]]:
    notes: list[str] = []
    if reason == "output_limit":
        return "output_limit", None, ["output passed max_output_bytes; the run was killed"]
    if reason == "timeout" or (report or {}).get("timed_out"):
        return "timeout", None, ["wall-clock timeout; the run was killed"]
    if report is None or report.get("status") is None:
        notes.append("the sandbox init ended without reporting the program's exit")
        return ("memory" if oom else "killed"), proc_rc, notes
    ws = report["status"]
    if os.WIFEXITED(ws):
        rc = os.WEXITSTATUS(ws)
        if rc == 0:
            return "ok", 0, notes
        if oom or _MEMORY_ERROR.search(stderr[-4000:]):
            return "memory", rc, notes
        return "error", rc, notes
    sig = os.WTERMSIG(ws) if os.WIFSIGNALED(ws) else signal.SIGKILL
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    notes.append(f"terminated by {name}")
    if sig == signal.SIGXCPU:
        return "timeout", -sig, notes + ["CPU-seconds limit"]
    if oom:
        return "memory", -sig, notes + ["killed by the memory cgroup"]
    if name in _CRASH_SIGNALS:
        return "error", -sig, notes
    return "killed", -sig, notes


def execute(
    probe: ModeProbe, source: str, *, stdin: str, timeout: float, memory_mb: int, cpu_seconds: int,
    max_processes: int, max_file_mb: int, max_output_bytes: int, disk_mb: int,
    env: dict[str, str] | None, ro_paths: tuple[str, ...],
) -> SandboxResult:
    """Run ``source`` once in the verified mode ``probe``; see :func:`run_code`."""
    uid = _allocate_uid() if (is_root() and probe.mode != "rlimits") else None
    cgroup = None
    if probe.cgroup:
        total = (memory_mb + disk_mb + max_file_mb) * MIB
        # Tasks: the program's, plus the init and bubblewrap's monitor (or the init alone).
        cgroup = Cgroup.create(total, max_processes + 2)
        if cgroup is None:
            log.warning("sandbox: could not create this run's cgroup; running without it")
    base = prepare_dir(probe, source, uid)
    status_r, status_w = os.pipe()
    cmd, cfg = plan(
        probe, base, uid=uid, cgroup=cgroup, ro_paths=ro_paths, memory_mb=memory_mb,
        cpu_seconds=cpu_seconds, max_processes=max_processes, max_file_mb=max_file_mb,
        disk_mb=disk_mb, timeout=timeout, env=env, status_fd=status_w,
    )
    with open(os.path.join(base, "init.json"), "w") as f:
        json.dump(cfg, f)
    started = time.monotonic()
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(status_w,), start_new_session=True, cwd=base,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            os.close(status_w)
        out, err, status_bytes, reason = _communicate(
            proc, status_r, stdin.encode(), started + timeout, max_output_bytes
        )
        # Sweep before reaping so the process group id cannot be reused in between.
        contained = _sweep(proc.pid, uid, cgroup)
        proc.wait()
        seconds = time.monotonic() - started
        report = None
        for line in status_bytes.decode(errors="replace").splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                continue
        if report is not None and "setup_error" in report:
            raise SandboxError(f"sandbox setup failed in mode {probe.mode}: {report['setup_error']}")
        stderr = err.decode(errors="replace")
        oom = cgroup.oom_killed() if cgroup is not None else False
        status, rc, notes = _classify(report, reason, stderr, oom, proc.returncode)
        if not contained:
            notes.append("some processes of the run could not be confirmed gone")
            log.warning("sandbox run in mode %s: processes could not be confirmed gone", probe.mode)
        return SandboxResult(
            status=status, returncode=rc, stdout=out.decode(errors="replace"), stderr=stderr,
            seconds=seconds, mode=probe.mode, contained=contained, notes=notes, uid=uid,
        )
    finally:
        if proc is not None and proc.returncode is None:
            _sweep(proc.pid, uid, cgroup)
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
            try:
                stream.close()
            except OSError:
                pass
        os.close(status_r)
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(base, ignore_errors=True)
        if uid is not None and probe.mode == "uid":
            _remove_files_of(uid)
        _release_uid(uid)


def run_code(
    source: str,
    *,
    stdin: str = "",
    timeout: float = 10.0,
    memory_mb: int = 512,
    cpu_seconds: int = 10,
    max_processes: int = 64,
    max_file_mb: int = 16,
    max_output_bytes: int = 1_000_000,
    max_disk_mb: int = 64,
    env: dict[str, str] | None = None,
    ro_paths: tuple[str, ...] | list[str] = (),
    mode: str | None = None,
) -> SandboxResult:
    """Run the Python program ``source`` in the sandbox and return what it did.

    The program runs as ``main.py`` in its own empty temporary directory (its cwd, ``HOME``
    and ``TMPDIR``), with ``stdin`` on its standard input and only ``PATH``, ``LANG``,
    ``HOME``, ``TMPDIR`` and ``env`` in its environment. Limits: ``timeout`` wall seconds for
    the whole run, ``cpu_seconds`` of CPU, ``memory_mb`` of address space per process (and,
    with a cgroup, of memory for the whole run), ``max_processes`` processes/threads,
    ``max_file_mb`` per written file, ``max_disk_mb`` in its temporary directory (private-root
    modes), ``max_output_bytes`` per output stream. ``ro_paths`` are host paths made visible
    read-only at the same place (private-root modes; elsewhere the host filesystem is visible
    as the program's uid allows). ``mode`` picks a weaker isolation mode than the strongest
    available one (see :data:`MODES`); ``None`` uses the strongest.

    Raises :class:`~infscale.errors.ConfigError` for bad arguments and :class:`SandboxError`
    when the sandbox itself fails; whatever the program does is reported in the result.
    """
    from .probe import probe_for

    _validate(
        timeout=timeout, memory_mb=memory_mb, cpu_seconds=cpu_seconds, max_processes=max_processes,
        max_file_mb=max_file_mb, max_output_bytes=max_output_bytes, max_disk_mb=max_disk_mb,
        env=env, mode=mode, ro_paths=tuple(ro_paths),
    )
    return execute(
        probe_for(mode), source, stdin=stdin, timeout=float(timeout), memory_mb=int(memory_mb),
        cpu_seconds=max(1, int(cpu_seconds)), max_processes=int(max_processes), max_file_mb=int(max_file_mb),
        max_output_bytes=int(max_output_bytes), disk_mb=int(max_disk_mb), env=env,
        ro_paths=tuple(os.path.realpath(p) for p in ro_paths),
    )
