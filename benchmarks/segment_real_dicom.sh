#!/usr/bin/env bash
# The real DICOM series of ../shared/data through `vetseg segment`: label map, report, preview,
# uncertainty map and a DICOM-SEG checked by dciodvfy. The series was anonymised with its Study,
# Series and SOP Instance UIDs blanked, which a DICOM-SEG must reference, so `--dicom-seg` on it
# is refused; a copy with the SOP Instance UIDs taken from the files' own meta headers and new
# Study/Series UIDs (pixels and geometry untouched) goes through.
# Usage: bash benchmarks/segment_real_dicom.sh [MODEL] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-src/vetseg/assets/human_model}
work=${2:-runs/real_dicom}
series=../shared/data/human/totalseg_example/dicom_series
mkdir -p "$work"
.venv/bin/python - "$series" "$work/series_with_uids" <<'PY'
import sys
from pathlib import Path
import pydicom
from pydicom.uid import CTImageStorage, generate_uid
src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
study, series = generate_uid(), generate_uid()
for path in sorted(src.iterdir()):
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.save_as(out / path.name)
PY
echo "--- the anonymised series itself with --dicom-seg (expected: refused, exit 2)"
.venv/bin/vetseg segment "$model" "$series" --out "$work/refused.nii.gz" --dicom-seg "$work/refused.dcm" \
    || echo "exit code $?"
echo "--- the copy with UIDs"
time .venv/bin/vetseg segment "$model" "$work/series_with_uids" --out "$work/seg.nii.gz" \
    --dicom-seg "$work/seg.dcm" --report "$work/organs" --preview "$work/preview.png" \
    --uncertainty "$work/uncertainty.nii.gz"
if command -v dciodvfy >/dev/null; then
    echo "--- dciodvfy errors:"; dciodvfy "$work/seg.dcm" 2>&1 | grep -c '^Error' || true
fi
