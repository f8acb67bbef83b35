"""One reader and one writer for CT volumes and label maps, with their geometry.

Every format goes through SimpleITK and comes back as ``(array, ImageMeta)``: the array is
indexed ``[z, y, x]`` (numpy order, the reverse of SimpleITK's ``(x, y, z)``), and
:class:`ImageMeta` holds spacing, origin and direction in SimpleITK's ``(x, y, z)`` order and
its LPS physical space (millimetres). A voxel at array index ``[k, j, i]`` lies at
``origin + direction @ (spacing * (i, j, k))``.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``, 3D Slicer ``.seg.nrrd``),
MetaImage (``.mha``, ``.mhd``) and DICOM series (a folder, searched recursively, or one of its
files). Problems with the user's files become :class:`~vetseg.errors.InputError` with one
sentence naming the file; nothing is ever written half (see :func:`write_image`).

Two traps this module closes:

* ITK reads a truncated NIfTI file without complaint and fills the missing voxels with zeros;
  :func:`read_image` checks the data size against the header first.
* MetaIO and GDCM print their complaints straight to the process's stderr; reads run with
  the native stderr captured into the debug log, so the command line shows one sentence.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vetseg.errors import GridMismatchError, InputError
from vetseg.fileutil import atomic_path

log = logging.getLogger(__name__)

#: Suffixes :func:`read_image` understands, longest first (a name is matched by its ending).
READ_SUFFIXES: tuple[str, ...] = (
    ".seg.nrrd",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".nii",
    ".mha",
    ".mhd",
    ".dcm",
    ".ima",
)
#: Suffixes :func:`write_image` writes.
WRITE_SUFFIXES: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")

_FORMAT_NAMES = {
    ".seg.nrrd": "3D Slicer segmentation (NRRD)",
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".dcm": "DICOM",
    ".ima": "DICOM",
}
_SUPPORTED_TEXT = ".nii, .nii.gz, .nrrd, .seg.nrrd, .mha, .mhd or a DICOM folder"

# DICOM slices whose spacing differs from the median step by more than this fraction are a
# series with missing or doubled slices: ITK would only warn and average the spacing.
_SLICE_STEP_TOLERANCE = 0.05

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class ImageMeta:
    """Where a volume's voxels lie: SimpleITK geometry plus where the volume came from.

    Geometry fields are in SimpleITK's ``(x, y, z)`` order and LPS millimetres. Two metas are
    equal when their geometry is equal; the provenance fields do not take part in ``==``.

    Attributes:
        spacing: voxel size ``(x, y, z)`` in mm.
        origin: physical position of voxel ``[0, 0, 0]`` in mm (LPS).
        direction: 3x3 direction cosines, row-major; column ``i`` is the physical direction
            of index axis ``i`` (x, y, z).
        source: the file or DICOM folder read, if any.
        source_format: e.g. ``"NIfTI"``, ``"DICOM"``.
        series_uid: DICOM SeriesInstanceUID of the series read (may be empty when anonymised).
        study_uid: DICOM StudyInstanceUID.
        sop_uids: SOPInstanceUID of each DICOM slice, in the file's slice order (array axis 0
            as read, before any reorientation).
        dicom_files: the DICOM files of the series, in the same order (for DICOM-SEG).
        series_count: how many series the DICOM folder held (the largest one is read).
        segment_names: ``(label value, name)`` pairs, e.g. from a 3D Slicer ``.seg.nrrd``.
        modality: DICOM Modality of the series read (``"CT"``, ``"MR"``, ...); None otherwise.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = _IDENTITY
    source: str | None = field(default=None, compare=False)
    source_format: str | None = field(default=None, compare=False)
    series_uid: str | None = field(default=None, compare=False)
    study_uid: str | None = field(default=None, compare=False)
    sop_uids: tuple[str, ...] = field(default=(), compare=False)
    dicom_files: tuple[str, ...] = field(default=(), compare=False)
    series_count: int = field(default=0, compare=False)
    segment_names: tuple[tuple[int, str], ...] = field(default=(), compare=False)
    modality: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept lists and numpy arrays from callers but store plain float tuples, so that the
        # dataclass stays hashable and comparable.
        spacing = tuple(float(v) for v in self.spacing)
        origin = tuple(float(v) for v in self.origin)
        # + 0.0 turns -0.0 (from flips) into 0.0 so that printed metas look clean.
        direction = tuple(float(v) + 0.0 for v in np.asarray(self.direction, dtype=float).ravel())
        if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise ValueError(
                "ImageMeta needs 3 spacings, 3 origin coordinates and 9 direction cosines, got "
                f"{len(spacing)}, {len(origin)} and {len(direction)}"
            )
        if min(spacing) <= 0 or not all(math.isfinite(v) for v in spacing):
            raise ValueError(f"ImageMeta spacing must be positive and finite, got {spacing}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        names = tuple((int(k), str(v)) for k, v in dict(self.segment_names).items())
        object.__setattr__(self, "segment_names", tuple(sorted(names)))

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction matrix; column ``i`` is index axis ``i`` (x, y, z) in LPS."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def orientation(self) -> str:
        """Code of the directions the x, y, z index axes point to (``LPS``, ``RAS``, ...)."""
        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.direction)

    def index_to_physical(self, index_zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Physical LPS position (mm) of array indices ``[..., (z, y, x)]``.

        Args:
            index_zyx: one index ``(z, y, x)`` or an array ``[N, 3]`` of them (may be fractional).

        Returns:
            ``(x, y, z)`` LPS millimetres, same leading shape as ``index_zyx``.
        """
        idx = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, point_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fractional array index ``(z, y, x)`` of a physical LPS point (inverse of the above)."""
        p = np.asarray(point_xyz, dtype=float) - np.asarray(self.origin)
        idx_xyz = (p @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing)
        return idx_xyz[..., ::-1]

    @property
    def names(self) -> dict[int, str]:
        """``segment_names`` as a dict."""
        return dict(self.segment_names)


def meta_from_sitk(image: sitk.Image, **provenance: object) -> ImageMeta:
    """The geometry of a SimpleITK image (its first three axes) as an :class:`ImageMeta`."""
    dim = image.GetDimension()
    spacing = list(image.GetSpacing())[:3]
    origin = list(image.GetOrigin())[:3]
    full = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    direction = np.eye(3)
    n = min(dim, 3)
    direction[:n, :n] = full[:n, :n]
    while len(spacing) < 3:  # a 2D image becomes a single-slice volume
        spacing.append(1.0)
        origin.append(0.0)
    return ImageMeta(tuple(spacing), tuple(origin), tuple(direction.ravel()), **provenance)  # type: ignore[arg-type]


def to_sitk_image(array: np.ndarray, meta: ImageMeta) -> sitk.Image:
    """A SimpleITK image of ``array[z, y, x]`` with exactly ``meta``'s geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(meta.spacing)
    image.SetOrigin(meta.origin)
    image.SetDirection(meta.direction)
    return image


# --------------------------------------------------------------------------- helpers
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _locale_kept() -> Iterator[None]:
    """Restore the process's C locale after a native call that changes it (every native call
    runs inside :func:`_native_stderr_captured`, which enters this).

    SimpleITK's DICOM writer (GDCM) switches the C locale to "C" and leaves it there: the rest of
    the process then reads and writes text files as ASCII by default (Python's preferred
    encoding follows LC_CTYPE), so a later report with a "±" failed.
    """
    import locale

    categories = [locale.LC_CTYPE, locale.LC_NUMERIC, locale.LC_COLLATE, locale.LC_TIME]
    categories += [locale.LC_MONETARY] + [getattr(locale, "LC_MESSAGES", locale.LC_CTYPE)]
    saved = {category: locale.setlocale(category) for category in categories}
    try:
        yield
    finally:
        for category, value in saved.items():
            if locale.setlocale(category) != value:
                locale.setlocale(category, value)


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Send what C++ libraries print to file descriptor 2 into the debug log instead, and
    keep the process's C locale as it was (:func:`_locale_kept`).

    MetaIO and GDCM write their complaints to the process's stderr; an error is reported to
    the user as one sentence instead. The redirection is process-wide for its duration,
    hence the lock; where fd 2 cannot be duplicated nothing is captured.
    """
    with _STDERR_LOCK, _locale_kept():
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace").strip()
                if text:
                    log.debug("native library output: %s", text)


