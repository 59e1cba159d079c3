"""Helpers for bench/dicomweb.sh (stdlib + requests only).

  stow URL TOKEN DIR BATCH       STOW-RS every *.dcm under DIR, BATCH files per request, one
                                 client; prints seconds (fails unless every part is stored)
  seed DB N                      inserts N studies (one patient each) into radstream's SQLite
                                 index directly (QIDO reads only the index)
  qido URL TOKEN REPEATS QUERY   times GET URL/studies?QUERY REPEATS times; prints p50 p95 ms
  retrieve URL TOKEN TS          WADO-RS of every instance (found by QIDO), one by one, with
                                 transfer-syntax=TS (* = as stored); prints seconds, instances
                                 and bytes (fails unless each answer is one file in TS)
"""
import glob
import os
import sqlite3
import statistics
import sys
import time
import uuid

import requests


def stow(url, token, d, batch):
    files = sorted(glob.glob(os.path.join(d, "**", "*.dcm"), recursive=True))
    headers = {"Authorization": f"Bearer {token}"} if token != "-" else {}
    s = requests.Session()
    t0 = time.perf_counter()
    for i in range(0, len(files), batch):
        b = uuid.uuid4().hex
        body = bytearray()
        for f in files[i:i + batch]:
            body += f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            with open(f, "rb") as fh:
                body += fh.read()
            body += b"\r\n"
        body += f"--{b}--\r\n".encode()
        r = s.post(f"{url}/studies", data=bytes(body), headers={
            **headers,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={b}',
            "Accept": "application/dicom+json"})
        if r.status_code != 200:
            sys.exit(f"STOW-RS answered {r.status_code}: {r.text[:300]}")
    print(f"{time.perf_counter() - t0:.3f} {len(files)}")


def seed(db, n):
    con = sqlite3.connect(db, timeout=30)
    now = int(time.time())
    with con:
        for i in range(n):
            cur = con.execute(
                "INSERT INTO patients (patient_key, patient_id, patient_name, birth_date, sex, created_at, updated_at) "
                "VALUES (?, ?, ?, '19600101', 'F', ?, ?)",
                (f"BENCH{i:06d}", f"BENCH{i:06d}", f"BENCH^P{i:06d}", now, now))
            con.execute(
                "INSERT INTO studies (study_uid, patient_pk, patient_id, patient_name, patient_birth_date, "
                "patient_sex, accession_number, study_id, study_date, study_time, study_description, "
                "modalities, num_series, num_instances, status, first_received_at, last_received_at, updated_at) "
                "VALUES (?, ?, ?, ?, '19600101', 'F', ?, '1', ?, '120000', 'BENCH', 'DX', 1, 1, 'complete', ?, ?, ?)",
                (f"2.25.{uuid.uuid4().int}", cur.lastrowid, f"BENCH{i:06d}", f"BENCH^P{i:06d}",
                 f"A{i:07d}", f"2020{1 + i % 12:02d}{1 + i % 28:02d}", now, now, now))


def qido(url, token, repeats, query):
    s = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = s.get(f"{url}/studies?{query}", headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code not in (200, 204):
            sys.exit(f"QIDO answered {r.status_code}: {r.text[:300]}")
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print(f"{statistics.median(times):.2f} {p95:.2f} {len(r.json()) if r.status_code == 200 else 0}")


def retrieve(url, token, ts):
    headers = {"Authorization": f"Bearer {token}"} if token != "-" else {}
    s = requests.Session()
    r = s.get(f"{url}/instances?limit=100000", headers={**headers, "Accept": "application/dicom+json"})
    if r.status_code != 200:
        sys.exit(f"QIDO /instances answered {r.status_code}: {r.text[:300]}")
    uids = [(i["0020000D"]["Value"][0], i["0020000E"]["Value"][0], i["00080018"]["Value"][0])
            for i in r.json()]
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={ts}'
    total = 0
    t0 = time.perf_counter()
    for study, series, sop in uids:
        r = s.get(f"{url}/studies/{study}/series/{series}/instances/{sop}",
                  headers={**headers, "Accept": accept})
        if r.status_code != 200:
            sys.exit(f"WADO-RS answered {r.status_code}: {r.text[:300]}")
        boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
        parts = r.content.split(f"--{boundary}".encode())[1:-1]
        head, _, body = parts[0].partition(b"\r\n\r\n") if parts else (b"", b"", b"")
        # The file's own meta group says its transfer syntax (Orthanc's part headers do not).
        if len(parts) != 1 or (ts != "*" and ts.encode() not in body[128:1024]):
            sys.exit(f"WADO-RS of {sop}: {len(parts)} parts, part header {head!r}, not in {ts}")
        total += len(r.content)
    print(f"{time.perf_counter() - t0:.3f} {len(uids)} {total}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "stow":
        stow(args[0], args[1], args[2], int(args[3]))
    elif cmd == "seed":
        seed(args[0], int(args[1]))
    elif cmd == "qido":
        qido(args[0], args[1], int(args[2]), args[3])
    elif cmd == "retrieve":
        retrieve(args[0], args[1], args[2])
