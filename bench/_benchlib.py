"""Shared by the queue and delivery benchmarks: the 2 KB test message, and the disk's
durable-commit ceiling, their baseline."""
import concurrent.futures
import os
import shutil
import time


BOXES = 100  # the messages go to user0..user99@example.test


def message(i):
    """A 2,048-byte message to user(i % BOXES)@example.test."""
    head = ("From: sender@example.test\nTo: user%d@example.test\nSubject: bench %d\n"
            "Message-ID: <%d@example.test>\n\n" % (i % BOXES, i, i)).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n"
    body = line * ((2048 - len(head)) // len(line))
    return head + body + b"." * max(0, 2048 - len(head) - len(body) - 1) + b"\n"


def ceiling(base, writers, count, data=None):
    """WRITERS threads each loop: write DATA (default a test message) to a file, fsync it,
    rename it into place, fsync the directory. Returns durable commits per second."""
    if data is None:
        data = message(0)
    d = os.path.join(base, "ceiling%d" % writers)
    os.makedirs(d)
    per = count // writers

    def work(w):
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(per):
                tmp = os.path.join(d, "t%d.%d" % (w, i))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                os.rename(tmp, os.path.join(d, "m%d.%d" % (w, i)))
                os.fsync(dfd)
        finally:
            os.close(dfd)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(writers) as ex:
        list(ex.map(work, range(writers)))
    el = time.monotonic() - t0
    shutil.rmtree(d)
    return per * writers / el
