"""What the ingest issue's durability mechanism costs on this machine's disk, with no network,
no DICOM and no receiver: the floor under any receiver that acknowledges an instance only once
it is synced in its final place and indexed. Stdlib only; for bench/ingest.sh.

  durable_floor.py DIR ROUNDS

For every *.dcm under DIR (bytes read into memory first), in a fresh folder on the same volume
as DIR, one instance after the other, as a single association would:
  write    create a temporary file and write it (storescp's work on the disk);
  +fsync   ... then fdatasync it;
  +rename  ... then rename it into a per-series folder and fsync that folder, while a SQLite
           WAL index (synchronous = FULL) commits one row in parallel (a second thread);
  overlap  the same work, the index commit running beside the fdatasync instead (the row
           committed before the file is synced: a variant that would need the rows it commits
           marked pending until their files are in place, for the restart to settle);
Prints the median over ROUNDS of the milliseconds per instance of each, one per line.
"""
import glob
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid


def run(blobs, root, level):
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp)
    db = sqlite3.connect(os.path.join(root, "index.db"), isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE instances (sop TEXT PRIMARY KEY, path TEXT, size INTEGER)")

    def commit(sop, path, size):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO instances VALUES (?, ?, ?)", (sop, path, size))
        db.execute("COMMIT")

    t0 = time.perf_counter()
    for i, (series, data) in enumerate(blobs):
        part = os.path.join(tmp, uuid.uuid4().hex + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        folder = os.path.join(root, "instances", series)
        dest = os.path.join(folder, f"{i}.dcm")
        indexer = threading.Thread(target=commit, args=(uuid.uuid4().hex, dest, len(data)))
        if level == 3:
            indexer.start()
        if level >= 1:
            os.fdatasync(fd)
        os.close(fd)
        if level >= 2:
            os.makedirs(folder, exist_ok=True)
            os.rename(part, dest)
            if level == 2:
                indexer.start()
            dfd = os.open(folder, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
            indexer.join()
    secs = time.perf_counter() - t0
    db.close()
    return secs * 1000 / len(blobs)


def main():
    src, rounds = sys.argv[1], int(sys.argv[2])
    files = sorted(glob.glob(os.path.join(src, "**", "*.dcm"), recursive=True))
    blobs = []
    for f in files:
        with open(f, "rb") as fh:
            blobs.append((os.path.basename(os.path.dirname(f)), fh.read()))
    base = os.path.dirname(os.path.abspath(src))
    times = {0: [], 1: [], 2: [], 3: []}
    for _ in range(rounds):
        for level in times:
            root = tempfile.mkdtemp(prefix="floor.", dir=base)
            try:
                times[level].append(run(blobs, root, level))
            finally:
                shutil.rmtree(root)
            os.sync()
    for level, name in ((0, "write"), (1, "+fsync"), (2, "+rename"), (3, "overlap")):
        print(f"{name} {statistics.median(times[level]):.3f}")


if __name__ == "__main__":
    main()
