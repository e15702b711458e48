"""``truthset staple``: STAPLE consensus of several readers' NIfTI masks, no project needed.

::

    truthset staple reader1.nii.gz reader2.nii.gz reader3.nii.gz -o consensus.nii.gz \\
        --probability probability.nii.gz

writes the consensus mask (``uint8``; with ``--multilabel`` the label map, undecided voxels
labelled ``max label + 1``) and optionally the probability map (``float32``; with
``--multilabel`` a 4D image, one volume per label), both with the first input's affine and
header, and prints each reader's performance as a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import nibabel as nib
import numpy as np
import typer
from numpy.typing import NDArray
from rich.table import Table

from truthset.cli.app import app, console, handle_errors
from truthset.domain.errors import InputError
from truthset.quality.staple import STAPLE, MultiLabelSTAPLE

#: Largest difference between two inputs' affine entries still taken as the same grid.
AFFINE_ATOL = 1e-4


def load_masks(paths: list[Path]) -> tuple[list[NDArray[Any]], Any]:
    """Read NIfTI masks; refuse files whose shapes or affines differ from the first.

    Parameters
    ----------
    paths:
        NIfTI files (``.nii`` / ``.nii.gz``).

    Returns
    -------
    tuple
        The integer arrays, and the first image (its affine and header are reused).

    Raises
    ------
    InputError
        A file cannot be read, holds non-integer values, or does not share the first file's
        shape and affine (both files named).
    """
    arrays: list[NDArray[Any]] = []
    first: Any = None
    for path in paths:
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]
        except FileNotFoundError:
            raise InputError("no such file", source=str(path)) from None
        except Exception as exc:  # nibabel raises several kinds for unreadable files
            raise InputError(f"cannot read as NIfTI: {exc}", source=str(path)) from None
        if np.issubdtype(data.dtype, np.floating):
            if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
                raise InputError("mask values must be whole numbers", source=str(path))
            data = data.astype(np.int64)
        if first is None:
            first = img
        else:
            if data.shape != first.shape:
                raise InputError(
                    f"shape {data.shape} differs from {paths[0]} {first.shape}",
                    source=str(path),
                    field="shape",
                )
            if not np.allclose(img.affine, first.affine, atol=AFFINE_ATOL, rtol=0):  # type: ignore[attr-defined]
                raise InputError(
                    f"affine differs from {paths[0]}: voxel grids are not aligned",
                    source=str(path),
                    field="affine",
                )
        arrays.append(data)
    return arrays, first


def save_like(data: NDArray[Any], like: Any, path: Path) -> None:
    """Write ``data`` as NIfTI with ``like``'s affine and header (data type updated)."""
    header = like.header.copy()
    header.set_data_dtype(data.dtype)
    cls = like.__class__ if isinstance(like, nib.Nifti1Image | nib.Nifti2Image) else nib.Nifti1Image
    out = cls(data, like.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    try:
        nib.save(out, str(path))
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", source=str(path)) from exc


def _binary_table(names: list[str], sens: NDArray[Any], spec: NDArray[Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("reader", overflow="fold")
    table.add_column("sensitivity", justify="right")
    table.add_column("specificity", justify="right")
    for name, p, q in zip(names, sens, spec, strict=True):
        table.add_row(name, f"{p:.4f}", f"{q:.4f}")
    return table


def _multilabel_table(names: list[str], confusion: NDArray[Any], title: str) -> Table:
    n_labels = confusion.shape[1]
    table = Table(title=title)
    table.add_column("reader", overflow="fold")
    for lab in range(n_labels):
        table.add_column(f"P(says {lab} | {lab})", justify="right")
    for name, matrix in zip(names, confusion, strict=True):
        table.add_row(name, *(f"{matrix[c, c]:.4f}" for c in range(n_labels)))
    return table


@app.command("staple")
@handle_errors
def staple(
    masks: Annotated[list[Path], typer.Argument(help="One NIfTI mask per reader.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Consensus NIfTI to write.")],
    probability: Annotated[
        Path | None, typer.Option("--probability", help="Also write the probability map here.")
    ] = None,
    multilabel: Annotated[
        bool, typer.Option("--multilabel", help="Label maps: multi-label STAPLE.")
    ] = False,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Largest number of EM steps.")] = (
        10_000
    ),
) -> None:
    """Estimate the consensus of several readers' masks with STAPLE (Warfield 2004)."""
    if len(masks) < 2:
        raise InputError("STAPLE needs at least two masks", field="MASK")
    arrays, first = load_masks(masks)
    names = [str(p) for p in masks]
    short = [p.name for p in masks]
    shown = short if len(set(short)) == len(short) else names
    if multilabel:
        ml = MultiLabelSTAPLE(max_iter=max_iter, return_probabilities=probability is not None)
        res = ml.fit(arrays, names=names)
        save_like(np.asarray(res.labels), first, out)
        if probability is not None and res.probabilities is not None:
            save_like(np.moveaxis(res.probabilities, 0, -1).astype(np.float32), first, probability)
        title = f"Multi-label STAPLE ({res.n_iter} iterations, {len(names)} readers)"
        console.print(_multilabel_table(shown, res.confusion, title))
        if np.any(res.labels == res.undecided_label):
            n = int(np.count_nonzero(res.labels == res.undecided_label))
            console.print(f"{n} undecided voxels labelled {res.undecided_label}", highlight=False)
    else:
        result = STAPLE(max_iter=max_iter).fit(arrays, names=names)
        save_like(result.consensus.astype(np.uint8), first, out)
        if probability is not None:
            save_like(result.probability.astype(np.float32), first, probability)
        title = f"STAPLE ({result.n_iter} iterations, prior {result.prior:.4f})"
        console.print(_binary_table(shown, result.sensitivity, result.specificity, title))
        for note in result.notes:
            console.print(f"note: {note}", highlight=False)
    console.print(f"consensus -> {out}", highlight=False)
