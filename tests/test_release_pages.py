"""An idle warm or kept replica gives the library pages it only read back to the page cache
(``local_processes.release_file_pages``): its RSS falls, and no page anyone wrote is ever dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# A process maps three views of files it made, then releases: a read-only view it read (released), a
# private writable view it wrote (kept: writable), and a private view it wrote and then made read-only,
# as the dynamic loader does with a library's relocated constants (kept: it holds private pages).
SCRIPT = textwrap.dedent(
    r"""
    import ctypes, json, mmap, os, sys
    from tfk8s_jupyter.backends.local_processes import release_file_pages

    MB = 1 << 20
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    folder = sys.argv[1]

    def make(name):
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(b"f" * (4 * MB))
            f.flush()
            os.fsync(f.fileno())  # written back: a page the cache still has to write counts as dirty
        return path, os.open(path, os.O_RDONLY if name == "read" else os.O_RDWR)

    def rss_of(path):
        rss, inside = 0, False
        for line in open("/proc/self/smaps"):
            head = line.split()[0]
            if not head.endswith(":"):
                inside = line.rstrip().endswith(path)
            elif inside and head == "Rss:":
                rss += int(line.split()[1])
        return rss

    read_path, fd = make("read")
    view = mmap.mmap(fd, 4 * MB, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    assert view[::4096].count(b"f") == 1024  # every page touched
    written_path, fd = make("written")
    written = mmap.mmap(fd, 4 * MB, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    written[:5] = b"mine!"
    relro_path, fd = make("relro")
    addr = libc.mmap(None, 4 * MB, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    ctypes.memmove(addr, b"relocated", 9)
    assert libc.mprotect(addr, 4 * MB, mmap.PROT_READ) == 0
    before = {p: rss_of(p) for p in (read_path, written_path, relro_path)}
    # a mapping that changed between the two reads (here: gone from maps) is left alone
    fake = os.path.join(folder, "proc")
    os.mkdir(fake)
    with open(os.path.join(fake, "smaps"), "w") as f:
        f.write(open("/proc/self/smaps").read())
    with open(os.path.join(fake, "maps"), "w") as f:
        f.writelines(line for line in open("/proc/self/maps") if not line.rstrip().endswith(read_path))
    release_file_pages(os.path.join(fake, "smaps"))
    changed = rss_of(read_path)
    released = release_file_pages()
    after = {p: rss_of(p) for p in (read_path, written_path, relro_path)}
    print(json.dumps({
        "released": released, "before": before, "after": after, "changed": changed,
        "read_again": view[::4096].count(b"f"),
        "written": written[:5].decode(), "relro": ctypes.string_at(addr, 9).decode(),
    }))
    """
)


def test_read_only_file_pages_are_released_and_written_ones_are_kept(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout)
    read, written, relro = (str(tmp_path / n) for n in ("read", "written", "relro"))
    assert got["before"][read] >= 4 * 1024 - 16  # kB: the whole view was mapped in
    assert got["changed"] == got["before"][read]  # not released while maps no longer listed it as it was
    assert got["after"][read] == 0  # released from the process ...
    assert got["read_again"] == 1024  # ... and read back intact from the file
    assert got["released"] >= got["before"][read]  # the interpreter's own library pages count too
    # a writable view and a view made read-only after it was written keep their pages and their contents
    assert got["after"][written] == got["before"][written] > 0
    assert got["after"][relro] == got["before"][relro] > 0
    assert (got["written"], got["relro"]) == ("mine!", "relocated")
