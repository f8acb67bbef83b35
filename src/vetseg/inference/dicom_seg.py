"""DICOM Segmentation objects (highdicom) for a label map of a DICOM series.

A DICOM-SEG is what a PACS and the viewers at the CT console open next to the scan: one
segment per organ, each with its name, coded anatomy (SNOMED CT), the algorithm that made it
("vetseg", artificial intelligence, model id) and a reference to every source slice by its SOP
Instance UID. The BINARY segmentation type is written (one bit plane per segment and slice),
which every validator and viewer of today knows; the newer LABELMAP type is not yet known to
Debian's ``dciodvfy``.

A segmentation can only reference slices that carry their UIDs. Anonymisation tools sometimes
blank SOP Instance, Series and Study UIDs; such a series is refused with one sentence rather
than given invented UIDs that would point at nothing in the archive.

highdicom copies the patient, study and specimen attributes of the source into the
segmentation, and a DICOM-SEG must be valid even when its source is not (a real series of
../shared/data carries a Procedure Code Sequence item without its Coding Scheme Designator).
So the source headers are cleaned in memory first (:func:`clean_source_header`): incomplete
code items are dropped, values that break their VR are emptied; the user's files are never
touched and every change is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vetseg.errors import InputError
from vetseg.fileutil import atomic_path

if TYPE_CHECKING:
    from pydicom import Dataset

    from vetseg.io.image import ImageMeta

#: (SNOMED CT code, meaning) of each organ vetseg names; laterality is pre-coordinated where
#: SNOMED has one concept for it (left kidney), else added as a modifier (mandible, left).
ORGAN_CODES: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney_left": ("18639004", "Left kidney"),
    "kidney_right": ("9846003", "Right kidney"),
    "kidneys": ("64033007", "Kidney"),
    "kidney": ("64033007", "Kidney"),
    "lungs": ("39607008", "Lung"),
    "lung": ("39607008", "Lung"),
    "lung_left": ("44029006", "Left lung"),
    "lung_right": ("3341006", "Right lung"),
    "heart": ("80891009", "Heart"),
    "bone": ("272673000", "Bone"),
    "skeleton": ("272673000", "Bone"),
    "skull": ("89546000", "Skull"),
    "mandible": ("91609006", "Mandible"),
    "endocranial_space": ("1101003", "Cranial cavity"),
    "stomach": ("69695003", "Stomach"),
    "pancreas": ("15776009", "Pancreas"),
    "gallbladder": ("28231008", "Gallbladder"),
    "bladder": ("89837001", "Urinary bladder"),
    "urinary_bladder": ("89837001", "Urinary bladder"),
    "brain": ("12738006", "Brain"),
    "eye": ("81745001", "Eye"),
    "adrenal_gland": ("23451007", "Adrenal gland"),
    "adrenal_glands": ("23451007", "Adrenal gland"),
    "testis": ("40689003", "Testis"),
    "esophagus": ("32849002", "Esophagus"),
    "skin": ("39937001", "Skin"),
    "caecum": ("32713005", "Cecum"),
    "cecum": ("32713005", "Cecum"),
}
_LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
#: Category of every segment, and the type of an organ without a code of its own.
_ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")
_UID_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)


@dataclass(frozen=True)
class OrganCode:
    """Coded anatomy of one organ: SNOMED CT type and an optional laterality modifier."""

    code: tuple[str, str]
    laterality: tuple[str, str] | None = None
    specific: bool = True


def organ_code(organ: str) -> OrganCode:
    """The SNOMED CT coding of an organ name (``"kidney_left"``, ``"mandible_right"``, ...).

    An organ vetseg has no code for is coded as "Anatomical Structure" (``specific`` False);
    its name stays in the segment label.
    """
    if organ in ORGAN_CODES:
        return OrganCode(ORGAN_CODES[organ])
    base, _, side = organ.rpartition("_")
    if side in _LATERALITY and base in ORGAN_CODES:
        return OrganCode(ORGAN_CODES[base], _LATERALITY[side])
    return OrganCode(_ANATOMICAL_STRUCTURE, specific=False)


@dataclass
class DicomSource:
    """The source slices of a DICOM series, read without pixel data, in the array's slice order.

    Attributes:
        folder: the series as given by the user.
        datasets: one header per slice, in the order of array axis 0 of the read volume,
            cleaned by :func:`clean_source_header` (in memory only).
        notes: what the cleaning dropped or emptied, one sentence each, without repeats.
    """

    folder: Path
    datasets: list[Dataset]
    notes: list[str] = field(default_factory=list)


#: Keywords of a code item's value: one of them is needed (PS3.3 table 8.8-1).
_CODE_VALUE_KEYWORDS = ("CodeValue", "LongCodeValue", "URNCodeValue")


#: VRs whose values are checked as text. Numbers (DS, IS) were parsed by pydicom already and
#: hold the geometry highdicom needs; UIDs must stay as the archive knows them.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC"})


def _text(dataset: Dataset, keyword: str) -> str:
    return str(dataset.get(keyword, "") or "").strip()


def _is_code_item(item: Dataset) -> bool:
    return any(k in item for k in (*_CODE_VALUE_KEYWORDS, "CodingSchemeDesignator", "CodeMeaning"))


def complete_code_item(item: Dataset) -> bool:
    """Whether a code sequence item has what the Basic Code Sequence Macro requires.

    A value (Code Value, Long Code Value or URN Code Value), a Code Meaning, and a Coding
    Scheme Designator unless the value is a URN (type 1C). No repair is attempted: which
    scheme a local code such as ``6500561`` belongs to cannot be known for certain.
    """
    values = [k for k in _CODE_VALUE_KEYWORDS if _text(item, k)]
    if not values or not _text(item, "CodeMeaning"):
        return False
    return values == ["URNCodeValue"] or bool(_text(item, "CodingSchemeDesignator"))


def clean_source_header(dataset: Dataset, path: str = "") -> list[str]:
    """Make a source header safe to copy into a DICOM-SEG, in place (never written back).

    Walks every element, into sequences: drops the items of a code sequence (one whose items
    hold code attributes) that are not complete codes (:func:`complete_code_item`), and the
    sequence itself when no item is left (such sequences are optional where highdicom copies
    them); empties a text whose value breaks its VR (length, characters), which keeps a
    type 2 attribute present.
    Numbers and UIDs are left alone (see ``_TEXT_VRS``); private elements are not copied.

    Args:
        dataset: one slice's header (or a sequence item, when recursing).
        path: where ``dataset`` lies, for the notes (``""`` at the root).

    Returns:
        One note per change, e.g. ``"dropped 1 incomplete item of ProcedureCodeSequence"``.
    """
    from pydicom import config
    from pydicom.valuerep import validate_value

    notes: list[str] = []
    for element in list(dataset):
        name = f"{path}{element.keyword or element.tag}"
        if element.VR == "SQ":
            # A code sequence is known by its items (Anatomic Region Sequence is one too).
            if any(_is_code_item(item) for item in element.value):
                kept = [item for item in element.value if complete_code_item(item)]
                dropped = len(element.value) - len(kept)
                if dropped:
                    notes.append(
                        f"dropped {dropped} incomplete code item(s) of {name} (a code needs a "
                        "value, a coding scheme and a meaning)"
                    )
                    if kept:
                        element.value = kept
                    else:
                        del dataset[element.tag]
                        continue
            for item in element.value:
                notes += clean_source_header(item, f"{name}>")
            continue
        if element.VR not in _TEXT_VRS or element.is_empty or element.tag.is_private:
            continue
        values = element.value if element.VM > 1 else [element.value]
        try:
            for value in values:
                validate_value(element.VR, str(value), config.RAISE)
        except (ValueError, TypeError) as exc:
            notes.append(f"emptied {name} ({exc})")
            element.value = None
    return notes


def load_dicom_source(meta: ImageMeta) -> DicomSource:
    """Headers of the series a volume was read from, checked for what a DICOM-SEG needs.

    Args:
        meta: the meta of a volume read by :func:`vetseg.io.image.read_image` from DICOM.

    Returns:
        The source headers.

    Raises:
        InputError: the volume was not read from DICOM, or its slices lack the UIDs a
            segmentation must reference (an anonymised series with blanked UIDs).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    source = Path(meta.source or "the scan")
    if meta.source_format != "DICOM" or not meta.dicom_files:
        raise InputError(
            f"Cannot write a DICOM-SEG for {source}: it is not a DICOM series (a DICOM "
            "segmentation must reference DICOM source images)."
        )
    datasets = []
    for name in meta.dicom_files:
        try:
            datasets.append(pydicom.dcmread(name, stop_before_pixels=True))
        except (InvalidDicomError, OSError) as exc:
            raise InputError(f"Cannot read the DICOM header of {name} ({exc}).") from None
    missing = sorted(
        {attr for ds in datasets for attr in _UID_ATTRIBUTES if not str(ds.get(attr, "") or "")}
    )
    if missing:
        raise InputError(
            f"Cannot write a DICOM-SEG for {source}: its slices have no {', '.join(missing)} "
            "(blanked by anonymisation?), so a segmentation could not reference them."
        )
    notes: list[str] = []
    for dataset in datasets:
        notes += [note for note in clean_source_header(dataset) if note not in notes]
    return DicomSource(source, datasets, notes)


