"""Generators of malformed and hostile input files, one short function per kind.

Each writes into a folder and returns the path it made. They build on well-formed tiny files
(the NIfTI, NRRD, MetaImage and DICOM writers of :mod:`vetseg.io.image`) and then break one
thing, so that a test failing here names exactly what a reader let through. Used by
``tests/test_malformed_corpus.py`` and seeded into ``benchmarks/reliability.py``'s fuzzing.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np

from vetseg.io.image import ImageMeta, write_dicom_series, write_image

META = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
SHAPE = (6, 16, 16)


def volume(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """A small int16 'CT' volume of noise around soft tissue."""
    return np.random.default_rng(seed).integers(-200, 300, size=shape).astype(np.int16)


# --------------------------------------------------------------------------- NIfTI bytes
def _nifti_bytes(array: np.ndarray, meta: ImageMeta, folder: Path) -> bytearray:
    """An uncompressed NIfTI-1 file of ``array`` as written by vetseg, as mutable bytes."""
    path = write_image(array, meta, folder / ".tmp-source.nii")
    data = bytearray(path.read_bytes())
    path.unlink()
    return data


def _save(folder: Path, name: str, data: bytes | bytearray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    payload = bytes(data)
    path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    return path


def _put(data: bytearray, offset: int, fmt: str, *values: float) -> None:
    struct.pack_into("<" + fmt, data, offset, *values)


def truncated_gzip(folder: Path, name: str = "truncated.nii.gz") -> Path:
    """A .nii.gz cut in the middle of its compressed stream."""
    whole = gzip.compress(bytes(_nifti_bytes(volume(seed=1), META, folder)))
    path = folder / name
    path.write_bytes(whole[: len(whole) // 2])
    return path


def wrong_magic(folder: Path, name: str = "wrong_magic.nii.gz") -> Path:
    """A PNG signature and noise under a NIfTI name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(3000))
    return path


def gzip_of_garbage(folder: Path, name: str = "garbage.nii.gz") -> Path:
    """A valid gzip stream whose content is no NIfTI header."""
    return _save(folder, name, np.random.default_rng(3).bytes(5000))


def empty_file(folder: Path, name: str = "empty.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")
    return folder / name


def float_volume(folder: Path, name: str, poison: float) -> Path:
    """A float32 scan with one voxel set to ``poison`` (NaN or +-Inf)."""
    array = volume().astype(np.float32)
    array[3, 8, 8] = poison
    return write_image(array, META, folder / name)


def header_dims(folder: Path, name: str, dims: tuple[int, ...]) -> Path:
    """A NIfTI whose header claims ``dims`` (dim[0] first) over the voxels of a tiny volume."""
    data = _nifti_bytes(volume(), META, folder)
    padded = list(dims) + [1] * (8 - len(dims))
    _put(data, 40, "8h", *padded)
    return _save(folder, name, data)


def nifti_spacing(folder: Path, name: str, spacing: tuple[float, float, float]) -> Path:
    """A NIfTI whose pixdim (voxel size) is ``spacing``: zero, negative or NaN."""
    data = _nifti_bytes(volume(), META, folder)
    _put(data, 80, "3f", *spacing)
    return _save(folder, name, data)


def qform_sform_disagree(folder: Path, name: str = "two_affines.nii.gz") -> Path:
    """Both orientation records set, the sform shifted 25 mm from the qform."""
    data = _nifti_bytes(volume(), META, folder)
    (srow_x,) = struct.unpack_from("<f", data, 280 + 12)
    _put(data, 280 + 12, "f", srow_x + 25.0)
    return _save(folder, name, data)


def sheared_sform(folder: Path, name: str = "sheared.nii.gz") -> Path:
    """Only an sform, with a shear: its direction cosines are not orthogonal."""
    data = _nifti_bytes(volume(), META, folder)
    _put(data, 252, "2h", 0, 1)  # qform_code 0, sform_code 1
    _put(data, 280, "4f", 1.0, 0.6, 0.0, 0.0)  # x depends on the j index too
    _put(data, 296, "4f", 0.0, 1.0, 0.0, 0.0)
    _put(data, 312, "4f", 0.0, 0.0, 2.0, 0.0)
    return _save(folder, name, data)