def _suffix_of(path: Path) -> str | None:
    """The known suffix that ``path``'s name ends with (lower case), or None."""
    name = path.name.lower()
    for suffix in READ_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def is_dicom_file(path: Path) -> bool:
    """True when the file has the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (header, extensions and voxels), or None if unsure."""
    for endian in "<>":
        if len(header) < 4:
            return None
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4])
        if sizeof_hdr == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            (bitpix,) = struct.unpack(endian + "h", header[72:74])
            (vox_offset,) = struct.unpack(endian + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            (bitpix,) = struct.unpack(endian + "h", header[14:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            (vox_offset,) = struct.unpack(endian + "q", header[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not math.isfinite(vox_offset):
        return None
    sizes = dims[1 : ndim + 1]
    if any(s <= 0 for s in sizes):
        return None
    return max(int(vox_offset), sizeof_hdr) + math.prod(sizes) * bitpix // 8


def _check_nifti_complete(path: Path) -> None:
    """Raise InputError when a NIfTI file holds fewer bytes than its header promises.

    ITK silently zero-fills a truncated NIfTI file. For ``.nii.gz`` the gzip trailer's size
    field (uncompressed size mod 2**32) is compared first, which costs nothing; only when it
    disagrees (a truncated or multi-member stream) is the whole stream decompressed and counted.
    """
    truncated = f"Cannot read {path}: the file is truncated or corrupt"
    try:
        with open(path, "rb") as handle:
            # By content, not name: znzlib (ITK) also reads an uncompressed file named .nii.gz.
            compressed = handle.read(2) == b"\x1f\x8b"
        if not compressed:
            with open(path, "rb") as handle:
                header = handle.read(540)
            expected = _nifti_expected_bytes(header)
            actual = path.stat().st_size
            if expected is not None and actual < expected:
                raise InputError(
                    f"{truncated} (its header promises {expected} bytes, it holds {actual})."
                )
            return
        with gzip.open(path, "rb") as stream:
            header = stream.read(540)
        expected = _nifti_expected_bytes(header)
        if expected is None:
            return  # not a NIfTI header: let ITK say what it is
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", handle.read(4))
        if isize == expected % 2**32:
            return
        total = 0
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (OSError, EOFError, struct.error):
        raise InputError(f"{truncated} (the compressed data ends early or is damaged).") from None
    if total < expected:
        raise InputError(f"{truncated} (its header promises {expected} bytes, it holds {total}).")


def _nifti1_header(path: Path) -> tuple[bytes, str] | None:
    """The first 348 bytes of a NIfTI-1 file and their byte order, or None for anything else."""
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rb") as stream:
            header = stream.read(348)
    except (OSError, EOFError):
        return None  # _check_nifti_complete says what is wrong with the stream
    for endian in "<>":
        if len(header) == 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            return header, endian
    return None


def _nifti_affines(header: bytes, endian: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The qform and sform matrices (4x4, RAS mm) a NIfTI-1 header sets (None where unset)."""
    qform_code, sform_code = struct.unpack(endian + "2h", header[252:256])
    pixdim = struct.unpack(endian + "8f", header[76:108])
    qform = sform = None
    if qform_code > 0:
        b, c, d, *offset = struct.unpack(endian + "6f", header[256:280])
        a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
        rotation = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        qform = np.eye(4)
        qform[:3, :3] = rotation * np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
        qform[:3, 3] = offset
    if sform_code > 0:
        sform = np.eye(4)
        sform[:3] = np.asarray(struct.unpack(endian + "12f", header[280:328])).reshape(3, 4)
    return qform, sform


def _check_nifti_header(path: Path) -> None:
    """Refuse a NIfTI-1 header whose geometry ITK would read wrongly, silently or not at all.

    ITK replaces a zero or NaN voxel size by 1 mm, picks one of two disagreeing orientation
    records (qform, sform) without a word, and fails on a sheared sform with a message about
    orthonormal cosines; each becomes one sentence here instead.
    """
    found = _nifti1_header(path)
    if found is None:
        return
    header, endian = found
    dims = struct.unpack(endian + "8h", header[40:56])
    ndim = dims[0]
    if 1 <= ndim <= 7 and any(d <= 0 for d in dims[1 : ndim + 1]):
        shown = " x ".join(str(d) for d in dims[1 : ndim + 1])
        raise InputError(
            f"Cannot read {path}: its header describes {shown} voxels, an axis of length 0 or "
            "less, so it holds no image."
        )
    pixdim = struct.unpack(endian + "3f", header[80:92])
    if not all(math.isfinite(v) and v != 0 for v in pixdim[: min(max(ndim, 1), 3)]):
        shown = ", ".join(f"{v:g}" for v in pixdim)
        raise InputError(
            f"Cannot read {path}: its voxel spacing ({shown} mm) is zero or not a number, so "
            "sizes and volumes would be wrong."
        )
    qform, sform = _nifti_affines(header, endian)
    if sform is not None:
        columns = sform[:3, :3] / np.maximum(np.linalg.norm(sform[:3, :3], axis=0), 1e-12)
        if not np.all(np.isfinite(sform)) or np.max(np.abs(columns.T @ columns - np.eye(3))) > 1e-3:
            if qform is None:
                raise InputError(
                    f"Cannot read {path}: its voxel axes are not orthogonal (a sheared sform "
                    "and no qform), which no CT scanner writes; resample it to an orthogonal "
                    "grid first."
                )
    if qform is not None and sform is not None and ndim >= 3:
        corners = np.array(
            [
                [i, j, k, 1.0]
                for i in (0, dims[1] - 1)
                for j in (0, dims[2] - 1)
                for k in (0, dims[3] - 1)
            ]
        )
        gap = float(np.max(np.linalg.norm((corners @ sform.T - corners @ qform.T)[:, :3], axis=1)))
        if not math.isfinite(gap) or gap > 0.5 * min(abs(v) for v in pixdim[:3]):
            raise InputError(
                f"Cannot read {path}: its two orientation records (qform and sform) disagree by "
                f"up to {gap:.3g} mm, so where its voxels lie is ambiguous; fix the header (e.g. "
                "set both to the right one with nibabel) first."
            )


def _check_nifti_finite(path: Path) -> None:
    """Refuse a float NIfTI with NaN or infinite voxels.

    ITK's NIfTI reader turns NaN into 0 without a word, so the check reads the file's own
    bytes (in chunks: no second copy of the volume).
    """
    found = _nifti1_header(path)
    if found is None:
        return
    header, endian = found
    (datatype,) = struct.unpack(endian + "h", header[70:72])
    dtype = {16: "f4", 64: "f8"}.get(datatype)
    if dtype is None:
        return
    (vox_offset,) = struct.unpack(endian + "f", header[108:112])
    item = np.dtype(endian + dtype)
    nan = infinite = 0
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            stream.read(max(int(vox_offset), 348))
            while chunk := stream.read(item.itemsize * (1 << 22)):
                values = np.frombuffer(chunk[: len(chunk) - len(chunk) % item.itemsize], item)
                bad = ~np.isfinite(values)
                if bad.any():
                    n = int(np.isnan(values).sum())
                    nan += n
                    infinite += int(bad.sum()) - n
    except (OSError, EOFError):
        return  # _check_nifti_complete reports a damaged stream
    if nan or infinite:
        raise InputError(
            f"Cannot use {path}: {nan} voxel(s) are NaN and {infinite} infinite, which no scan "
            "or label map holds; the file is damaged or was written by a failed computation."
        )


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes); 2**40 where it cannot be asked."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 2**40


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def _check_header_size(reader: sitk.ImageFileReader, path: Path) -> None:
    """Refuse, from the header alone, an image that would not fit in memory or holds no reals.

    A forged or damaged header can ask for terabytes; ITK would try to allocate them before
    finding that the data are missing.
    """
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel:
        raise InputError(
            f"Cannot use {path}: its voxels are complex numbers ({pixel}), not CT values or labels."
        )
    size = [int(s) for s in reader.GetSize()]
    if any(s <= 0 for s in size):
        raise InputError(
            f"Cannot read {path}: its header describes an axis of length 0, so it holds no image."
        )
    bits = int(next(iter(re.findall(r"(\d+)-bit", pixel)), "64"))
    needed = math.prod(size) * reader.GetNumberOfComponents() * bits // 8
    available = _memory_bytes()
    if needed > available:
        shown = " x ".join(str(s) for s in size)
        raise InputError(
            f"Cannot read {path}: its header describes {shown} voxels, which would need "
            f"{_human_bytes(needed)} of memory (this machine has {_human_bytes(available)}); "
            "the header is damaged or the image is far too large."
        )


#: MetaImage element types ITK's MetaIO reads.
_MET_TYPES = frozenset(
    f"MET_{t}"
    for t in ("CHAR", "UCHAR", "SHORT", "USHORT", "INT", "UINT", "LONG", "ULONG", "LONG_LONG",
              "ULONG_LONG", "FLOAT", "DOUBLE")
)  # fmt: skip


def _check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage header that ITK's MetaIO would crash on (found by fuzzing: a header
    with a flipped byte, e.g. ``ElementDataFile = LOCAL`` running into the binary data, aborts
    the whole process natively instead of raising).

    The text header up to ``ElementDataFile`` must be printable ``Key = Value`` lines with
    ``NDims``, as many positive ``DimSize`` values and a known ``ElementType``; the data file
    must be ``LOCAL``, a ``LIST`` or ``%d`` pattern, or a file beside the header.
    """
    corrupt = f"Cannot read {path}: its MetaImage header is corrupt"
    with open(path, "rb") as handle:
        head = handle.read(65536)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InputError(f"{corrupt} (a header line that is not text).") from None
        if not line:
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.replace("_", "").isalnum() or not value.isprintable():
            raise InputError(f"{corrupt} (a line that is not 'Key = Value': {line[:40]!r}).")
        fields[key] = value
        if key == "ElementDataFile":
            break
    else:
        raise InputError(f"{corrupt} (no ElementDataFile line).")
    try:
        ndims = int(fields.get("NDims", ""))
        sizes = [int(v) for v in fields.get("DimSize", "").split()]
    except ValueError:
        raise InputError(f"{corrupt} (NDims or DimSize is not a whole number).") from None
    if not 1 <= ndims <= 4 or len(sizes) != ndims or min(sizes) < 1:
        raise InputError(f"{corrupt} (NDims {ndims} with DimSize {sizes}).")
    if fields.get("ElementType") not in _MET_TYPES:
        raise InputError(f"{corrupt} (unknown ElementType {fields.get('ElementType')!r}).")
    data = fields["ElementDataFile"]
    if data == "LOCAL" or data.startswith("LIST") or "%" in data:
        return
    if not (path.parent / data).is_file():
        raise InputError(f"{corrupt} (its voxel file {data} is missing).")


def _read_file(path: Path, suffix: str) -> sitk.Image:
    """Read one image file with SimpleITK, turning its failures into one sentence.

    The header is checked before any voxel is read: its geometry (NIfTI), then the memory the
    voxels would need, then (NIfTI) that the file holds them all.
    """
    kind = _FORMAT_NAMES.get(suffix, "image")
    corrupt = f"Cannot read {path}: the file is truncated, corrupt or not a valid {kind} file."
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_header(path)
    if suffix in (".mha", ".mhd"):
        _check_metaimage_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _native_stderr_captured():
            reader.ReadImageInformation()
    except RuntimeError:
        if path.stat().st_size == 0:
            raise InputError(f"Cannot read {path}: the file is empty.") from None
        raise InputError(corrupt) from None
    _check_header_size(reader, path)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
        _check_nifti_finite(path)
    try:
        with _native_stderr_captured():
            return reader.Execute()
    except RuntimeError:
        raise InputError(corrupt) from None


# --------------------------------------------------------------------------- DICOM
@dataclass
class _Series:
    uid: str
    files: list[str]


def _check_dicom_headers(folder: Path, names: list[str]) -> None:
    """Refuse a DICOM file whose header pydicom finds broken, before GDCM parses it.

    Found by fuzzing: a slice whose file-meta element lengths were flipped (one element
    swallowing the whole data set) made GDCM allocate about 23 GB while listing the folder,
    and the kernel killed the process. Only files with the ``DICM`` magic are looked at (others
    GDCM ignores too); a header read stops before the pixel data (about a millisecond a file).
    """
    import pydicom

    for name in sorted(names):
        path = folder / name
        try:
            with open(path, "rb") as handle:
                handle.seek(128)
                if handle.read(4) != b"DICM":
                    continue
        except OSError:
            continue
        broken = f"Cannot read {folder}: the DICOM file {name} has a corrupt header"
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - pydicom cannot parse it: neither can GDCM safely
            raise InputError(f"{broken}.") from None
        if len(dataset) == 0:
            raise InputError(f"{broken} (its file meta runs over the data set).")


def _find_series(folder: Path, recursive: bool = True) -> list[_Series]:
    """All DICOM image series in ``folder`` (and its subfolders), largest first."""
    found: list[_Series] = []
    with _native_stderr_captured():
        for current, dirs, _files in os.walk(folder):
            dirs.sort()
            if not recursive:
                dirs.clear()
            _check_dicom_headers(Path(current), _files)
            try:
                for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(current):
                    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(current, uid)
                    if files:
                        found.append(_Series(uid, list(files)))
            except RuntimeError:
                # GDCM refuses some header values while merely listing the series (found by
                # fuzzing: SamplesPerPixel 65535 in one slice).
                raise InputError(
                    f"Cannot read {folder}: a DICOM file in {current} has a header GDCM cannot "
                    "make sense of (corrupt or not an image)."
                ) from None
    # Most slices first; ties keep the walk order, so the choice is deterministic.
    found.sort(key=lambda s: -len(s.files))
    return found


#: Per-slice DICOM tags that one acquisition keeps constant; ITK uses the first slice's value.
_CONSTANT_TAGS = {
    "0028|0030": "pixel spacing",
    "0020|0037": "slice orientation",
    "0028|0010": "rows",
    "0028|0011": "columns",
}
#: A slice stack leaning more than this (degrees) from the slices' normal is a gantry tilt.
_TILT_TOLERANCE_DEGREES = 0.5


def _check_slice_steps(reader: sitk.ImageSeriesReader, image: sitk.Image, source: Path) -> None:
    """Raise InputError for slices ITK would stack wrongly without a word.

    That is: slices of one series UID that differ in pixel spacing, orientation or size (two
    acquisitions mixed), a stack that leans against its slices' normal (gantry tilt: ITK
    would place every slice as if upright), and uneven steps (missing or doubled slices).
    """
    count = image.GetSize()[2] if image.GetDimension() == 3 else 1
    if count < 2:
        return
    for key, what in _CONSTANT_TAGS.items():
        values = {
            reader.GetMetaData(i, key).strip()
            for i in range(count)
            if reader.HasMetaDataKey(i, key)
        }
        if len(values) > 1:
            shown = " and ".join(sorted(values)[:2])
            raise InputError(
                f"Cannot read {source}: the DICOM series mixes acquisitions (the {what} differs "
                f"between slices: {shown}); export the one series to segment."
            )
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    points = []
    for i in range(count):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return
        try:
            ipp = [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
        except ValueError:
            return
        if len(ipp) != 3:
            return
        points.append(ipp)
    stack = np.asarray(points[-1]) - np.asarray(points[0])
    length = float(np.linalg.norm(stack))
    if length > 0:
        lean = math.degrees(math.acos(min(1.0, abs(float(np.dot(stack, normal))) / length)))
        if lean > _TILT_TOLERANCE_DEGREES:
            raise InputError(
                f"Cannot read {source}: the slices were acquired with a gantry tilt of "
                f"{lean:.1f} degrees, so the stack is sheared; resample it to an upright grid "
                "first (e.g. dcm2niix corrects gantry tilt)."
            )
    if count < 3:
        return
    positions = [float(np.dot(p, normal)) for p in points]
    steps = np.diff(np.asarray(positions))
    median = float(np.median(np.abs(steps)))
    if median <= 0 or np.max(np.abs(np.abs(steps) - median)) > _SLICE_STEP_TOLERANCE * median:
        raise InputError(
            f"Cannot read {source}: the DICOM slices are unevenly spaced (steps from "
            f"{np.abs(steps).min():.3g} to {np.abs(steps).max():.3g} mm), so slices are missing "
            "or the series mixes acquisitions."
        )


def _read_dicom(
    folder: Path, source: Path, only_file: Path | None = None
) -> tuple[sitk.Image, dict]:
    """Read the largest DICOM series under ``folder`` (or the one holding ``only_file``)."""
    series = _find_series(folder) if only_file is None else _find_series_of(folder, only_file)
    if not series:
        raise InputError(f"Cannot read {source}: the folder holds no DICOM image series.")
    chosen = series[0]
    if len(series) > 1:
        log.info(
            "%s holds %d DICOM series; reading the largest (%d slices, UID %s)",
            source,
            len(series),
            len(chosen.files),
            chosen.uid,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _native_stderr_captured():
            image = reader.Execute()
    except RuntimeError:
        raise InputError(
            f"Cannot read {source}: its DICOM files are corrupt or not a readable image series."
        ) from None
    _check_slice_steps(reader, image, source)

    def tag(i: int, key: str) -> str:
        return reader.GetMetaData(i, key).strip() if reader.HasMetaDataKey(i, key) else ""

    n = len(chosen.files)
    provenance = {
        "source_format": "DICOM",
        "series_uid": tag(0, "0020|000e") or chosen.uid,
        "study_uid": tag(0, "0020|000d") or None,
        "sop_uids": tuple(tag(i, "0008|0018") for i in range(n)),
        "dicom_files": tuple(str(Path(f).resolve()) for f in chosen.files),
        "series_count": len(series),
        "modality": tag(0, "0008|0060").upper() or None,
    }
    return image, provenance


def _find_series_of(folder: Path, file: Path) -> list[_Series]:
    """The series in ``folder`` that contains ``file``, or the file alone (e.g. multi-frame)."""
    target = file.resolve()
    for s in _find_series(folder, recursive=False):
        if any(Path(f).resolve() == target for f in s.files):
            return [s]
    return [_Series("", [str(file)])]


# --------------------------------------------------------------------------- segments (NRRD)
def _segment_table(image: sitk.Image) -> list[dict[str, str]]:
    """3D Slicer ``Segment{i}_*`` metadata of an image, one dict per segment, in index order."""
    table: dict[int, dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        if not key.startswith("Segment") or "_" not in key:
            continue
        head, _, attr = key.partition("_")
        number = head[len("Segment") :]
        if number.isdigit():
            table.setdefault(int(number), {})[attr] = image.GetMetaData(key)
    return [table[i] for i in sorted(table)]


def _merge_segment_layers(
    layers: np.ndarray, segments: list[dict[str, str]], source: Path
) -> tuple[np.ndarray, dict[int, str]]:
    """One integer label map from Slicer segmentation layers.

    Args:
        layers: ``[z, y, x, L]`` (or ``[z, y, x]`` for one layer) label values per layer.
        segments: the ``Segment{i}_*`` tables; ``LabelValue`` (default 1) and ``Layer``
            (default: the segment's index, the layout of Slicer before 4.11).
        source: file name for messages.

    Returns:
        The label map and its names. A segment keeps its label value unless an earlier
        segment (in another layer) already took that value; then it gets the next free one.
        Where segments of different layers overlap, the later segment wins.
    """
    if layers.ndim == 3:
        layers = layers[..., None]
    n_layers = layers.shape[-1]
    if not segments:
        if n_layers == 1:
            return layers[..., 0], {}
        raise InputError(
            f"Cannot read {source}: it has {n_layers} values per voxel and no segment "
            "metadata, so it is neither a CT scan nor a label map."
        )
    if n_layers == 1:
        names = {}
        for i, seg in enumerate(segments):
            value = int(seg.get("LabelValue", "1"))
            names[value] = seg.get("Name", f"Segment_{i}")
        if len(names) == len(segments):  # all values distinct: the layer is the label map
            return layers[..., 0], names
    values = [int(seg.get("LabelValue", "1")) for seg in segments]
    next_free = max(values + [0]) + 1
    out = np.zeros(layers.shape[:3], dtype=np.uint16)
    names = {}
    for i, seg in enumerate(segments):
        layer = int(seg.get("Layer", str(i)))
        if not 0 <= layer < n_layers:
            raise InputError(
                f"Cannot read {source}: segment {i} names layer {layer}, which is missing."
            )
        value = values[i]
        target = value
        if target in names or target == 0:
            target, next_free = next_free, next_free + 1
        out[layers[..., layer] == value] = target
        names[target] = seg.get("Name", f"Segment_{i}")
    if out.max(initial=0) <= 255:
        out = out.astype(np.uint8)
    return out, names


def _segment_metadata(array: np.ndarray, names: Mapping[int, str]) -> dict[str, str]:
    """3D Slicer segmentation header fields for a single-layer label map."""
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_SourceRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    from scipy import ndimage  # imported here: scipy.ndimage costs 0.3 s to import

    # One pass for all bounding boxes (find_objects) rather than one scan per label.
    boxes = ndimage.find_objects(array.astype(np.int32, copy=False))
    present = {i + 1 for i, box in enumerate(boxes) if box is not None}
    values = sorted({int(k) for k in names if int(k) != 0} | present)
    for i, value in enumerate(values):
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is not None:
            # Slicer's extent is (x0 x1 y0 y1 z0 z1) in voxel indices, inclusive.
            (z, y, x) = box
            extent = f"{x.start} {x.stop - 1} {y.start} {y.stop - 1} {z.start} {z.stop - 1}"
        else:
            extent = "0 -1 0 -1 0 -1"
        # Distinct colours by the golden-angle hue walk; Slicer shows them as given.
        r, g, b = _hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9)
        name = names.get(value, f"label_{value}")
        fields.update(
            {
                f"Segment{i}_ID": f"Segment_{value}",
                f"Segment{i}_Name": name,
                f"Segment{i}_NameAutoGenerated": "0",
                f"Segment{i}_LabelValue": str(value),
                f"Segment{i}_Layer": "0",
                f"Segment{i}_Color": f"{r:.4f} {g:.4f} {b:.4f}",
                f"Segment{i}_ColorAutoGenerated": "0",
                f"Segment{i}_Extent": extent,
                f"Segment{i}_Tags": "Segmentation.Status:inprogress|",
            }
        )
    return fields


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# --------------------------------------------------------------------------- reading
def read_image(path: str | Path, *, expect_3d: bool = True) -> tuple[np.ndarray, ImageMeta]:
    """Read a CT volume or label map with its geometry.

    Args:
        path: a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``, ``.seg.nrrd``) or
            MetaImage (``.mha``, ``.mhd``) file, a DICOM series folder (searched recursively;
            with several series, the one with the most slices is read and its UID recorded in
            the meta), or one DICOM file (its series is read).
        expect_3d: when True (the default), a 2D image, a volume with a single slice and a 4D
            image are errors. When False they are returned as they are: a 2D image as
            ``[1, y, x]``, a 4D image as ``[t, z, y, x]`` with the geometry of its first three
            axes.

    Returns:
        ``(array, meta)``: ``array`` indexed ``[z, y, x]`` in the file's own dtype (DICOM:
        rescaled to HU by ITK), ``meta`` its geometry and provenance. A 3D Slicer segmentation
        with several layers comes back as one integer label map, names in
        ``meta.segment_names``.

    Raises:
        InputError: missing file, unknown type, truncated or corrupt file, empty DICOM folder,
            uneven DICOM slices, a multi-component (colour) image, or the wrong dimension.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Cannot read {path}: no such file or folder.")
    suffix = _suffix_of(path)
    provenance: dict = {"source": str(path)}
    if path.is_dir():
        image, more = _read_dicom(path, path)
        provenance.update(more)
    elif suffix in (".dcm", ".ima") or (suffix is None and is_dicom_file(path)):
        image, more = _read_dicom(path.parent, path, only_file=path)
        provenance.update(more)
    elif suffix is None:
        shown = "".join(path.suffixes[-2:]) or "no extension"
        raise InputError(
            f"Cannot read {path}: unknown file type ({shown}); vetseg reads {_SUPPORTED_TEXT}."
        )
    else:
        if not os.access(path, os.R_OK):
            raise InputError(f"Cannot read {path}: permission denied.")
        image = _read_file(path, suffix)
        provenance["source_format"] = _FORMAT_NAMES[suffix]

    segments = _segment_table(image) if suffix in (".nrrd", ".seg.nrrd", ".nhdr") else []
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1 or segments:
        array = sitk.GetArrayFromImage(image)
        if image.GetDimension() != 3:
            raise InputError(f"Cannot read {path}: a multi-layer image must be 3D.")
        array, names = _merge_segment_layers(array, segments, path)
        provenance["segment_names"] = tuple(names.items())
        meta = meta_from_sitk(image, **provenance)
        _check_voxels(array, meta, path)
        return np.ascontiguousarray(array), meta

    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        dim, size = 3, image.GetSize()
    if expect_3d:
        if dim == 2 or (dim == 3 and 1 in size):
            shown = " x ".join(str(s) for s in size)
            raise InputError(
                f"Cannot use {path}: it is a 2D image ({shown} voxels); vetseg needs a 3D volume."
            )
        if dim != 3:
            shown = " x ".join(str(s) for s in size)
            raise InputError(
                f"Cannot use {path}: it is a {dim}D image ({shown} voxels); vetseg needs one "
                "3D volume."
            )
    array = sitk.GetArrayFromImage(image)
    if dim == 2:
        array = array[None]
    meta = meta_from_sitk(image, **provenance)
    _check_voxels(array, meta, path)
    return np.ascontiguousarray(array), meta


def _check_voxels(array: np.ndarray, meta: ImageMeta, path: Path) -> None:
    """Refuse voxel values and grids that no scan or label map has (NaN, Inf, sheared axes)."""
    if np.iscomplexobj(array):
        raise InputError(f"Cannot use {path}: its voxels are complex numbers, not CT values.")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            nan = int(np.isnan(array).sum())
            raise InputError(
                f"Cannot use {path}: {nan} voxel(s) are NaN and {int((~finite).sum()) - nan} "
                "infinite, which no scan or label map holds; the file is damaged or was written "
                "by a failed computation."
            )
    direction = meta.direction_matrix
    if np.max(np.abs(direction.T @ direction - np.eye(3))) > 1e-3:
        raise InputError(
            f"Cannot read {path}: its voxel axes are not orthogonal (a sheared grid), which no "
            "CT scanner writes; resample it to an orthogonal grid first."
        )


#: DICOM modalities a CT command accepts: CT, and OT (other), which some micro-CT exports use.
CT_MODALITIES = frozenset({"CT", "OT"})
_MODALITY_NAMES = {
    "MR": "magnetic resonance",
    "PT": "PET",
    "NM": "nuclear medicine",
    "US": "ultrasound",
    "SC": "secondary capture (screenshot)",
    "SEG": "segmentation",
    "CR": "radiograph",
    "DX": "radiograph",
    "XA": "angiography",
    "MG": "mammography",
}


def read_scan(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """:func:`read_image` for a CT scan: a DICOM series of another modality is refused.

    Raises:
        InputError: as :func:`read_image`, or a DICOM series whose Modality is not CT (e.g. MR).
    """
    array, meta = read_image(path)
    if meta.modality and meta.modality not in CT_MODALITIES:
        name = _MODALITY_NAMES.get(meta.modality, "non-CT")
        raise InputError(
            f"Cannot use {path}: it is a {name} series (DICOM Modality {meta.modality}), and "
            "vetseg segments CT."
        )
    return array, meta


def _smallest_integer_dtype(array: np.ndarray) -> np.dtype:
    """uint8, uint16, int16 or int32 (in that order), whichever holds ``array``'s values."""
    lo = int(array.min(initial=0))
    hi = int(array.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def read_label(
    path: str | Path,
    *,
    reference: ImageMeta | None = None,
    reference_shape: Sequence[int] | None = None,
    reference_name: str | Path | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map (integer ids, 0 = background), optionally checked against its image.

    Args:
        path: any format :func:`read_image` reads.
        reference: the image's geometry; the label map must share its voxel grid.
        reference_shape: the image's array shape ``[z, y, x]``; checked when given.
        reference_name: the image's name for messages (default ``reference.source``).

    Returns:
        ``(labels, meta)``. ``labels`` is integer: the file's own integer dtype (uint8/uint16
        ...), or the smallest one that holds a float file's integral values. With a
        reference, the labels are in the reference's array order.

        A label map that covers the very same voxels as the reference but stores them in
        another axis order or direction (e.g. a NIfTI written with the y axis flipped, as
        dcm2niix and TotalSegmentator do for DICOM input) is transposed/flipped into the
        reference's order: no resampling, every voxel keeps its physical position. Its meta
        then carries the reference's geometry.

    Raises:
        InputError: as :func:`read_image`; float values that are not whole numbers, negative
            ids.
        GridMismatchError: shape, spacing, origin or direction differ from the reference
            beyond the tolerance of :func:`check_same_grid`.
    """
    path = Path(path)
    array, meta = read_image(path)
    if not np.issubdtype(array.dtype, np.integer):
        if array.dtype == bool:
            array = array.astype(np.uint8)
        else:
            finite = np.isfinite(array).all()
            if not finite or not np.array_equal(array, np.round(array)):
                raise InputError(
                    f"Cannot use {path} as a label map: it holds non-integer values, so it is "
                    "an image rather than organ labels."
                )
            array = array.astype(_smallest_integer_dtype(array))
    if array.size and int(array.min()) < 0:
        raise InputError(
            f"Cannot use {path} as a label map: it holds negative values (down to "
            f"{int(array.min())}), so it looks like an image rather than organ labels."
        )
    if array.dtype.itemsize > 2:
        array = array.astype(_smallest_integer_dtype(array))
    if reference is None:
        return array, meta

    ref_name = str(reference_name or reference.source or "the reference image")
    try:
        check_same_grid(array.shape, meta, reference_shape, reference, str(path), ref_name)
        return array, meta
    except GridMismatchError as mismatch:
        reordered = _reorder_to_reference(array, meta, reference, reference_shape)
        if reordered is None:
            raise mismatch from None
        array_r, meta_r = reordered
        try:
            check_same_grid(array_r.shape, meta_r, reference_shape, reference, str(path), ref_name)
        except GridMismatchError:
            raise mismatch from None
        log.info("%s stores %s's grid in another axis order; reordered to match", path, ref_name)
        geometry = {"spacing": reference.spacing, "origin": reference.origin}
        return array_r, replace(meta, direction=reference.direction, **geometry)


def _reorder_to_reference(
    array: np.ndarray,
    meta: ImageMeta,
    reference: ImageMeta,
    reference_shape: Sequence[int] | None,
) -> tuple[np.ndarray, ImageMeta] | None:
    """``array`` transposed/flipped to the reference's axes, or None when that cannot match."""
    plan = _axis_plan(meta.direction_matrix, reference.direction_matrix)
    moved, moved_meta = _apply_plan(array, meta, plan)
    if reference_shape is not None and tuple(moved.shape) != tuple(reference_shape):
        return None
    return moved, moved_meta


def check_same_grid(
    shape_a: Sequence[int] | None,
    meta_a: ImageMeta,
    shape_b: Sequence[int] | None,
    meta_b: ImageMeta,
    name_a: str,
    name_b: str,
    tol: float = 1e-3,
) -> None:
    """Raise GridMismatchError unless two volumes share one voxel grid.

    Args:
        shape_a, shape_b: array shapes ``[z, y, x]``; the shape check is skipped when either
            is None.
        meta_a, meta_b: their geometry.
        name_a, name_b: file names for the message.
        tol: relative tolerance on spacing, absolute on direction cosines, and on the origin
            in units of the larger voxel size (1e-3: a thousandth of a voxel, well above the
            float32 rounding of NIfTI headers, far below any real misregistration).

    Raises:
        GridMismatchError: one sentence naming both files and what differs.
    """
    problem = None
    if shape_a is not None and shape_b is not None and tuple(shape_a) != tuple(shape_b):
        size_a = " x ".join(str(s) for s in tuple(shape_a)[::-1])
        size_b = " x ".join(str(s) for s in tuple(shape_b)[::-1])
        problem = f"sizes {size_a} and {size_b} voxels (x, y, z)"
    else:
        sa, sb = np.asarray(meta_a.spacing), np.asarray(meta_b.spacing)
        oa, ob = np.asarray(meta_a.origin), np.asarray(meta_b.origin)
        if np.any(np.abs(sa - sb) > tol * np.maximum(sa, sb)):
            problem = f"spacings {_fmt(sa)} and {_fmt(sb)} mm"
        elif np.max(np.abs(meta_a.direction_matrix - meta_b.direction_matrix)) > tol:
            problem = f"orientations {meta_a.orientation} and {meta_b.orientation}"
            if meta_a.orientation == meta_b.orientation:
                problem = "direction cosines (oblique by different angles)"
        elif np.max(np.abs(oa - ob)) > tol * float(max(sa.max(), sb.max())):
            problem = f"origins {_fmt(oa)} and {_fmt(ob)} mm"
    if problem is not None:
        raise GridMismatchError(f"{name_a} and {name_b} are not on the same voxel grid: {problem}.")


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# --------------------------------------------------------------------------- writing
def _writable_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise InputError(
        f"Cannot write {path}: unknown file type; vetseg writes "
        ".nii, .nii.gz, .nrrd, .seg.nrrd, .mha or .mhd."
    )


def _storage_array(array: np.ndarray) -> np.ndarray:
    """The array in a dtype every writer handles: wide integers narrowed where values allow."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize > 2:
        narrow = _smallest_integer_dtype(array)
        if narrow.itemsize < array.dtype.itemsize:
            return array.astype(narrow)
    return array


def _looks_like_labels(array: np.ndarray) -> bool:
    """Non-negative integers with few distinct values: worth naming as segments."""
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return False
    return int(array.min()) >= 0 and np.unique(array).size <= 256


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_image(
    array: np.ndarray,
    meta: ImageMeta,
    path: str | Path,
    *,
    segment_names: Mapping[int, str] | None = None,
) -> Path:
    """Write ``array[z, y, x]`` with exactly ``meta``'s geometry, atomically.

    The format follows the extension (``.nii``, ``.nii.gz``, ``.nrrd``, ``.seg.nrrd``,
    ``.mha``, ``.mhd``); every format but ``.nii`` is compressed. The data go to a temporary
    name in the target's folder and are renamed into place when complete, so the target is
    either the old file or the whole new one; parent folders are created.

    Args:
        array: ``[z, y, x]``. Booleans become uint8; int32/int64 arrays are narrowed to the
            smallest of uint8/uint16/int16/int32 that holds their values (a label map stays
            integer, uint8 or uint16); other dtypes are kept.
        meta: the geometry to write.
        path: target file.
        segment_names: label value -> organ name. For ``.seg.nrrd`` (and ``.nrrd``) the 3D
            Slicer segment fields are written (``Segment{i}_Name``, ``_LabelValue``,
            ``_Layer=0``, ``_ID``, colour, extent) so Slicer and vetseg show the names. A
            ``.seg.nrrd`` target without names uses ``meta.segment_names`` or ``label_<id>``.
            Other formats have no place for names and ignore them.

    Returns:
        ``path``.

    Raises:
        InputError: unknown extension, or the file system refused the write.
        ValueError: ``array`` is not 3D.
    """
    path = Path(path)
    suffix = _writable_suffix(path)
    if array.ndim != 3:
        raise ValueError(f"write_image needs a 3D array [z, y, x], got shape {array.shape}")
    data = _storage_array(np.asarray(array))
    image = to_sitk_image(data, meta)
    names = dict(segment_names) if segment_names is not None else None
    if suffix == ".seg.nrrd" and names is None and _looks_like_labels(data):
        names = meta.names
    if names is not None and suffix in (".nrrd", ".seg.nrrd") and _looks_like_labels(data):
        for key, value in _segment_metadata(data, names).items():
            image.SetMetaData(key, value)
    try:
        if suffix == ".mhd":
            _write_mhd_atomic(image, path)
        else:
            with atomic_path(path, suffix=suffix) as tmp:
                sitk.WriteImage(image, str(tmp), True)
                _fsync(tmp)
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Cannot write {path}: {reason.rstrip('.')}.") from None
    return path


def _write_mhd_atomic(image: sitk.Image, path: Path) -> None:
    """Write a ``.mhd`` header and its data file; the header, which points to the data, last.

    Both are written under their final names into a temporary folder beside the target (the
    header names its data file, so the names cannot change afterwards) and then moved in.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        sitk.WriteImage(image, str(staging / path.name), True)
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        for item in written:
            _fsync(item)
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_dicom_series(
    array: np.ndarray,
    meta: ImageMeta,
    folder: str | Path,
    *,
    series_description: str = "vetseg",
    modality: str = "CT",
) -> list[Path]:
    """Write a CT volume as a DICOM series, one file per slice (for tests, demos, viewers).

    DICOM stores the slice normal as the cross product of the row and column directions, so
    the direction must be right-handed; a left-handed one (det -1) is made right-handed by
    reversing the slice order, which keeps every voxel's physical position.

    Args:
        array: ``[z, y, x]`` HU values (stored as int16).
        meta: geometry.
        folder: created; must not already hold files of another series.
        series_description: DICOM SeriesDescription.
        modality: DICOM Modality.

    Returns:
        The slice files in slice order.
    """
    folder = Path(folder)
    direction = meta.direction_matrix.copy()
    origin = np.asarray(meta.origin, dtype=float)
    volume = np.asarray(array)
    if np.linalg.det(direction) < 0:
        origin = origin + direction[:, 2] * meta.spacing[2] * (volume.shape[0] - 1)
        direction[:, 2] *= -1
        volume = volume[::-1]
    volume = np.clip(np.round(volume), -32768, 32767).astype(np.int16)
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    study_uid = _new_uid()
    series_uid = _new_uid()
    iop = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    names = []
    try:
        for k in range(volume.shape[0]):
            position = origin + direction[:, 2] * meta.spacing[2] * k
            slice_image = sitk.GetImageFromArray(volume[k])
            slice_image.SetSpacing(meta.spacing[:2])
            tags = {
                "0008|0060": modality,
                "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                "0008|0018": _new_uid(),
                "0008|103e": series_description,
                "0010|0010": "vetseg^synthetic",
                "0010|0020": "vetseg",
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0020|0011": "1",
                "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.10g}" for v in position),
                "0020|0037": iop,
                "0018|0050": f"{meta.spacing[2]:.10g}",
                "0028|1052": "0",
                "0028|1053": "1",
                "0028|1054": "HU",
            }
            for key, value in tags.items():
                slice_image.SetMetaData(key, value)
            name = f"slice_{k:04d}.dcm"
            writer.SetFileName(str(staging / name))
            with _native_stderr_captured():
                writer.Execute(slice_image)
            names.append(name)
        if folder.exists() and any(folder.iterdir()):
            raise InputError(f"Cannot write {folder}: the folder is not empty.")
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in names]


def _new_uid() -> str:
    # The 2.25 root turns a random UUID into a valid DICOM UID without a registered root.
    return f"2.25.{uuid.uuid4().int}"


# --------------------------------------------------------------------------- orientation
_AXIS_OF_LETTER = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0)}
_AXIS_OF_LETTER.update({"S": (2, 1.0), "I": (2, -1.0)})


def orientation_matrix(orientation: str) -> np.ndarray:
    """Direction matrix of an orientation code (DICOM/SimpleITK: letters the axes point to).

    ``"LPS"`` is the identity; ``"RAS"`` is ``diag(-1, -1, 1)``.
    """
    code = orientation.upper()
    axes = [_AXIS_OF_LETTER.get(letter) for letter in code]
    if len(code) != 3 or None in axes or len({a[0] for a in axes if a}) != 3:
        raise ValueError(
            f"orientation {orientation!r} is not a code like 'LPS' or 'RAS' (one of L/R, "
            "P/A, S/I each)"
        )
    matrix = np.zeros((3, 3))
    for k, (axis, sign) in enumerate(axes):  # type: ignore[misc]
        matrix[axis, k] = sign
    return matrix


@dataclass(frozen=True)
class _AxisPlan:
    """New index axis ``k`` (x, y, z) is old axis ``source[k]``, reversed where ``flip[k]``."""

    source: tuple[int, int, int]
    flip: tuple[bool, bool, bool]


def _axis_plan(direction: np.ndarray, target: np.ndarray) -> _AxisPlan:
    """The axis permutation and flips that bring ``direction`` nearest to ``target``.

    Each new axis takes the old axis most parallel to the target's (best total |cosine| over
    the six permutations), so oblique scans go to the nearest canonical axes.
    """
    cosines = target.T @ direction  # [new k, old i]
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(cosines[k, perm[k]]) for k in range(3)),
    )
    flip = tuple(bool(cosines[k, best[k]] < 0) for k in range(3))
    return _AxisPlan(tuple(best), flip)  # type: ignore[arg-type]


def _numpy_axes(plan: _AxisPlan, lead: int) -> tuple[list[int], list[int]]:
    """Transpose order and flipped axes for an array ``[..., z, y, x]`` with ``lead`` extra axes."""
    # numpy spatial axis n is SimpleITK axis 2 - n.
    order = list(range(lead)) + [lead + 2 - plan.source[2 - n] for n in range(3)]
    flipped = [lead + n for n in range(3) if plan.flip[2 - n]]
    return order, flipped


def _apply_plan(
    array: np.ndarray, meta: ImageMeta, plan: _AxisPlan
) -> tuple[np.ndarray, ImageMeta]:
    """``array`` and ``meta`` with the axes permuted and flipped as ``plan`` says."""
    lead = array.ndim - 3
    size_xyz = array.shape[::-1][:3]
    order, flipped = _numpy_axes(plan, lead)
    moved = np.transpose(array, order)
    if flipped:
        moved = np.flip(moved, axis=flipped)
    old_dir = meta.direction_matrix
    new_dir = np.zeros((3, 3))
    spacing = []
    origin = np.asarray(meta.origin, dtype=float).copy()
    for k in range(3):
        i = plan.source[k]
        column = old_dir[:, i] * (-1.0 if plan.flip[k] else 1.0)
        new_dir[:, k] = column
        spacing.append(meta.spacing[i])
        if plan.flip[k]:
            # The new first voxel is the old last one along this axis.
            origin += old_dir[:, i] * meta.spacing[i] * (size_xyz[i] - 1)
    new_meta = replace(
        meta, spacing=tuple(spacing), origin=tuple(origin), direction=tuple(new_dir.ravel())
    )
    return np.ascontiguousarray(moved), new_meta


def to_canonical(
    array: np.ndarray, meta: ImageMeta, orientation: str = "LPS"
) -> tuple[np.ndarray, ImageMeta]:
    """Turn a volume to a canonical orientation by axis permutation and flips (no resampling).

    With the default ``"LPS"`` (ITK's identity direction) array axis 0 runs inferior ->
    superior along the body's long axis (so ``array[k]`` is an axial slice), axis 1 anterior
    -> posterior and axis 2 right -> left, whatever the order on disk. Like SimpleITK's
    ``DICOMOrient``, it reads the header's direction cosines; an oblique scan goes to its
    nearest axes and keeps its true (slightly non-identity) direction in the returned meta.

    Args:
        array: ``[..., z, y, x]``; leading axes (channels) are carried along.
        meta: its geometry.
        orientation: target code, the letters the x, y, z index axes point to ("LPS", "RAS").

    Returns:
        The reordered array (contiguous) and its meta: every voxel keeps its physical position.
    """
    if array.ndim < 3:
        raise ValueError(f"to_canonical needs an array [..., z, y, x], got shape {array.shape}")
    plan = _axis_plan(meta.direction_matrix, orientation_matrix(orientation))
    return _apply_plan(array, meta, plan)


def from_canonical(
    array: np.ndarray,
    original_meta: ImageMeta,
    original_shape: Sequence[int],
    orientation: str = "LPS",
) -> np.ndarray:
    """Inverse of :func:`to_canonical`: a canonical-grid array back to the original order.

    Args:
        array: ``[..., z, y, x]`` on the canonical grid of the original volume.
        original_meta: the original volume's geometry.
        original_shape: the original array shape (its last three axes are checked).
        orientation: the code used with :func:`to_canonical`.

    Returns:
        The array in the original axis order (contiguous), shape ``[..., *original_shape[-3:]]``.
    """
    plan = _axis_plan(original_meta.direction_matrix, orientation_matrix(orientation))
    lead = array.ndim - 3
    order, flipped = _numpy_axes(plan, lead)
    original = tuple(original_shape)[-3:]
    expected = tuple(original[order[lead + n] - lead] for n in range(3))
    if tuple(array.shape[-3:]) != expected:
        raise ValueError(
            f"from_canonical: array shape {array.shape[-3:]} is not the canonical shape "
            f"{expected} of the original {original}"
        )
    if flipped:
        array = np.flip(array, axis=flipped)
    back = np.transpose(array, np.argsort(order))
    return np.ascontiguousarray(back)
