"""Drives the node's WADO-RS pixel resources with dicomweb-client: frames (native, RLE and
JPEG 2000 as stored, decoded to octet-stream), instances in another transfer syntax, rendered (JPEG/PNG, window, viewport) and
thumbnails. Expected pixels come from pydicom (+ pylibjpeg), not from the node.

Usage: dicomweb_pixels_check.py BASE_URL TOKEN MONOCHROME1_FILE RLE_FILE NATIVE_FILE
The three files are put in one study (the native file's). Prints a JSON summary; exits 1 on the first mismatch.
"""
import copy
import io
import json
import sys

import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

base, token, mono1_path, rle_path, native_path = sys.argv[1:6]
headers = {"Authorization": f"Bearer {token}"}
client = DICOMwebClient(url=base, headers=headers)
out = {}


def check(cond, what):
    if not cond:
        print(json.dumps({"failed": what, "seen": out}, default=str))
        sys.exit(1)


mono1 = dcmread(mono1_path)
rle = dcmread(rle_path)
native = dcmread(native_path)
study = native.StudyInstanceUID
mono1.StudyInstanceUID = rle.StudyInstanceUID = study

# A 3-frame 64x64 16-bit image, stored native, RLE and JPEG 2000 (each its own instance).
a = native.pixel_array[:64, :64].astype(np.uint16)
frames = np.stack([a, a // 2, a // 3])
multi = dcmread(native_path)
multi.SOPInstanceUID = generate_uid()
multi.NumberOfFrames = 3
multi.Rows, multi.Columns = 64, 64
multi.PixelData = frames.tobytes()
# No stored window: rendered with the frame's min/max.
for k in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
    if k in multi:
        delattr(multi, k)
multi_rle = copy.deepcopy(multi)
multi_rle.SOPInstanceUID = generate_uid()
multi_rle.compress(RLELossless, frames)
multi_j2k = copy.deepcopy(multi)
multi_j2k.SOPInstanceUID = generate_uid()
multi_j2k.compress(JPEG2000Lossless, frames)

for ds in (multi, multi_rle, multi_j2k):
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
stow = client.store_instances([mono1, rle, native, multi, multi_rle, multi_j2k])
out["failed"] = [(f.ReferencedSOPInstanceUID, f.FailureReason) for f in stow.get("FailedSOPSequence", [])]
check(len(stow.get("ReferencedSOPSequence", [])) == 6, "all six stored")


def uids(ds):
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


# Frames as stored.
f = client.retrieve_instance_frames(*uids(mono1), frame_numbers=[1])
check(len(f) == 1 and f[0] == mono1.PixelData, "native frame equals Pixel Data")
f = client.retrieve_instance_frames(*uids(multi), frame_numbers=[3, 1])
check([len(x) for x in f] == [64 * 64 * 2] * 2, "native frame sizes")
check(f[0] == frames[2].tobytes() and f[1] == frames[0].tobytes(), "native frames 3,1 in order")
stored_rle = list(generate_frames(multi_rle.PixelData, number_of_frames=3))
f = client.retrieve_instance_frames(*uids(multi_rle), frame_numbers=[2])
check(f == [stored_rle[1]], "RLE frame 2 as stored")
f = client.retrieve_instance_frames(
    *uids(multi_rle), frame_numbers=[2], media_types=(("image/dicom-rle", RLELossless),)
)
check(f == [stored_rle[1]], "RLE frame 2 with image/dicom-rle")
f = client.retrieve_instance_frames(
    *uids(multi_rle), frame_numbers=[1, 2, 3], media_types=("application/octet-stream",)
)
check([np.frombuffer(x, "<u2").reshape(64, 64).tolist() for x in f] == frames.tolist(),
      "RLE frames decoded to octet-stream")
stored_j2k = list(generate_frames(multi_j2k.PixelData, number_of_frames=3))
f = client.retrieve_instance_frames(
    *uids(multi_j2k), frame_numbers=[3], media_types=(("image/jp2", JPEG2000Lossless),)
)
check(f == [stored_j2k[2]], "JPEG 2000 frame 3 as stored")
f = client.retrieve_instance_frames(*uids(rle), frame_numbers=[1])
check(f == list(generate_frames(rle.PixelData, number_of_frames=1)), "single-frame RLE as stored")

# Whole instances in another transfer syntax: decoded (JPEG 2000 to Explicit VR Little
# Endian) and encoded (RLE to JPEG-LS lossless), read back by pydicom (+ pyjpegls).
got = client.retrieve_instance(
    *uids(multi_j2k), media_types=(("application/dicom", ExplicitVRLittleEndian),)
)
check(got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, "JPEG 2000 retrieved native")
check(got.pixel_array.tolist() == frames.tolist(), "JPEG 2000 retrieved native: same samples")
got = client.retrieve_instance(
    *uids(multi_rle), media_types=(("application/dicom", JPEGLSLossless),)
)
check(got.file_meta.TransferSyntaxUID == JPEGLSLossless, "RLE retrieved as JPEG-LS")
check(got.pixel_array.tolist() == frames.tolist(), "RLE retrieved as JPEG-LS: same samples")

# What the node cannot produce, and bad frame lists.
frames_url = f"{base}/studies/{study}/series/{multi_rle.SeriesInstanceUID}/instances/{multi_rle.SOPInstanceUID}/frames"
r = requests.get(f"{frames_url}/1", headers={**headers, "Accept": 'multipart/related; type="image/jpeg"'})
check(r.status_code == 406 and r.json()["error"]["field"] == "Accept", "JPEG of an RLE frame: 406")
for bad in ["0", "4", "1,x", "1,,2"]:
    r = requests.get(f"{frames_url}/{bad}", headers=headers)
    check(r.status_code == 400 and r.json()["error"]["field"] == "frames", f"frames/{bad}: 400")
    out[f"frames/{bad}"] = r.json()["error"]["problem"]


def expected_8bit(ds, frame=None):
    """pydicom's modality LUT, then its VOI (the stored window) or min/max, to 8 bits."""
    arr = ds.pixel_array if frame is None else ds.pixel_array[frame]
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds:
        # pydicom maps the window onto [0, 2^BitsStored - 1] (unsigned, slope 1 here).
        unit = apply_voi_lut(arr, ds) / (2 ** ds.BitsStored - 1)
    else:
        lo, hi = arr.min(), arr.max()
        unit = (arr - lo) / (hi - lo) if hi > lo else arr * 0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1 - unit
    return np.round(unit * 255).astype(np.int32)


def png(data):
    img = Image.open(io.BytesIO(data))
    check(img.format == "PNG", "a PNG")
    return np.asarray(img).astype(np.int32)


# Rendered: PNG against pydicom, MONOCHROME1 inverted with its stored window.
p = png(client.retrieve_instance_rendered(*uids(mono1), media_types=("image/png",)))
exp = expected_8bit(mono1)
out["mono1_png_max_diff"] = int(np.abs(p - exp).max())
check(p.shape == exp.shape and np.abs(p - exp).max() <= 1, "MONOCHROME1 PNG matches pydicom")
check(p.mean() > 0 and p.mean() < 255, "not a blank image")
# Min/max: the multi-frame image has no stored window.
p = png(client.retrieve_instance_frames_rendered(*uids(multi), frame_numbers=[2], media_types=("image/png",)))
exp = expected_8bit(multi, frame=1)
out["frame2_png_max_diff"] = int(np.abs(p - exp).max())
check(p.shape == (64, 64) and np.abs(p - exp).max() <= 1, "frame 2 rendered matches pydicom")
# JPEG (default), quality, viewport.
j = client.retrieve_instance_rendered(*uids(rle))
img = Image.open(io.BytesIO(j))
check(img.format == "JPEG" and img.size == (rle.Columns, rle.Rows), "JPEG default at full size")
exp = expected_8bit(rle)
out["rle_jpeg_mean_abs_diff"] = float(np.abs(np.asarray(img).astype(np.int32) - exp).mean())
check(out["rle_jpeg_mean_abs_diff"] < 3, "JPEG close to pydicom")
small = client.retrieve_instance_rendered(*uids(rle), params={"viewport": "128,64", "quality": "50"})
check(Image.open(io.BytesIO(small)).size == (64, 64), "viewport fits 64x64 in 128x64")
check(len(small) < len(j), "smaller at quality 50 and 64x64")
# Window parameter: a narrow linear window around the median saturates more pixels.
med = float(np.median(native.pixel_array))
p = png(client.retrieve_instance_rendered(*uids(native), media_types=("image/png",),
                                          params={"window": f"{med},100,linear"}))
arr = native.pixel_array.astype(np.float64)
unit = np.clip((arr - (med - 0.5)) / 99 + 0.5, 0, 1)
unit[arr <= med - 0.5 - 49.5] = 0
unit[arr > med - 0.5 + 49.5] = 1
exp = np.round(unit * 255).astype(np.int32)
out["window_png_max_diff"] = int(np.abs(p - exp).max())
check(np.abs(p - exp).max() <= 1, "window=c,w,linear follows PS3.3 C.11.2.1.2")

# Thumbnails: instance, series, study; 128 box unless viewport.
for path in [
    f"/studies/{study}/thumbnail",
    f"/studies/{study}/series/{native.SeriesInstanceUID}/thumbnail",
    f"/studies/{study}/series/{native.SeriesInstanceUID}/instances/{native.SOPInstanceUID}/thumbnail",
]:
    r = requests.get(base + path, headers=headers)
    check(r.status_code == 200 and r.headers["content-type"] == "image/jpeg", f"thumbnail {path}")
    check(max(Image.open(io.BytesIO(r.content)).size) == 128, f"thumbnail {path} in 128")
r = requests.get(base + f"/studies/{study}/thumbnail", headers={**headers, "Accept": "image/png"},
                 params={"viewport": "32,32"})
check(Image.open(io.BytesIO(r.content)).size == (32, 32), "PNG thumbnail in a 32 viewport")
r = requests.get(base + f"/studies/{study}/thumbnail", headers={**headers, "Accept": "image/gif"})
check(r.status_code == 406, "GIF thumbnail: 406")
r = requests.get(base + f"/studies/{study}/thumbnail", headers=headers, params={"window": "1,2,cubic"})
check(r.status_code == 400 and r.json()["error"]["field"] == "window", "bad window: 400")
print(json.dumps(out, default=str))