def complex_voxels(folder: Path, name: str = "complex.nii") -> Path:
    """A NIfTI of complex64 voxels (datatype 32)."""
    data = _nifti_bytes(volume().astype(np.float32), META, folder)
    _put(data, 70, "2h", 32, 64)
    return _save(folder, name, bytes(data) + bytes(len(data) - 352))


def rgb_nifti(folder: Path, name: str = "rgb.nii.gz") -> Path:
    """A colour (RGB, 3 components per voxel) NIfTI."""
    import SimpleITK as sitk

    rgb = np.random.default_rng(4).integers(0, 255, size=(*SHAPE, 3)).astype(np.uint8)
    image = sitk.GetImageFromArray(rgb, isVector=True)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / name))
    return folder / name


def flat_image(folder: Path, name: str = "flat.nii.gz") -> Path:
    """One slice: a 2D picture, not a volume."""
    return write_image(volume((1, 16, 16)), META, folder / name)


def huge_constant_floats(folder: Path, name: str = "huge_constant.nii.gz") -> Path:
    """Float64 voxels all near 1e20: too narrow a range for 256 finite histogram bins, which
    crashed ``vetseg info``'s body threshold (found by benchmarks/reliability.py's fuzzing)."""
    array = np.full(SHAPE, 1e20, np.float64)
    array[0, 0, 0] = 1e20 * (1 + 1e-15)
    return write_image(array, META, folder / name)


def four_d(folder: Path, name: str = "four_d.nii.gz") -> Path:
    """A 4D NIfTI (three time points)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.stack([volume(seed=i) for i in range(3)]), isVector=False)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / name))
    return folder / name


# --------------------------------------------------------------------------- NRRD / MetaImage
def nrrd_header(folder: Path, name: str, fields: dict[str, str], payload: bytes = b"") -> Path:
    """A hand-written attached-data NRRD."""
    lines = ["NRRD0004"] + [f"{k}: {v}" for k, v in fields.items()]
    return _save(folder, name, ("\n".join(lines) + "\n\n").encode() + payload)


def terabyte_nrrd(folder: Path, name: str = "huge.nrrd") -> Path:
    fields = {
        "type": "short",
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": "100000 100000 100000",
        "space directions": "(1,0,0) (0,1,0) (0,0,1)",
        "encoding": "gzip",
        "endian": "little",
        "space origin": "(0,0,0)",
    }
    return nrrd_header(folder, name, fields, gzip.compress(bytes(4096)))


def sheared_nrrd(folder: Path, name: str = "sheared.nrrd") -> Path:
    fields = {
        "type": "short",
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": "16 16 6",
        "space directions": "(1,0,0) (0.7,0.7,0) (0,0,2)",
        "encoding": "raw",
        "endian": "little",
        "space origin": "(0,0,0)",
    }
    return nrrd_header(folder, name, fields, volume().tobytes())


def terabyte_mha(folder: Path, name: str = "huge.mha") -> Path:
    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 70000 70000 70000\n"
        "ElementType = MET_SHORT\nElementSpacing = 1 1 1\nCompressedData = True\n"
        "ElementDataFile = LOCAL\n"
    )
    return _save(folder, name, header.encode() + gzip.compress(bytes(1024)))


def mhd_missing_raw(folder: Path, name: str = "lost.mhd") -> Path:
    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 6\nElementType = MET_SHORT\n"
        "ElementSpacing = 1 1 2\nElementDataFile = lost.raw\n"
    )
    return _save(folder, name, header.encode())


def metaimage_flipped_header(folder: Path, name: str = "flipped.mha") -> Path:
    """A valid .mha with two header bytes flipped (the first letter, and the newline after
    ``ElementDataFile = LOCAL``): ITK's MetaIO aborted the whole process on it (found by
    benchmarks/reliability.py's fuzzing; benchmarks/results/reliability_crashes/)."""
    valid = write_image(volume(), META, folder / f"valid_{name}")
    data = bytearray(valid.read_bytes())
    valid.unlink()
    data[0] = 0xA6
    end = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL")
    data[end] = 0x9B
    return _save(folder, name, data)


