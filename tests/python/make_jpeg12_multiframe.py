"""Write a 3-frame 12-bit JPEG Extended (1.2.840.10008.1.2.4.51) file from pydicom's
JPGExtended.dcm, for the multi-frame tests of the 12-bit JPEG decoder.

    make_jpeg12_multiframe.py OUT.dcm

Frames: 1 = the original codestream; 2 = the same with every quantisation table entry halved
(a different, valid 12-bit image: the dequantised coefficients change, nothing is clipped);
3 = the original again. Encapsulated with a Basic Offset Table. pydicom (+ pylibjpeg) decodes
it, so the frames have a reference.
"""

import sys

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid


def halve_quantisation(codestream: bytes) -> bytes:
    """The codestream with each DQT entry q replaced by max(1, q // 2)."""
    out = bytearray(codestream)
    i = 2  # after SOI
    while i + 4 <= len(out) and out[i] == 0xFF:
        marker = out[i + 1]
        length = int.from_bytes(out[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan: no more tables before the entropy-coded data
            break
        if marker == 0xDB:
            j, end = i + 4, i + 2 + length
            while j < end:
                wide = out[j] >> 4  # Pq: 0 = 8-bit entries, 1 = 16-bit entries
                j += 1
                for _ in range(64):
                    if wide:
                        q = int.from_bytes(out[j:j + 2], "big")
                        out[j:j + 2] = max(1, q // 2).to_bytes(2, "big")
                        j += 2
                    else:
                        out[j] = max(1, out[j] // 2)
                        j += 1
        i += 2 + length
    if bytes(out) == codestream:
        raise SystemExit("no quantisation table found")
    return bytes(out)


def make(out_path):
    ds = dcmread(get_testdata_file("JPGExtended.dcm"))
    original = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([original, halve_quantisation(original), original], has_bot=True)
    ds.NumberOfFrames = 3
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out_path, enforce_file_format=True)
    return ds


if __name__ == "__main__":
    make(sys.argv[1])
