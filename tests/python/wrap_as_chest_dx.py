"""Re-wrap any image as a frontal chest DX, the way a misconfigured modality or a careless
upload would: the pixels of IN (first frame; palette and colour images turned grey) as an
8-bit MONOCHROME2 "DX For Presentation" with Body Part CHEST and View PA, new study, series
and instance UIDs. The header then says chest; only the pixels can tell it is not one.

    wrap_as_chest_dx.py IN OUT
Prints the new StudyInstanceUID.
"""

import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

src = pydicom.dcmread(sys.argv[1], force=True)
if "TransferSyntaxUID" not in src.file_meta:
    # Files without a meta header (ACR-NEMA style) are implicit VR little endian.
    src.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
px = src.pixel_array
frames = int(getattr(src, "NumberOfFrames", 1) or 1)
if frames > 1:
    px = px[0]
pi = str(src.PhotometricInterpretation)
if pi == "PALETTE COLOR":
    px = apply_color_lut(px, src)
elif pi.startswith("YBR"):
    px = convert_color_space(px, pi, "RGB")
px = px.astype(np.float64)
if px.ndim == 3:
    px = px[..., 0] * 0.299 + px[..., 1] * 0.587 + px[..., 2] * 0.114
lo, hi = np.percentile(px, [0.5, 99.5])
grey = np.clip((px - lo) / max(hi - lo, 1e-6), 0, 1)
if pi == "MONOCHROME1":
    grey = 1 - grey
grey = (grey * 255).round().astype(np.uint8)

ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid()
ds.SeriesInstanceUID = generate_uid()
ds.PatientName = "WRAPPED^IMAGE"
ds.PatientID = "WRAP" + ds.StudyInstanceUID[-8:]
ds.PatientBirthDate = ""
ds.PatientSex = "O"
ds.StudyDate = "20261206"
ds.StudyTime = "120000"
ds.AccessionNumber = ""
ds.ReferringPhysicianName = ""
ds.StudyID = "1"
ds.SeriesNumber = 1
ds.InstanceNumber = 1
ds.Modality = "DX"
ds.BodyPartExamined = "CHEST"
ds.ViewPosition = "PA"
ds.PresentationIntentType = "FOR PRESENTATION"
ds.ImageType = ["DERIVED", "PRIMARY"]
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.Rows, ds.Columns = grey.shape
ds.BitsAllocated = 8
ds.BitsStored = 8
ds.HighBit = 7
ds.PixelRepresentation = 0
ds.PixelData = grey.tobytes()
ds.save_as(sys.argv[2], enforce_file_format=True)
print(ds.StudyInstanceUID)
