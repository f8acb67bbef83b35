"""Reading and writing CT volumes and label maps with their geometry (SimpleITK underneath).

``read_image`` / ``read_label`` return ``(array[z, y, x], ImageMeta)`` for NIfTI, NRRD (incl.
3D Slicer ``.seg.nrrd``), MetaImage and DICOM series, ``read_scan`` the same for a CT scan only;
``write_image`` writes any of them back atomically; ``to_canonical`` / ``from_canonical`` turn a
volume so that axis 0 runs along the body. ``vetseg.io.info`` describes a file for ``vetseg info``.
"""

from vetseg.io.image import (
    ImageMeta,
    check_same_grid,
    from_canonical,
    meta_from_sitk,
    orientation_matrix,
    read_image,
    read_label,
    read_scan,
    to_canonical,
    to_sitk_image,
    write_dicom_series,
    write_image,
)

__all__ = [
    "ImageMeta",
    "check_same_grid",
    "from_canonical",
    "meta_from_sitk",
    "orientation_matrix",
    "read_image",
    "read_label",
    "read_scan",
    "to_canonical",
    "to_sitk_image",
    "write_dicom_series",
    "write_image",
]