def corrupt_nrrd(folder: Path, name: str = "noise.nrrd") -> Path:
    return _save(folder, name, np.random.default_rng(5).bytes(4000))


# --------------------------------------------------------------------------- DICOM
def dicom_series(
    folder: Path, shape: tuple[int, int, int] = (8, 16, 16), seed: int = 0, **tags: str
) -> list[Path]:
    """A well-formed CT series (one file per slice), then ``tags`` set on every slice."""
    files = write_dicom_series(volume(shape, seed), META, folder)
    if tags:
        edit_dicom(files, lambda _i, ds: [setattr(ds, k, v) for k, v in tags.items()])
    return files


def edit_dicom(files: list[Path], change) -> None:  # type: ignore[no-untyped-def]
    """Apply ``change(index, dataset)`` to every file and save it back."""
    import pydicom

    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        change(index, ds)
        ds.save_as(path)


def dicom_missing_slice(folder: Path) -> Path:
    files = dicom_series(folder)
    files[4].unlink()
    return folder


def dicom_mixed_series(folder: Path) -> Path:
    """One SeriesInstanceUID, two acquisitions interleaved: 8 slices of 1 mm pixels 2 mm apart
    and 8 of 0.5 mm pixels between them; the positions alone look like one even stack."""
    import pydicom

    first = dicom_series(folder)
    second = dicom_series(folder.parent / f"{folder.name}-second", seed=1)
    uid = pydicom.dcmread(first[0]).SeriesInstanceUID

    def retag(i: int, ds) -> None:  # type: ignore[no-untyped-def]
        ds.SeriesInstanceUID = uid
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i + 1.0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.InstanceNumber = 9 + i

    edit_dicom(second, retag)
    for path in second:
        path.rename(folder / f"second_{path.name}")
    second[0].parent.rmdir()
    return folder


def dicom_gantry_tilt(folder: Path, degrees: float = 15.0) -> Path:
    """Slices stacked along a tilted axis while their rows and columns stay axial."""
    files = dicom_series(folder)
    shift = np.tan(np.radians(degrees)) * 2.0

    def tilt(i: int, ds) -> None:  # type: ignore[no-untyped-def]
        ds.ImagePositionPatient = [0.0, shift * i, 2.0 * i]
        ds.GantryDetectorTilt = degrees

    edit_dicom(files, tilt)
    return folder


def dicom_unsorted_instances(folder: Path) -> Path:
    """Instance numbers and file names in scrambled order; positions are right."""
    files = dicom_series(folder)
    order = np.random.default_rng(6).permutation(len(files))

    def scramble(i: int, ds) -> None:  # type: ignore[no-untyped-def]
        ds.InstanceNumber = int(order[i]) + 1

    edit_dicom(files, scramble)
    for i, path in enumerate(files):
        path.rename(folder / f"img_{order[i]:04d}.dcm")
    return folder


def dicom_duplicate_positions(folder: Path) -> Path:
    """Two slices at the same position (a doubled slice)."""
    files = dicom_series(folder)

    def double(i: int, ds) -> None:  # type: ignore[no-untyped-def]
        if i == 5:
            ds.ImagePositionPatient = [0.0, 0.0, 8.0]

    edit_dicom(files, double)
    return folder


def dicom_modality(folder: Path, modality: str) -> Path:
    dicom_series(folder, Modality=modality)
    return folder


