"""What every vetseg model shares, and the inverse of ``model.architecture()``.

:class:`SegmentationModel` gives a network named parts (``PARTS``), freezing by name and a
JSON-able record of its architecture; :func:`build_model` turns that record back into a fresh
network (weights come separately, from ``model.safetensors``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from vetseg.errors import ModelFileError


class SegmentationModel(nn.Module):
    """Base of vetseg's networks: named parts, freezing by name, architecture record.

    Subclasses set ``PARTS`` (the attribute names of their top-level parts, in forward order)
    and implement :meth:`architecture`.

    Frozen parts get ``requires_grad=False`` and stay in eval mode, also after a later
    ``model.train()``: their BatchNorm running statistics do not move (DESIGN section 3) and
    their stochastic layers (EfficientNet's drop-connect) are off, so a frozen part is exactly
    the feature extractor that inference will use.
    """

    PARTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._frozen: set[str] = set()

    def _check_parts(self, parts: Iterable[str] | str) -> list[str]:
        names = [parts] if isinstance(parts, str) else list(parts)
        unknown = [name for name in names if name not in self.PARTS]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no part(s) {unknown}; its parts are {self.PARTS}"
            )
        return names

    def freeze(self, parts: Iterable[str] | str) -> None:
        """Freeze the named parts (added to those already frozen).

        Args:
            parts: part names from ``PARTS`` (a single name is accepted too).

        Raises:
            ValueError: for a name that is not a part of this model.
        """
        names = self._check_parts(parts)
        for name in names:
            getattr(self, name).requires_grad_(False)
        self._frozen.update(names)
        self.train(self.training)

    def unfreeze_all(self) -> None:
        """Make every part trainable again; parts follow the model's train/eval mode."""
        self.requires_grad_(True)
        self._frozen.clear()
        self.train(self.training)

    def frozen_parts(self) -> tuple[str, ...]:
        """The frozen parts, in ``PARTS`` order."""
        return tuple(name for name in self.PARTS if name in self._frozen)

    def trainable_parts(self) -> tuple[str, ...]:
        """The parts not frozen, in ``PARTS`` order (parameter-free parts included)."""
        return tuple(name for name in self.PARTS if name not in self._frozen)

    def train(self, mode: bool = True) -> SegmentationModel:
        """Set train/eval mode; frozen parts stay in eval mode whatever ``mode`` is."""
        super().train(mode)
        for name in self._frozen:
            getattr(self, name).eval()
        return self

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild this network, as JSON-able data (``"class"`` included)."""
        raise NotImplementedError


def _model_classes() -> dict[str, type[SegmentationModel]]:
    # Imported here: human.py and animal.py import this module for the base class.
    from vetseg.models.animal import AnimalOrganNet
    from vetseg.models.human import HumanOrganNet
    from vetseg.models.peer import PeerUNet

    return {"HumanOrganNet": HumanOrganNet, "AnimalOrganNet": AnimalOrganNet, "PeerUNet": PeerUNet}


def build_model(architecture: dict[str, Any], source: str | Path | None = None) -> nn.Module:
    """A fresh, randomly initialised network from ``model.architecture()``'s record.

    Args:
        architecture: the record: ``{"class": "HumanOrganNet", "n_organs": 5, ...}``.
        source: the file the record came from, named in error messages.

    Returns:
        The network, in train mode, nothing frozen.

    Raises:
        ModelFileError: for a missing or unknown class, or options the class does not accept.
    """
    where = f"{source}: " if source is not None else ""
    if not isinstance(architecture, dict):
        raise ModelFileError(f"{where}the model architecture must be a JSON object.")
    options = dict(architecture)
    name = options.pop("class", None)
    classes = _model_classes()
    if name not in classes:
        raise ModelFileError(
            f"{where}model class {name!r} is unknown; vetseg builds {', '.join(classes)}."
        )
    try:
        return classes[name](**options)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}the {name} architecture is invalid ({exc}).") from exc
