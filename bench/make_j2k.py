"""Re-encode a DICOM file as JPEG 2000 lossless (for the inference benchmark).

    make_j2k.py IN.dcm OUT.dcm      (needs pylibjpeg-openjpeg)
"""

import sys

import pydicom
from pydicom.uid import JPEG2000Lossless


def main():
    ds = pydicom.dcmread(sys.argv[1])
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.save_as(sys.argv[2], enforce_file_format=True)


if __name__ == "__main__":
    main()
