#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, built from fixtures/ (nothing large is committed).

    fuzz/seed.py OUT        writes OUT/<target>/<name> for every target in fuzz/fuzz_targets

Needs the project's venv (pydicom, pynetdicom, pylibjpeg, pyjpegls, Pillow) and DCMTK's dcmcjpeg.
The fixtures are shrunk to 16x16 / 32x32 pixels first: the fuzzers run far more inputs per
second on small images, and every decoder path is the same.
"""

import copy
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# image_decode: byte 0 of the header (fuzz/harness/image_decode.rs SYNTAXES, offset by 2).
SYNTAX_INDEX = {
    "1.2.840.10008.1.2.5": 2,
    "1.2.840.10008.1.2.4.50": 3,
    "1.2.840.10008.1.2.4.51": 4,
    "1.2.840.10008.1.2.4.57": 5,
    "1.2.840.10008.1.2.4.70": 6,
    "1.2.840.10008.1.2.4.80": 7,
    "1.2.840.10008.1.2.4.81": 8,
    "1.2.840.10008.1.2.4.90": 9,
    "1.2.840.10008.1.2.4.91": 10,
    "1.2.840.10008.1.2.1": 11,
}
ITEM_TAG = b"\xfe\xff\x00\xe0"


def write(out, target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def part10(ds):
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def raw_dataset(ds, ts):
    """The data set alone (no preamble, no file meta), encoded in `ts`."""
    fp = DicomBytesIO()
    fp.is_little_endian = ts != ExplicitVRBigEndian
    fp.is_implicit_VR = ts == ImplicitVRLittleEndian
    body = Dataset({k: v for k, v in ds.items()})
    pydicom.filewriter.write_dataset(fp, body)
    return fp.getvalue()


def shrink(path, side):
    """A fixture cut down to side x side pixels, native Explicit VR LE."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    step = max(1, arr.shape[0] // side)
    small = np.ascontiguousarray(arr[::step, ::step][:side, :side])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False
    return ds


def dcmcjpeg(ds, option):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(src, enforce_file_format=True)
        subprocess.run(["dcmcjpeg", option, str(src), str(dst)], check=True)
        return pydicom.dcmread(dst)


def encoded_variants(base12):
    """(name, data set) in every encapsulated syntax the decoders read, from a 12-bit image."""
    out = []
    for ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        ds = copy.deepcopy(base12)
        ds.compress(ts)
        out.append((ts.name, ds))
    ds = copy.deepcopy(base12)
    ds.compress(JPEGLSNearLossless, jls_error=2)
    out.append(("jpeg-ls near", ds))
    ds = copy.deepcopy(base12)
    ds.compress(JPEG2000, j2k_cr=[10])
    out.append(("jpeg 2000", ds))
    out.append(("jpeg extended 12", dcmcjpeg(base12, "+ee")))
    out.append(("jpeg lossless", dcmcjpeg(base12, "+el")))
    out.append(("jpeg lossless sv1", dcmcjpeg(base12, "+e1")))
    eight = copy.deepcopy(base12)
    px = (base12.pixel_array >> 4).astype(np.uint8)
    eight.BitsAllocated = eight.BitsStored = 8
    eight.HighBit = 7
    eight.PixelData = px.tobytes()
    eight["PixelData"].VR = "OB"
    out.append(("jpeg baseline", dcmcjpeg(eight, "+eb")))
    out.append(("native", base12))
    return out


def fragments(ds):
    from pydicom.encaps import generate_fragments

    return list(generate_fragments(ds.PixelData))


def image_header(ds, mode):
    ba = {8: 0, 16: 1, 1: 2, 32: 3}[ds.BitsAllocated]
    h5 = ba | ((ds.BitsStored - 1) << 2)
    h6 = (1 if ds.SamplesPerPixel == 3 else 0) | (0 << 1) | (ds.PixelRepresentation << 4)
    return bytes([mode]) + struct.pack("<HH", ds.Rows, ds.Columns) + bytes([h5 & 0xFF, h6, 0])


def pdu(pdu_type, body):
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def pdata(pc_id, control, data):
    item = bytes([pc_id, control]) + data
    return pdu(4, struct.pack(">I", len(item)) + item)


def command_set(**elements):
    ds = Dataset()
    for k, v in elements.items():
        setattr(ds, k, v)
    raw = raw_dataset(ds, ImplicitVRLittleEndian)
    group_len = Dataset()
    group_len.CommandGroupLength = len(raw)
    return raw_dataset(group_len, ImplicitVRLittleEndian) + raw


