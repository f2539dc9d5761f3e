"""Free memory a process may still take on the CPU: the system's available memory, bounded by its cgroup's limit
(a container's ``memory.max`` is usually far below what ``/proc/meminfo`` reports)."""

from pathlib import Path

UNLIMITED = 2 ** 60  # cgroup v1 writes "no limit" as a number near 2^63


def meminfo_available(meminfo: str | Path = "/proc/meminfo") -> int:
    fields = dict(line.split(":", 1) for line in Path(meminfo).read_text().splitlines() if ":" in line)
    return int(fields["MemAvailable"].split()[0]) * 1024


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # v2 writes "max" for no limit


def _levels(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its parents up to the mount (a limit anywhere above applies too). Inside a
    container the mount often shows only the container's own cgroup, under whatever path the file names."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        return [mount]
    levels = [folder]
    while levels[-1] != mount:
        levels.append(levels[-1].parent)
    return levels


def cgroup_free(root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroups (v2 ``memory.max - memory.current``,
    v1 ``memory.limit_in_bytes - memory.usage_in_bytes``); None when no limit is set or none can be read."""
    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    room = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (root / "cgroup.controllers").is_file():  # v2, unified
            files, mount = ("memory.max", "memory.current"), root
        elif "memory" in controllers.split(","):  # v1
            files, mount = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / "memory"
        else:
            continue
        for level in _levels(mount, path):
            limit, used = (_number(level / name) for name in files)
            if limit is not None and used is not None and limit < UNLIMITED:
                room.append(max(0, limit - used))
    return min(room) if room else None


def cpu_free_bytes(root: str | Path = "/sys/fs/cgroup", proc: str | Path = "/proc") -> int:
    """The smaller of MemAvailable and the room left under the cgroup's memory limit."""
    available = meminfo_available(Path(proc) / "meminfo")
    limit = cgroup_free(root, Path(proc) / "self" / "cgroup")
    return available if limit is None else min(available, limit)
