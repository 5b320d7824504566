"""The disk's durable-commit ceiling, the baseline of the queue and delivery benchmarks:
WRITERS threads each loop write a file, fsync it, rename it into place, fsync the directory.
Returns commits per second."""
import concurrent.futures
import os
import shutil
import time


def ceiling(base, writers, count, data):
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
