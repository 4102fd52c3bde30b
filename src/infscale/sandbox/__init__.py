"""Run untrusted Python programs in a sandbox: the code-execution half of code evaluation.

:func:`run_code` runs one program in a fresh process tree and returns a :class:`SandboxResult`
(status, exit code, captured output, seconds). :func:`run_tests` and :func:`run_test_list`
build HumanEval- and MBPP-style test programs around a candidate solution.

Isolation is layered. The strongest mode the machine supports is detected once
(:func:`sandbox_capabilities`) by running a probe program, and every run uses it:

``namespaces`` (bubblewrap installed and working)
    ``bwrap`` puts the run in new pid, network, mount, IPC, UTS and cgroup namespaces with a
    private root: read-only binds of the system directories and the interpreter, a minimal
    ``/dev``, a fresh ``/proc``, and size-limited tmpfs at ``/tmp`` (the program's cwd, ``HOME``
    and ``TMPDIR``) and ``/dev/shm`` -- the only writable places. As root the program runs
    under a uid of its own; otherwise in a user namespace without capabilities.
``uid`` (root, no bubblewrap)
    The program runs under a unique unprivileged uid in a private ``0700`` directory: rlimits
    bind, it cannot signal other users' processes, file permissions apply; what it leaves in
    ``/tmp``, ``/var/tmp`` and ``/dev/shm`` is removed. The network is not isolated.
``rlimits`` (nothing else works)
    Resource limits, a minimal environment, a private temporary directory and a process group
    only. This protects against accidents, not against hostile code.

In every mode: a minimal environment, ``python -I -S -B``, rlimits on address space, CPU
seconds, processes, file size, open files and core dumps, a seccomp filter (where libseccomp
is installed) and a fresh session keyring, a wall-clock timeout enforced twice (by the caller,
and by the sandbox's init in case the caller dies), output capped while it is read, and a sweep
that kills every process of the run before :func:`run_code` returns. A memory+pids(+cpu)
cgroup bounds the whole run where cgroup v1 is writable.

Modules, one job each: :mod:`.isolation` (bubblewrap's command line per mode), :mod:`.cgroup`,
:mod:`.probe` (capability probing), :mod:`.run` (one run: limits, output caps, timeouts, the
sweep), :mod:`.programs` (HumanEval/MBPP test programs) and ``init.py`` (the init, a script).
"""

from __future__ import annotations

from .isolation import MODES
from .probe import SandboxCapabilities, sandbox_capabilities
from .programs import run_test_list, run_tests
from .run import STATUSES, SandboxError, SandboxResult, run_code

__all__ = [
    "MODES",
    "STATUSES",
    "SandboxCapabilities",
    "SandboxError",
    "SandboxResult",
    "run_code",
    "run_test_list",
    "run_tests",
    "sandbox_capabilities",
]
