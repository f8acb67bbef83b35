"""The ``vetseg`` command line: one typer app, subcommands named for the user's verbs.

Each command is a thin caller of the library. Heavy modules (torch, SimpleITK, monai) are
imported inside the commands so that ``vetseg --help`` answers at once. A
:class:`~vetseg.errors.VetsegError` becomes one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from vetseg.errors import VetsegError

app = typer.Typer(
    name="vetseg",
    help="CT organ segmentation for animals from a handful of labelled scans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Report a VetsegError as one sentence on stderr with exit code 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VetsegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- foundation
@app.command()
@user_errors
def phantoms(
    out: Path = typer.Argument(..., help="Folder for the MSD-layout dataset (created)."),
    species: str = typer.Option("human", help="human or rabbit."),
    cases: int = typer.Option(10, min=1, help="Number of synthetic cases."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same cases."),
    non_contrast: bool = typer.Option(
        False, "--non-contrast", help="Non-contrast HU values instead of contrast-enhanced."
    ),
) -> None:
    """Write synthetic CT phantoms (image + organ labels) in the MSD / nnU-Net layout."""
    from vetseg.data.phantoms import write_phantom_dataset

    paths = write_phantom_dataset(
        out, species=species, cases=cases, seed=seed, contrast=not non_contrast
    )
    print(f"wrote {len(paths)} synthetic {species} cases to {out} (synthetic data, not real scans)")


@app.command()
@user_errors
def synth(
    labels: Path = typer.Argument(..., help="A real label atlas (e.g. Digimouse labels.nii.gz)."),
    out: Path = typer.Argument(..., help="Folder for the synthesised MSD-layout dataset."),
    cases: int = typer.Option(5, min=1, help="Number of synthesised cases."),
    seed: int = typer.Option(0, help="Random seed."),
    mapping: str = typer.Option(
        "auto", help="Label ids of the atlas: auto, digimouse, totalseg, mouse_head, vetseg."
    ),
) -> None:
    """Synthesise CT-like cases from a real label atlas (tissue HU, deformation, noise, blur)."""
    from vetseg.data.synth import synthesize_dataset

    paths = synthesize_dataset(labels, out, cases=cases, seed=seed, mapping=mapping)
    print(f"wrote {len(paths)} synthesised cases to {out} (synthesised from an atlas, not real CT)")


@app.command()
@user_errors
def preview(
    scan: Path = typer.Argument(..., help="CT scan: NIfTI, NRRD, MHA or a DICOM folder."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    labels: Path | None = typer.Option(None, "--labels", help="Label map on the same grid."),
) -> None:
    """Axial, coronal and sagittal mid-slices of a scan with the label overlay, as a PNG."""
    from vetseg.viz.preview import save_preview_file

    save_preview_file(scan, out, labels=labels)
    print(f"wrote {out}")


@app.command()
@user_errors
def info(
    scan: Path = typer.Argument(
        ..., help="CT scan or label map: NIfTI, NRRD, MHA or DICOM folder."
    ),
) -> None:
    """Shape, spacing, orientation, intensity range and the labels present, with names."""
    from vetseg.io.info import describe, format_description

    print(format_description(describe(scan)))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
