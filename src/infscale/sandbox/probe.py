"""Capability probing: which isolation this machine gives, verified by running probe programs.

Every mode is tried by running a probe program in it and checking what the program observes
(its uid, network interfaces, pid, whether ``/`` is read-only, its capabilities, its cgroup,
its seccomp status, whether it can make a user namespace) -- not by trusting that a command
exited 0. The strongest working mode becomes the default; a missing bubblewrap is said loudly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from .cgroup import Cgroup
from .isolation import (
    MIB,
    MODES,
    ModeProbe,
    bwrap_path,
    interpreters,
    is_root,
    libseccomp_available,
    reachable_by_anyone,
)
from .run import SandboxError, execute

log = logging.getLogger("infscale.sandbox")

_caps_lock = threading.Lock()
_caps: SandboxCapabilities | None = None
_probes: dict[str, ModeProbe] = {}


@dataclass(frozen=True)
class SandboxCapabilities:
    """The isolation this machine supports, as verified by running probe programs.

    ``mode`` is the strongest working mode (used by default); ``available`` lists every mode
    that works, strongest first; ``bwrap`` is bubblewrap's path (``None``: not installed, so no
    ``namespaces`` mode). The guarantee flags describe ``mode``:

    - ``pid_isolated``: the program sees and can signal only its own processes;
    - ``network_isolated``: no network at all (only a loopback that is down);
    - ``private_root``: read-only view of system directories; only its ``/tmp`` is writable;
    - ``unprivileged``: runs without root or capabilities;
    - ``own_uid``: runs under a uid no other process uses, so it cannot signal anything else;
    - ``process_limit``: the process-count limit binds (non-root uid or a pids cgroup);
    - ``cgroup``: memory and task limits apply to the whole process tree;
    - ``cpu_quota``: the whole tree gets at most one CPU (the cgroup's ``cpu`` controller);
    - ``seccomp``: a seccomp filter denies the system calls a test program never needs,
      the kernel keyring and new user namespaces among them.
    """

    mode: str
    available: tuple[str, ...]
    root: bool
    bwrap: str | None
    python: str
    pid_isolated: bool
    network_isolated: bool
    private_root: bool
    unprivileged: bool
    own_uid: bool
    process_limit: bool
    cgroup: bool
    cpu_quota: bool
    seccomp: bool
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line saying what protects a sandboxed program on this machine."""
        layers = []
        if self.pid_isolated or self.network_isolated:
            layers.append("bubblewrap pid/net/mount/ipc/uts namespaces")
        if self.private_root:
            layers.append("private read-only root")
        if self.unprivileged:
            layers.append("unprivileged uid" if self.root else "no capabilities")
        if self.seccomp:
            layers.append("seccomp filter")
        if self.cgroup:
            layers.append("memory+pids+cpu cgroup" if self.cpu_quota else "memory+pids cgroup")
        layers.append("rlimits")
        return f"sandbox mode {self.mode}: " + ", ".join(layers)


_PROBE_PROGRAM = r"""
import json, os, socket
facts = {"uid": os.getuid(), "pid": os.getpid(), "ifaces": sorted(n for _, n in socket.if_nameindex())}
facts["root_readonly"] = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
for key, path, prefix in (("status", "/proc/self/status", ("CapEff:", "Seccomp:")), ("cgroup", "/proc/self/cgroup", "")):
    try:
        with open(path) as f:
            facts[key] = [l.strip() for l in f if l.startswith(prefix)]
    except OSError:
        facts[key] = None
import ctypes
facts["nested_userns"] = ctypes.CDLL(None).unshare(0x10000000) == 0  # CLONE_NEWUSER
print(json.dumps(facts))
"""


def _cgroup_works() -> tuple[bool, bool]:
    """Whether this process can give runs a cgroup, and whether it has a CPU quota."""
    group = Cgroup.create(64 * MIB, 8)
    if group is None:
        return False, False
    cpu = group.cpu_quota
    return group.remove(), cpu


def _facts_ok(mode: str, facts: dict[str, Any], cgroup: bool, seccomp: bool) -> bool:
    """Whether what the probe program observed matches what ``mode`` promises."""
    status = facts["status"] or []
    caps = [line for line in status if line.startswith("CapEff:")]
    no_caps = facts["status"] is None or all(c.split()[-1] == "0000000000000000" for c in caps)
    filtered = any(line.split()[-1] == "2" for line in status if line.startswith("Seccomp:"))
    isolated = facts["ifaces"] == ["lo"] and facts["pid"] <= 3 and facts["root_readonly"]
    if cgroup and not (facts["cgroup"] and any("infscale-sbx" in line for line in facts["cgroup"])):
        return False
    if seccomp and (not filtered or facts["nested_userns"]):
        return False
    if mode == "namespaces":
        # As root without libseccomp nothing closes user namespaces (bubblewrap closes them only
        # where it made one itself); that is a documented, logged weakness, not a failed probe.
        userns_closed = not facts["nested_userns"] or (is_root() and not seccomp)
        return isolated and no_caps and userns_closed and (facts["uid"] != 0 or not is_root())
    if mode == "uid":
        return facts["uid"] != 0 and no_caps
    return True


def _probe(mode: str, cgroup_ok: bool) -> ModeProbe | None:
    """Run the probe program in ``mode``; the mode works when its guarantees are observed.

    In ``uid`` mode the caller's interpreter may not be reachable by the run's uid (e.g. under
    ``/root``); the system's Python is tried next. (Under bubblewrap as root the interpreter
    is bound into the sandbox by root, so the caller's own always works.)
    """
    root = is_root()
    if mode == "uid" and not root:
        return None
    if mode == "namespaces" and bwrap_path() is None:
        return None
    if mode == "uid":
        interps = tuple(i for i in interpreters() if reachable_by_anyone(i))
    else:
        interps = interpreters()[:1]
    options = [
        (interp, cgroup, seccomp)
        for interp in interps
        for seccomp in ((True, False) if libseccomp_available() else (False,))
        for cgroup in ((True, False) if cgroup_ok else (False,))
    ]
    for interp, cgroup, seccomp in options:
        probe = ModeProbe(mode, interp, cgroup, seccomp, {})
        try:
            res = execute(
                probe, _PROBE_PROGRAM, stdin="", timeout=20.0, memory_mb=512, cpu_seconds=10,
                max_processes=16, max_file_mb=1, max_output_bytes=10_000, disk_mb=4, env=None,
                ro_paths=(),
            )
        except (SandboxError, OSError) as exc:
            log.debug(
                "sandbox mode %s with %s (cgroup=%s, seccomp=%s) fails: %s", mode, interp.path, cgroup, seccomp, exc
            )
            continue
        if not res.passed:
            log.debug("sandbox probe in mode %s with %s: %s %s", mode, interp.path, res.status, res.stderr[-500:])
            continue
        facts = json.loads(res.stdout)
        if _facts_ok(mode, facts, cgroup, seccomp):
            return ModeProbe(mode, interp, cgroup, seccomp, facts)
        log.warning("sandbox mode %s ran but its guarantees were not observed: %s", mode, facts)
    return None


def sandbox_capabilities(refresh: bool = False) -> SandboxCapabilities:
    """What isolation this machine gives sandboxed programs (probed once, then cached).

    The default mode is the strongest that works, or ``INFSCALE_SANDBOX_MODE`` when that is set
    (to a weaker one). The result is logged once: at INFO with bubblewrap's namespaces, at
    WARNING without -- a machine without bubblewrap runs programs in a fallback, and says so.
    """
    global _caps
    with _caps_lock:
        if _caps is not None and not refresh:
            return _caps
        root = is_root()
        cgroup_ok, cpu_quota = _cgroup_works()
        _probes.clear()
        for mode in MODES:
            probe = _probe(mode, cgroup_ok)
            if probe is not None:
                _probes[mode] = probe
        if not _probes:
            raise SandboxError("no sandbox mode works on this machine (not even plain rlimits)")
        available = tuple(m for m in MODES if m in _probes)
        best = _probes[available[0]]
        forced = os.environ.get("INFSCALE_SANDBOX_MODE")
        if forced:
            if forced not in available:
                from ..errors import ConfigError

                raise ConfigError(
                    "INFSCALE_SANDBOX_MODE", f"sandbox mode {forced!r} does not work here", ", ".join(available)
                )
            best = _probes[forced]
        ns = best.mode == "namespaces"
        notes = []
        if bwrap_path() is None:
            notes.append(
                "bubblewrap (bwrap) is not installed: no namespaces and no private root "
                "(install it: apt-get install bubblewrap, or make bubblewrap)"
            )
        elif "namespaces" not in available:
            notes.append("bubblewrap is installed but does not work here (see the debug log)")
        if best.interpreter.path != os.path.realpath(sys.executable):
            notes.append(f"programs run under {best.interpreter.path}: the caller's interpreter is unreachable")
        if not ns:
            notes.append("no namespaces: the network is reachable and the host filesystem is visible")
        if best.mode == "rlimits":
            notes.append("no privilege separation: the program runs as the caller's user")
        if ns and not root:
            notes.append("the process limit counts all of the caller's processes (RLIMIT_NPROC is per user)")
        if not best.cgroup:
            notes.append("no cgroup: memory is limited per process (RLIMIT_AS), not per run")
        if not best.seccomp:
            notes.append("no seccomp filter (libseccomp is missing or the kernel refused the filter): "
                         "the system calls it denies, new user namespaces among them, are open")
        _caps = SandboxCapabilities(
            mode=best.mode, available=available, root=root, bwrap=bwrap_path(),
            python=best.interpreter.path, pid_isolated=ns, network_isolated=ns, private_root=ns,
            unprivileged=best.mode != "rlimits" or not root,
            own_uid=root and best.mode != "rlimits",
            process_limit=not root or best.mode != "rlimits" or best.cgroup,
            cgroup=best.cgroup, cpu_quota=best.cgroup and cpu_quota, seccomp=best.seccomp,
            notes=tuple(notes),
        )
        level = logging.INFO if ns else logging.WARNING
        log.log(level, "%s (available: %s)", _caps.summary(), ", ".join(available))
        for note in notes:
            log.log(level, "sandbox: %s", note)
        return _caps


def probe_for(mode: str | None) -> ModeProbe:
    """The verified probe of ``mode`` (``None``: the default mode)."""
    from ..errors import ConfigError

    caps = sandbox_capabilities()
    chosen = mode or caps.mode
    probe = _probes.get(chosen)
    if probe is None:
        raise ConfigError("mode", f"sandbox mode {chosen!r} does not work here", ", ".join(caps.available))
    return probe