def _coded(code: tuple[str, str]) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=code[0], scheme_designator="SCT", meaning=code[1])


def build_dicom_seg(
    labels: np.ndarray,
    source: DicomSource,
    organs: Sequence[str],
    *,
    model_id: str,
    software_version: str,
    series_description: str = "vetseg organ segmentation",
) -> Any:
    """A highdicom ``Segmentation`` of a label map on the source series' grid.

    Args:
        labels: uint8 ``[z, y, x]`` in the array order of the read series (slice ``k`` is
            ``source.datasets[k]``); ``organs[i]`` has id ``i + 1``.
        source: the series' headers.
        organs: organ names by id.
        model_id: the model that made the labels (recorded as algorithm parameter).
        software_version: vetseg's version.
        series_description: the new series' description.

    Returns:
        The segmentation dataset (BINARY type, one segment per organ present).

    Raises:
        InputError: no organ is present (a segmentation needs at least one segment).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if labels.shape[0] != len(source.datasets):
        raise ValueError(
            f"label map has {labels.shape[0]} slices, the series {len(source.datasets)}"
        )
    present = [i + 1 for i in range(len(organs)) if np.any(labels == i + 1)]
    if not present:
        raise InputError(
            f"No organ was found in {source.folder}, so there is nothing to put in a DICOM-SEG."
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name="vetseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=software_version,
        parameters={"model_id": model_id[:64]},
    )
    descriptions = []
    lookup = np.zeros(256, dtype=np.uint8)  # organ id -> segment number (1..K, consecutive)
    for number, organ_id in enumerate(present, start=1):
        organ = organs[organ_id - 1]
        coding = organ_code(organ)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=organ[:64],
            segmented_property_category=_coded(_ANATOMICAL_STRUCTURE),
            segmented_property_type=_coded(coding.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=organ[:64],
            tracking_uid=generate_uid(),
        )
        if coding.laterality is not None:
            item = description.SegmentedPropertyTypeCodeSequence[0]
            item.SegmentedPropertyTypeModifierCodeSequence = [_coded(coding.laterality)]
        descriptions.append(description)
        lookup[organ_id] = number
    segments = lookup[labels]
    return hd.seg.Segmentation(
        source_images=source.datasets,
        pixel_array=segments,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=990,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="vetseg",
        manufacturer_model_name=model_id[:64],
        software_versions=software_version,
        device_serial_number=model_id[:64],
        content_label="VETSEG",
        content_description=series_description[:64],
        series_description=series_description[:64],
    )


def write_dicom_seg(
    labels: np.ndarray,
    source: DicomSource,
    organs: Sequence[str],
    out: str | Path,
    *,
    model_id: str,
    software_version: str,
) -> Path:
    """Build the segmentation (:func:`build_dicom_seg`) and write it to ``out`` atomically."""
    seg = build_dicom_seg(
        labels, source, organs, model_id=model_id, software_version=software_version
    )
    out = Path(out)
    with atomic_path(out, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return out
