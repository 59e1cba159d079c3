#!/usr/bin/env python3
"""Copies ONNX Runtime's shared libraries out of the onnxruntime(-gpu) wheel in WHEEL_DIR into
OUT_DIR and links OUT_DIR/libonnxruntime.so to the versioned library, the one file the radstream
binary loads (inference.ort_dylib_path). The wheel ships no unversioned name of its own."""

import pathlib
import re
import sys
import zipfile

wheel_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = sorted(wheel_dir.glob("onnxruntime*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one onnxruntime wheel in {wheel_dir}, found {wheels}")
out.mkdir(parents=True, exist_ok=True)
main = None
with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
        m = re.fullmatch(r"onnxruntime/capi/(lib[^/]*\.so[.0-9]*)", name)
        if not m:
            continue
        target = out / m.group(1)
        target.write_bytes(z.read(name))
        target.chmod(0o755)
        if re.fullmatch(r"libonnxruntime\.so\.\d+\.\d+\.\d+", m.group(1)):
            main = m.group(1)
if main is None:
    sys.exit(f"{wheels[0].name} holds no libonnxruntime.so.X.Y.Z")
(out / "libonnxruntime.so").symlink_to(main)
print(f"{wheels[0].name}: {', '.join(sorted(p.name for p in out.iterdir()))}")