def dicom_rgb_secondary_capture(folder: Path) -> Path:
    """A colour screenshot stored as DICOM (Secondary Capture, RGB)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / "sc.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(7).integers(0, 255, (32, 32, 3), np.uint8).tobytes()
    pydicom.dcmwrite(folder / "sc.dcm", ds, enforce_file_format=True)
    return folder


def dicom_samples_per_pixel(folder: Path, samples: int = 65535) -> Path:
    """A CT series one slice of which claims ``samples`` values per pixel: GDCM throws while
    merely listing the folder's series (found by benchmarks/reliability.py's fuzzing)."""
    files = dicom_series(folder)
    edit_dicom(files[2:3], lambda _i, ds: setattr(ds, "SamplesPerPixel", samples))
    return folder


def dicom_meta_overrun(folder: Path) -> Path:
    """The 4-slice series in which fuzzing flipped 4 header bytes of one slice (its file-meta
    Source AE Title swallows the data set): GDCM allocated about 23 GB listing the folder and
    the process was killed. Copied from benchmarks/results/reliability_crashes/."""
    import shutil

    source = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    shutil.copytree(source / "reliability_crashes" / "dicom_series_killed", folder,
                    dirs_exist_ok=True)  # fmt: skip
    return folder


def dicom_truncated_pixels(folder: Path) -> Path:
    files = dicom_series(folder)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 300])
    return folder


def empty_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("no images here\n")
    return folder


# --------------------------------------------------------------------------- labels
def label_map(
    folder: Path, name: str, meta: ImageMeta, shape: tuple[int, ...], values: dict[int, float]
) -> Path:
    """A label map whose voxels in successive z-slabs hold ``values`` (id -> voxel value)."""
    dtype = np.float32 if any(float(v) != int(v) for v in values.values()) else np.int16
    array = np.zeros(shape, dtype=dtype)
    for k, value in enumerate(values.values()):
        array[k % shape[0], 2:6, 2:6] = value
    return write_image(array, meta, folder / name)


# --------------------------------------------------------------------------- models
def model_pickle_only(model: Path, folder: Path) -> Path:
    """A model folder with model.json and a pickled checkpoint, no safetensors."""
    folder.mkdir(parents=True)
    (folder / "model.json").write_bytes((model / "model.json").read_bytes())
    import torch

    torch.save({"weights": torch.zeros(3)}, folder / "model.pt")
    return folder


def model_pickle_as_safetensors(model: Path, folder: Path) -> Path:
    """model.safetensors that holds a pickle (model.json's checksum updated to match)."""
    import hashlib
    import pickle

    folder.mkdir(parents=True)
    payload = pickle.dumps({"weights": [0.0] * 8})
    (folder / "model.safetensors").write_bytes(payload)
    info = json.loads((model / "model.json").read_text())
    info["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "model.json").write_text(json.dumps(info))
    return folder


def model_json_edited(model: Path, folder: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """A copy of ``model`` whose model.json was edited by ``change(dict)``."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    info = json.loads((model / "model.json").read_text())
    change(info)
    (folder / "model.json").write_text(json.dumps(info))
    return folder


def model_escaping_link(model: Path, folder: Path, name: str = "model.safetensors") -> Path:
    """A model folder whose ``name`` is a symbolic link to a file outside the folder."""
    folder.mkdir(parents=True)
    outside = folder.parent / f"outside-{name}"
    outside.write_bytes((model / name).read_bytes())
    for part in ("model.safetensors", "model.json"):
        if part == name:
            (folder / part).symlink_to(Path("..") / outside.name)
        else:
            (folder / part).write_bytes((model / part).read_bytes())
    return folder


def model_weights_changed(model: Path, folder: Path) -> Path:
    """A copy of ``model`` with one byte of the weights flipped (checksum no longer matches)."""
    folder.mkdir(parents=True)
    weights = bytearray((model / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(weights))
    (folder / "model.json").write_bytes((model / "model.json").read_bytes())
    return folder
