"""What runs inside an instance: its processes, whether its entrypoint started them, shells and
SSH servers among them, and the TCP ports they listen on.

An immutable instance runs one program, its image's entrypoint, and what that program starts. A
process the entrypoint did not start got there through a side door (``docker exec``, someone
running a program from the instance's root), and an interactive shell or an SSH server is the
usual reason to open one. This module observes; :mod:`immutrail.drift.check` turns what it sees
into findings.

* ``docker``: the Engine API's ``top`` lists the container's processes (host pids). When the
  engine runs on this host (``/proc/<pid>/cgroup`` names the container), each is read from
  ``/proc``: exact argv, real uid, controlling terminal, listening sockets. A process is the
  entrypoint's when its parent chain inside the container reaches the container's init
  (``State.Pid``); ``docker exec`` processes are children of the runtime's shim instead.
* ``local``: the instance's process is a session leader (the driver starts it with
  ``setsid``); every process of that session, or whose parent chain reaches it, is the
  entrypoint's. A process whose working directory or executable is inside the instance's folder,
  or whose environment names the instance (``IMMUTRAIL_INSTANCE``), but which is not, came from
  outside.

Listening sockets: the socket inodes among ``/proc/<pid>/fd`` matched with the ``LISTEN`` rows
of ``/proc/<pid>/net/tcp`` and ``tcp6`` (the process's own network namespace).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "tcsh", "csh", "fish"})
SSH_SERVERS = frozenset({"sshd", "dropbear"})
SSH_PORT = 22
INSTANCE_ENV = b"IMMUTRAIL_INSTANCE="
TOP_ARGS = "-o pid,ppid,uid,tty,comm,args"
"""``ps`` columns asked of the engine; ``args`` last, as the engine joins the rest into it."""
_LISTEN = "0A"
_MULTICALL = frozenset({"busybox", "toybox"})


@dataclass(frozen=True)
class Listening:
    protocol: str
    """``tcp`` or ``tcp6``."""
    address: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "address": self.address, "port": self.port}


@dataclass(frozen=True)
class Process:
    """One process of an instance, as observed (host pids)."""

    pid: int
    ppid: int
    comm: str
    cmdline: tuple[str, ...]
    uid: int | None
    tty: str | None
    from_entrypoint: bool
    start: int | None = None
    """Start time in clock ticks after boot (with ``pid``, names the process uniquely)."""
    listening: tuple[Listening, ...] = field(default=())

    @property
    def program(self) -> str:
        """The program's name: a multi-call binary's applet (``busybox sh`` is ``sh``)."""
        names = [os.path.basename(word) for word in self.cmdline[:2]]
        if len(names) == 2 and names[0] in _MULTICALL:
            return names[1]
        return names[0] if names and names[0] else self.comm

    @property
    def shell(self) -> bool:
        return self.program.lstrip("-") in SHELLS or self.comm in SHELLS

    @property
    def interactive(self) -> bool:
        """A shell that reads commands from a person: a terminal, ``-i``, or no script at all."""
        if not self.shell:
            return False
        if self.tty is not None or self.program.startswith("-"):  # "-sh": a login shell
            return True
        words = list(self.cmdline[2:] if self._multicall else self.cmdline[1:])
        options = [w for w in words if w.startswith("-") and w != "-"]
        if any("i" in w[1:] for w in options if not w.startswith("--")):
            return True
        if any("c" in w[1:] for w in options if not w.startswith("--")):
            return False
        operands = [w for w in words if not w.startswith("-") or w == "-"]
        return not operands  # no script file: commands come from stdin

    @property
    def ssh_server(self) -> bool:
        return (
            self.comm in SSH_SERVERS
            or self.program in SSH_SERVERS
            or any(s.port == SSH_PORT for s in self.listening)
        )

    @property
    def _multicall(self) -> bool:
        return bool(self.cmdline) and os.path.basename(self.cmdline[0]) in _MULTICALL

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "comm": self.comm,
            "cmdline": list(self.cmdline),
            "uid": self.uid,
            "tty": self.tty,
            "from_entrypoint": self.from_entrypoint,
            "shell": self.shell,
            "interactive": self.interactive,
            "ssh_server": self.ssh_server,
            "listening": [s.to_json() for s in self.listening],
        }


@dataclass(frozen=True)
class Signal:
    """A process that is a finding: ``shell``, ``foreign-process`` or ``ssh-server``."""

    kind: str
    message: str
    process: Process

    def evidence(self) -> dict[str, Any]:
        return self.process.to_json()


def signals(processes: Iterable[Process], where: str) -> list[Signal]:
    """The findings among ``processes`` of instance ``where``: one per process, the gravest."""
    found: list[Signal] = []
    for p in processes:
        who = f"pid {p.pid} ({p.program}) in {where}"
        if p.ssh_server:
            ports = ", ".join(str(s.port) for s in p.listening) or "no port yet"
            found.append(
                Signal("ssh-server", f"an SSH server runs: {who}, listening on {ports}", p)
            )
        elif p.shell and (p.interactive or not p.from_entrypoint):
            origin = "" if p.from_entrypoint else ", not started by the entrypoint"
            tty = f" on {p.tty}" if p.tty else " without a terminal"
            found.append(Signal("shell", f"a shell runs{tty}: {who}{origin}", p))
        elif not p.from_entrypoint:
            found.append(
                Signal("foreign-process", f"a process the entrypoint did not start: {who}", p)
            )
    return found


# --- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    pid: int
    comm: str
    ppid: int
    session: int
    tty_nr: int
    start: int


def _stat(pid: int, proc: Path) -> _Stat | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may itself hold spaces and parentheses
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie runs nothing
    return _Stat(pid, comm, int(fields[1]), int(fields[3]), int(fields[4]), int(fields[19]))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _uid(pid: int, proc: Path) -> int | None:
    status = _read(proc / str(pid) / "status") or b""
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            return int(line.split()[1])
    return None


def _cmdline(pid: int, proc: Path) -> tuple[str, ...]:
    raw = _read(proc / str(pid) / "cmdline") or b""
    return tuple(w.decode("utf-8", "replace") for w in raw.rstrip(b"\0").split(b"\0") if raw)


def tty_name(tty_nr: int) -> str | None:
    """``pts/3``, ``tty1``… from the device number in /proc/<pid>/stat; None for no terminal."""
    if tty_nr == 0:
        return None
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5 and minor == 1:
        return "console"
    return f"{major}:{minor}"


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words))
    return str(ipaddress.IPv6Address(words))


def listening(pid: int, proc: Path = Path("/proc")) -> tuple[Listening, ...]:
    """The TCP ports ``pid`` listens on (its socket fds matched with its namespace's table)."""
    folder = proc / str(pid)
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(folder / "fd"):
            target = _link(folder / "fd" / fd)
            if target is not None and target.startswith("socket:["):
                inodes.add(target[8:-1])
    if not inodes:
        return ()
    found: set[Listening] = set()
    for protocol in ("tcp", "tcp6"):
        table = _read(folder / "net" / protocol) or b""
        for line in table.decode("ascii", "replace").splitlines()[1:]:
            columns = line.split()
            if len(columns) < 10 or columns[3] != _LISTEN or columns[9] not in inodes:
                continue
            host, _, port = columns[1].partition(":")
            found.add(Listening(protocol, _address(host), int(port, 16)))
    return tuple(sorted(found, key=lambda s: (s.port, s.protocol, s.address)))


def _describe(stat: _Stat, proc: Path, from_entrypoint: bool) -> Process:
    cmdline = _cmdline(stat.pid, proc)
    return Process(
        pid=stat.pid,
        ppid=stat.ppid,
        comm=stat.comm,
        cmdline=cmdline,
        uid=_uid(stat.pid, proc),
        tty=tty_name(stat.tty_nr),
        from_entrypoint=from_entrypoint,
        start=stat.start,
        listening=listening(stat.pid, proc),
    )


def _descends(pid: int, ancestor: int, parents: Mapping[int, int]) -> bool:
    seen: set[int] = set()
    while pid not in seen and pid > 1:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = parents.get(pid, 0)
    return pid == ancestor


class HostProcesses:
    """One reading of the host's /proc, shared by the local instances checked together."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self.stats: dict[int, _Stat] = {}
        for name in os.listdir(proc):
            if name.isdigit():
                stat = _stat(int(name), proc)
                if stat is not None:
                    self.stats[stat.pid] = stat
        self.parents = {pid: s.ppid for pid, s in self.stats.items()}
        self._env: dict[int, bytes] = {}

    def _names(self, pid: int, instance_id: str) -> bool:
        if pid not in self._env:
            self._env[pid] = _read(self.proc / str(pid) / "environ") or b""
        return INSTANCE_ENV + instance_id.encode() in self._env[pid].split(b"\0")

    def local_instance(
        self, instance_id: str, folder: Path, leader: int | None, leader_start: int | None
    ) -> list[Process]:
        """The processes of local instance ``instance_id`` (its folder, its recorded leader)."""
        root = str(folder.resolve())
        stat = self.stats.get(leader) if leader is not None else None
        alive = stat is not None and stat.start == leader_start
        found: list[Process] = []
        for pid, stat in sorted(self.stats.items()):
            if pid == os.getpid():
                continue  # the checker itself, when it runs from inside the folder
            ours = alive and (stat.session == leader or _descends(pid, leader or 0, self.parents))
            inside = ours or any(
                (target := _link(self.proc / str(pid) / name)) is not None
                and (target == root or target.startswith(root + "/"))
                for name in ("cwd", "exe")
            )
            if not inside and not self._names(pid, instance_id):
                continue
            found.append(_describe(stat, self.proc, ours))
        return found


def container_processes(
    top: Mapping[str, Any], container_id: str, init_pid: int, proc: Path = Path("/proc")
) -> list[Process]:
    """The processes of a container from the engine's ``top`` (``ps_args=TOP_ARGS``).

    ``init_pid`` is the container's PID 1 on the host (``State.Pid``). Rows are enriched from
    ``/proc`` when the engine runs on this host.
    """
    titles = [str(t).upper() for t in top.get("Titles") or []]
    rows: list[Sequence[str]] = top.get("Processes") or []
    if not rows:
        return []
    column: dict[str, int] = {
        name: titles.index(name) for name in ("PID", "PPID", "UID", "TT") if name in titles
    }
    parents: dict[int, int] = {}
    for row in rows:
        parents[int(row[column["PID"]])] = int(row[column["PPID"]]) if "PPID" in column else 0
    found: list[Process] = []
    for row in rows:
        pid = int(row[column["PID"]])
        ours = _descends(pid, init_pid, parents)
        cgroup = _read(proc / str(pid) / "cgroup") or b""
        stat = _stat(pid, proc) if container_id.encode() in cgroup else None
        if stat is not None:
            found.append(_describe(stat, proc, ours))
        else:
            found.append(_from_row(row, titles, column, parents[pid], ours))
    return found


def _from_row(
    row: Sequence[str], titles: Sequence[str], column: Mapping[str, int], ppid: int, ours: bool
) -> Process:
    """A process as ``ps`` printed it (an engine on another host: no /proc to read)."""
    args = str(row[-1]).split()
    comm = str(row[len(titles) - 2]) if len(titles) >= 2 else (args[0] if args else "")
    uid = row[column["UID"]] if "UID" in column else ""
    tty = row[column["TT"]] if "TT" in column else "?"
    return Process(
        pid=int(row[column["PID"]]),
        ppid=ppid,
        comm=os.path.basename(comm),
        cmdline=tuple(args),
        uid=int(uid) if str(uid).isdigit() else None,
        tty=None if tty in ("?", "-", "") else str(tty),
        from_entrypoint=ours,
    )
