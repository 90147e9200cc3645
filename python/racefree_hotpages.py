"""The pages a unit copies, learned and copied ahead (Linux), for racefree's fork server.

A forked unit shares the warm server's memory copy-on-write. CPython writes to nearly every
object it uses (reference counts, the interpreter's inline caches), so a unit of one trivial
test file copies some 1,700 pages of the server, one page fault each: about 5 us a fault on
a virtual machine, most of a unit's own cost. They are much the same pages every time.

So a unit's process, now and then, lists the pages it holds privately when it ends
(``learn``: /proc/self/pagemap's "exclusively mapped" bit, for the private writable
mappings it shares with the server) and hands the list to the server. The server keeps the
pages most of those units copied (a page only one unit in three needed is not worth
copying for every unit: the copy costs what the fault would), and every process it forks ahead of a unit (see racefree_forkserver's _Spare) copies
those pages in a few system calls while it waits for its request (``copy_ahead``:
``madvise(MADV_POPULATE_WRITE)``, Linux 5.14 and later), typically while the previous unit
still runs. The copies hold the server's bytes as they were at the fork, so nothing a unit
can see changes; the copying only moves, and batches, work the unit would have done. (A page
of a private file mapping the server never wrote, a library's data say, is copied from the
file as it is then, as the unit's first write would have done a little later.)

racefree writes this file beside the server and the plugin.
"""

import os
import struct

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_POPULATE_WRITE = 23
# pagemap entry bits: present, and mapped by this process alone.
_PRESENT = 1 << 63
_EXCLUSIVE = 1 << 56
# Never copy ahead more than this many pages (64 MiB of 4 KiB pages): past it, a suite whose
# units differ that much gains little and each spare would hold more than it uses.
MAX_PAGES = 16384
# Most pages copied by one system call, and between two looks at whether the unit has come
# (some 0.5 ms of copying).
_BATCH = 128

# (start address, pages) runs the server has learned; inherited by every process it forks.
_runs = []
# In the server: how many units have listed their pages, and how many of them listed each.
_listings = 0
_listed = {}
# None until the server has asked the kernel whether it knows MADV_POPULATE_WRITE.
_unsupported = None


def _private_writable():
    """(start, end) of every private writable mapping of this process but the stack (a
    process's stack is its own from the first call)."""
    found = []
    with open("/proc/self/maps", "rb") as handle:
        for line in handle:
            fields = line.split(None, 5)
            perms = fields[1]
            if perms[:2] != b"rw" or perms[3:4] != b"p":
                continue
            if len(fields) > 5 and fields[5].strip() in (b"[stack]", b"[vvar]", b"[vsyscall]"):
                continue
            start, _, end = fields[0].partition(b"-")
            found.append((int(start, 16), int(end, 16)))
    return found


def learn():
    """In a unit's process as it ends: the runs of pages it holds alone (copied from the
    server, or new), as bytes for ``remember``. Empty where /proc/self/pagemap is missing."""
    try:
        regions = _private_writable()
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    runs = []
    try:
        for start, end in regions:
            pages = (end - start) // _PAGE
            try:
                data = os.pread(fd, pages * 8, (start // _PAGE) * 8)
            except OSError:
                continue
            entries = memoryview(data).cast("Q")
            run_start = None
            for index, entry in enumerate(entries):
                if entry & _PRESENT and entry & _EXCLUSIVE:
                    if run_start is None:
                        run_start = index
                elif run_start is not None:
                    runs.append((start + run_start * _PAGE, index - run_start))
                    run_start = None
            if run_start is not None:
                runs.append((start + run_start * _PAGE, len(entries) - run_start))
    finally:
        os.close(fd)
    return b"".join(struct.pack("=QQ", address, pages) for address, pages in runs)


def remember(data, libc):
    """In the server: counts the pages a unit listed (bytes from ``learn``); those more than
    half of the listing units copied are copied ahead from now on, up to MAX_PAGES. Nothing,
    where the kernel cannot copy ahead."""
    global _runs, _unsupported, _listings
    if _unsupported is None:
        _unsupported = not _can_copy_ahead(libc)
    if _unsupported or len(data) % 16:
        return
    _listings += 1
    for address, count in struct.iter_unpack("=QQ", data):
        for page in range(address, address + min(count, MAX_PAGES) * _PAGE, _PAGE):
            _listed[page] = _listed.get(page, 0) + 1
    pages = sorted(page for page, seen in _listed.items() if seen * 2 > _listings)
    runs = []
    for address in _present_here(pages)[:MAX_PAGES]:
        # Only pages that touch are joined: a gap may be a guard page or another mapping.
        if runs and address == runs[-1][0] + runs[-1][1] * _PAGE and runs[-1][1] < _BATCH:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((address, 1))
    _runs = runs


def _present_here(addresses):
    """The pages of ``addresses`` (sorted) this process has in memory: only those have
    anything to copy (a page a unit faulted in new costs little)."""
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    present = []
    try:
        index = 0
        while index < len(addresses):
            # One read per run of consecutive pages.
            end = index + 1
            while end < len(addresses) and addresses[end] == addresses[end - 1] + _PAGE:
                end += 1
            try:
                data = os.pread(fd, (end - index) * 8, (addresses[index] // _PAGE) * 8)
            except OSError:
                data = b""
            for offset, entry in enumerate(memoryview(data).cast("Q")):
                if entry & _PRESENT:
                    present.append(addresses[index + offset])
            index = end
    finally:
        os.close(fd)
    return present


def _madvise(libc):
    import ctypes

    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def _can_copy_ahead(libc):
    """Whether this kernel knows MADV_POPULATE_WRITE (Linux 5.14): asked on a page of our
    own, since EINVAL on a learned run may also mean the run is not writable any more."""
    import ctypes
    import mmap

    page = mmap.mmap(-1, _PAGE)
    try:
        view = ctypes.c_char.from_buffer(page)
        try:
            return _madvise(libc)(ctypes.addressof(view), _PAGE, _MADV_POPULATE_WRITE) == 0
        finally:
            del view
    finally:
        page.close()


def learned_runs():
    """The (address, pages) runs copied ahead: what this process inherited from the server."""
    return list(_runs)


def copy_ahead(libc, interrupted=None):
    """In a process forked ahead of its unit: copies the learned pages now, until
    ``interrupted()`` (asked between batches) says its unit has come: from then on the rest
    is copied on demand, as without this. A run that is not mapped or not writable any more
    (the server freed an arena) fails and is skipped. The server learns nothing where the
    kernel cannot do this (see ``remember``)."""
    if not _runs:
        return
    madvise = _madvise(libc)
    copied = 0
    for address, count in _runs:
        madvise(address, count * _PAGE, _MADV_POPULATE_WRITE)
        copied += count
        if copied >= _BATCH:
            copied = 0
            if interrupted is not None and interrupted():
                return
