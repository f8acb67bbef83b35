"""One identity per scan across datasets and workspaces: a digest of its content, not its name.

The same scan goes by different names in different places (``rabbit_001`` in a dataset folder,
``lab_rabbit_001`` once ``vetseg add`` copied it into a workspace), and two folders may use the
same name for different scans. A model's split therefore records, beside each case's name, a
digest of the case's image (:func:`content_hash`), and "has this model seen this case" is asked
of the digest (:class:`KnownCases`); names are only a fallback for splits recorded before the
digests were.

The digest covers the canonically oriented voxel values (float32), the array shape and the
voxel spacing rounded to 1e-4 mm, so the same scan gives the same digest whatever its name,
file format or axis order on disk. Origin and provenance are left out on purpose: a copy or a
re-export may move the origin, and it is still the same scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: Bumped whenever the digest's definition changes (old digests then stop matching).
_VERSION = b"vetseg-case-v1"


def content_hash(image: np.ndarray, spacing: Iterable[float]) -> str:
    """SHA-256 of a canonically oriented volume's voxels, shape and spacing.

    Args:
        image: ``[z, y, x]`` intensities in canonical orientation (``LoadedCase.image``).
        spacing: voxel size ``(x, y, z)`` in mm of that array (``canonical_meta.spacing``).

    Returns:
        64 hex digits; equal for the same scan stored under any name or format.
    """
    voxels = np.ascontiguousarray(image, dtype="<f4")
    digest = hashlib.sha256(_VERSION)
    digest.update(repr(tuple(int(n) for n in voxels.shape)).encode())
    # Rounded: NIfTI stores spacing as float32, other formats as float64.
    digest.update(repr(tuple(round(float(s), 4) for s in spacing)).encode())
    digest.update(memoryview(voxels).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True)
class KnownCases:
    """Cases a model (lineage) trained on or selected its epoch with.

    Attributes:
        hashes: content digests (:func:`content_hash`) of the cases whose split recorded them.
        names: names of the cases whose split recorded no digest (older model files); matched
            by name, which is all that is known of them.
    """

    hashes: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()

    @classmethod
    def from_split(
        cls, split: Mapping[str, object], parts: Collection[str] = ("train", "val")
    ) -> KnownCases:
        """The cases of ``parts`` of a recorded split (``{"train": [...], "hashes": {...}}``)."""
        raw_hashes = split.get("hashes")
        recorded = raw_hashes if isinstance(raw_hashes, Mapping) else {}
        hashes: set[str] = set()
        names: set[str] = set()
        for part in parts:
            ids = split.get(part)
            for case_id in ids if isinstance(ids, list | tuple) else []:
                digest = recorded.get(case_id)
                if isinstance(digest, str) and digest:
                    hashes.add(digest)
                else:
                    names.add(str(case_id))
        return cls(frozenset(hashes), frozenset(names))

    def __or__(self, other: KnownCases) -> KnownCases:
        return KnownCases(self.hashes | other.hashes, self.names | other.names)

    def __bool__(self) -> bool:
        return bool(self.hashes or self.names)

    def contains(self, case_id: str, digest: str | None) -> bool:
        """Whether a case (its name and content digest) is one of these."""
        return (digest is not None and digest in self.hashes) or case_id in self.names


__all__ = ["KnownCases", "content_hash"]
