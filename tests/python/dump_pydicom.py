"""Dump pydicom's pixel_array (stored values, no LUTs) of DICOM files as raw f64.

    dump_pydicom.py OUT_DIR FILE...

For each FILE that pydicom can decode writes OUT_DIR/<basename>.f64 (little-endian float64, frame/row/column/sample
order) and prints one line: basename, transfer syntax name, shape, photometric.
pylibjpeg (libjpeg, openjpeg) and pyjpegls must be installed for the compressed syntaxes.
"""

import pathlib
import sys

import numpy as np
import pydicom


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for f in sys.argv[2:]:
        ds = pydicom.dcmread(f)
        name = pathlib.Path(f).name
        try:
            arr = ds.pixel_array
        except Exception as e:  # a plug-in cannot decode it: say so, the test skips the file
            print(f"{name}\tERROR\t{type(e).__name__}: {str(e).splitlines()[-1]}")
            continue
        np.asarray(arr, dtype="<f8").ravel().tofile(out / f"{name}.f64")
        ts = ds.file_meta.TransferSyntaxUID
        print(f"{name}\t{ts.name}\t{'x'.join(map(str, arr.shape))}\t{ds.PhotometricInterpretation}")


if __name__ == "__main__":
    main()