def associate_rq():
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "FUZZ"
    primitive.called_ae_title = "RADSTREAM"
    cx = build_context("1.2.840.10008.5.1.4.1.1.1.1", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    primitive.user_information = [ml]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return rq.encode()


def main():
    out = Path(sys.argv[1])
    files = sorted((FIXTURES / "dicom").glob("*/*.dcm"))
    small = [(f, shrink(f, 16)) for f in files]

    for f, ds in small:
        name = f"{f.parent.name}-{f.stem}"
        # Each fixture's own transfer syntax, at 16x16.
        orig_ts = pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID
        again = copy.deepcopy(ds)
        if orig_ts == RLELossless:
            again.compress(RLELossless)
        elif orig_ts != ExplicitVRLittleEndian:
            again.file_meta.TransferSyntaxUID = orig_ts
        write(out, "dataset_file", name, part10(again))
        # dataset_network: byte 0 picks the syntax; 4 = Explicit VR LE, deflated by the target.
        for pick, ts in ((0, ImplicitVRLittleEndian), (1, ExplicitVRLittleEndian), (2, ExplicitVRBigEndian)):
            write(out, "dataset_network", f"{name}-{pick}", bytes([pick]) + raw_dataset(ds, ts))
        explicit = raw_dataset(ds, ExplicitVRLittleEndian)
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        write(out, "dataset_network", f"{name}-3", bytes([3]) + deflater.compress(explicit) + deflater.flush())
        write(out, "dataset_network", f"{name}-4", bytes([4]) + explicit)
        # dicom_json: the data set (odd first byte) and the pydicom DICOM JSON of it (even).
        meta_less = copy.deepcopy(ds)
        del meta_less.PixelData
        write(out, "dicom_json", f"{name}-implicit", bytes([1]) + raw_dataset(ds, ImplicitVRLittleEndian))
        write(out, "dicom_json", f"{name}-explicit", bytes([3]) + explicit)
        write(out, "dicom_json", f"{name}-json", bytes([0]) + meta_less.to_json().encode())

    # STOW-RS answers with a failed instance (PS3.18 F.2 / Store Instances Response).
    failed = {
        "00081198": {"vr": "SQ", "Value": [{
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1.1"]},
            "00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00081197": {"vr": "US", "Value": [0xA900]},
        }]},
        "00081190": {"vr": "UR", "Value": ["http://pacs/studies/1"]},
    }
    write(out, "dicom_json", "stow-failed", bytes([0]) + json.dumps(failed).encode())
    write(out, "dicom_json", "stow-failed-array", bytes([2]) + json.dumps([failed]).encode())

    # image_decode and dataset_file: one 32x32 12-bit image in every syntax.
    base = shrink(FIXTURES / "dicom" / "ts_implicit" / "001.dcm", 32)
    for label, ds in encoded_variants(base):
        name = label.replace(" ", "_").lower()
        ts = ds.file_meta.TransferSyntaxUID
        write(out, "dataset_file", f"ts-{name}", part10(ds))
        mode = SYNTAX_INDEX[ts]
        if ts == ExplicitVRLittleEndian:
            pixels = ds.PixelData
        else:
            pixels = ITEM_TAG.join(fragments(ds))
        write(out, "image_decode", f"{name}", image_header(ds, mode) + pixels)
        if ts == "1.2.840.10008.1.2.4.51":
            write(out, "image_decode", "jpeg12-codestream", image_header(ds, 1) + fragments(ds)[0])
        write(out, "multipart", f"one-{name}", multipart([part10(ds)]))
    # Photos: PNG and JPEG, small, for preprocess_image (byte 1 even) and capture (odd).
    for p in sorted((FIXTURES / "images").glob("*")):
        if p.suffix not in (".png", ".jpg"):
            continue
        img = Image.open(p)
        img.thumbnail((48, 48))
        for fmt in ("PNG", "JPEG"):
            buf = io.BytesIO()
            img.convert("RGB" if fmt == "JPEG" else img.mode).save(buf, fmt)
            for odd in (0, 1):
                write(out, "image_decode", f"photo-{p.stem}-{fmt.lower()}-{odd}",
                      bytes([0, odd, 0, 0, 0, 0, 0, 0]) + buf.getvalue())

    # multipart: two instances, a preamble and epilogue, no part headers.
    parts = [part10(ds) for _, ds in small[:2]]
    write(out, "multipart", "two", multipart(parts))
    write(out, "multipart", "bare", b'multipart/related; boundary=b\n\x00--b\r\n\r\nx\r\n--b--')

    # pdu: association, a C-ECHO and a C-STORE (command + data set fragments), release, abort.
    write(out, "pdu", "associate-rq", associate_rq())
    echo = command_set(AffectedSOPClassUID="1.2.840.10008.1.1", CommandField=0x0030,
                       MessageID=1, CommandDataSetType=0x0101)
    write(out, "pdu", "echo", pdata(1, 0x03, echo))
    write(out, "pdu", "command-alone", b"\xff" + echo)
    sop = small[0][1]
    store = command_set(AffectedSOPClassUID=sop.SOPClassUID, CommandField=0x0001, MessageID=2,
                        Priority=0, CommandDataSetType=0x0000,
                        AffectedSOPInstanceUID=sop.SOPInstanceUID)
    data = raw_dataset(sop, ImplicitVRLittleEndian)
    write(out, "pdu", "store", pdata(1, 0x01, store[:20]) + pdata(1, 0x03, store[20:])
          + pdata(1, 0x00, data[:100]) + pdata(1, 0x02, data[100:]))
    write(out, "pdu", "release-rq", pdu(5, b"\x00" * 4))
    write(out, "pdu", "abort", pdu(7, b"\x00\x00\x00\x02"))


def multipart(parts):
    body = b"preamble\r\n"
    for p in parts:
        body += b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    body += b"--XyZ--\r\nepilogue"
    return b'multipart/related; type="application/dicom"; boundary=XyZ\n\x07' + body


if __name__ == "__main__":
    main()
