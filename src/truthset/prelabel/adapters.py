"""Model adapters: turn an item's pixels into a model's raw answer.

Three adapters, one interface (:class:`ModelAdapter`):

- :class:`OnnxAdapter` runs a user-provided ``.onnx`` file with ONNX Runtime, on CUDA where
  ``onnxruntime-gpu`` reports the CUDA execution provider, else on the CPU;
- :class:`HttpInferAdapter` calls a remote model with a MONAI Label-style ``POST /infer/{model}``
  (the image is sent as a NIfTI file; the answer is JSON or a NIfTI label map);
- :class:`ClassicalSegmenter` thresholds intensities and keeps connected components
  (``scipy.ndimage``): drafting works with no weights at all.

Every adapter drafts 2D images and 3D volumes (a DICOM series, a NIfTI volume): it is given
:class:`Pixels` — the array, and for a volume the voxel spacing in mm per array axis — or a plain
array (2D grey, 2D colour with a trailing axis of 3 or 4, or 3D grey = a volume).

Adapters do no checking: :func:`truthset.prelabel.output.check_output` decides whether an answer
is acceptable. An adapter raises :class:`~truthset.prelabel.output.DraftRefused` only for what it
alone can see (a timeout, an HTTP error, an unreadable answer).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from truthset.domain.errors import InputError
from truthset.prelabel.output import OUTPUT_KINDS, DraftRefused, OutputKind

KINDS = ("onnx", "http", "classical")


@dataclass(frozen=True)
class Pixels:
    """What a model is given of an item.

    Parameters
    ----------
    array:
        A 2D image ``(rows, columns[, 3|4])`` or a 3D volume ``(slices, rows, columns)`` (a
        DICOM series) / ``(i, j, k)`` (a NIfTI file's voxel order).
    spacing:
        Voxel size in mm along each spatial axis of ``array``, in the array's axis order;
        ``None`` when unknown.
    volume:
        Whether ``array`` is a 3D volume (a trailing axis of 3 or 4 is then a spatial axis
        unless ``array`` has 4 dimensions).
    """

    array: NDArray[Any]
    spacing: tuple[float, ...] | None = None
    volume: bool = False

    @property
    def colour(self) -> bool:
        """Whether the last axis holds colour samples."""
        arr = self.array
        return arr.ndim == (4 if self.volume else 3) and arr.shape[-1] in (3, 4)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape (colour samples left out)."""
        shape = tuple(int(s) for s in self.array.shape)
        return shape[:-1] if self.colour else shape

    def grey(self) -> NDArray[np.float32]:
        """A single-channel float32 view (colour is averaged)."""
        arr = np.asarray(self.array)
        if self.colour:
            arr = arr[..., :3].mean(axis=-1)
        return arr.astype(np.float32, copy=False)


def as_pixels(image: NDArray[Any] | Pixels) -> Pixels:
    """``image`` as :class:`Pixels`: a plain 3D array is a volume unless its last axis has 3
    or 4 entries (a colour image)."""
    if isinstance(image, Pixels):
        return image
    arr = np.asarray(image)
    return Pixels(arr, None, volume=arr.ndim == 3 and arr.shape[-1] not in (3, 4))


class ModelAdapter(Protocol):
    """Anything that answers for one image or volume."""

    #: Where inference runs: ``"cpu"``, ``"cuda"`` or ``"remote"``.
    device: str

    def predict(self, image: NDArray[Any] | Pixels) -> Mapping[str, Any]:
        """The model's raw answer for ``image`` (see :mod:`truthset.prelabel.output`)."""
        ...


def _grey(image: NDArray[Any] | Pixels) -> NDArray[np.float32]:
    """A single-channel float32 view of an image or volume (colour is averaged)."""
    return as_pixels(image).grey()


def spatial_shape(image: NDArray[Any] | Pixels) -> tuple[int, ...]:
    """The spatial shape of an image or volume: colour samples left out."""
    return as_pixels(image).shape


def _softmax(x: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float64)


# -- ONNX -----------------------------------------------------------------------------------------
def onnx_providers() -> list[str]:
    """ONNX Runtime execution providers to ask for: CUDA first where it is available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*wanted, "CPUExecutionProvider"]


@dataclass
class OnnxAdapter:
    """Run an ONNX model.

    Configuration (``config`` of the registered model):

    ``classes``
        Output channel order: class names (classification: one probability per class; mask:
        channel ``k`` is ``classes[k]``, with ``"background"`` or ``""`` for channel 0).
    ``activation``
        ``"softmax"`` (default; applied to logits) or ``"none"`` (the model outputs
        probabilities already).
    ``scale``, ``offset``
        Input normalisation ``x * scale + offset`` (defaults 1/255 and 0).
    ``input_size``
        ``[rows, cols]`` (``[slices, rows, cols]`` for a volume) the model expects; images are
        resized (linear) and label maps resized back (nearest).

    Input: ``1x1xHxW`` float for an image, ``1x1xDxHxW`` for a volume. Output:
    classification ``1xK``; mask ``1xKx<spatial>`` scores or ``1x<spatial>`` indices; boxes
    ``Nx6`` rows ``x0 y0 x1 y1 score class`` (``Nx8``: ``x0 y0 z0 x1 y1 z1 score class`` for a
    volume).
    """

    model_bytes: bytes
    output: OutputKind
    config: Mapping[str, Any]

    def __post_init__(self) -> None:
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(self.model_bytes, providers=onnx_providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"ONNX Runtime cannot load the model: {exc}",
                             field="model") from exc
        used = self._session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in used else "cpu"
        self._input = self._session.get_inputs()[0].name

    def predict(self, image: NDArray[Any] | Pixels) -> Mapping[str, Any]:
        """Run the model on ``image`` (a 2D image, grey or colour, or a 3D volume) and shape
        its answer."""
        grey = _grey(image)
        shape = grey.shape
        size = self.config.get("input_size")
        if size:
            if len(size) != grey.ndim:
                raise DraftRefused(f"input_size {list(size)} does not fit this "
                                   f"{grey.ndim}D image", kind="input")
            factors = [t / s for t, s in zip(size, shape, strict=True)]
            grey = ndimage.zoom(grey, factors, order=1)
        scale = float(self.config.get("scale", 1 / 255))
        offset = float(self.config.get("offset", 0.0))
        tensor = (grey * scale + offset).astype(np.float32)[None, None]
        try:
            outputs = self._session.run(None, {self._input: tensor})
        except Exception as exc:  # a model that fails on this input
            raise DraftRefused(f"the model failed on this image: {exc}") from None
        first = np.asarray(outputs[0])
        classes = [str(c) for c in self.config.get("classes", [])]
        softmax = self.config.get("activation", "softmax") == "softmax"
        if self.output == "classification":
            values = first.reshape(-1).astype(np.float64)
            if len(values) != len(classes):
                raise DraftRefused(f"the model gave {len(values)} scores for "
                                   f"{len(classes)} registered output classes")
            probs = _softmax(values) if softmax else values
            return {"probabilities": dict(zip(classes, probs.tolist(), strict=True))}
        n = grey.ndim
        if self.output == "mask":
            if first.ndim == n + 2:  # 1 x K x spatial: scores
                label_map = np.argmax(first[0], axis=0)
            elif first.ndim == n + 1 and first.shape[0] == 1:  # 1 x spatial: indices
                label_map = first[0].astype(np.int64)
            elif first.ndim == n + 1:  # K x spatial: scores without the batch axis
                label_map = np.argmax(first, axis=0)
            else:  # spatial: indices (another rank is refused by the shape check)
                label_map = first.astype(np.int64)
            if size and label_map.ndim == n and tuple(label_map.shape) != shape:
                factors = [s / t for s, t in zip(shape, label_map.shape, strict=True)]
                label_map = ndimage.zoom(label_map, factors, order=0)
            names = {c: k for k, c in enumerate(classes) if k > 0 and c not in ("", "background")}
            return {"label_map": label_map.astype(np.int64), "label_names": names}
        # box: rows of x0, y0[, z0], x1, y1[, z1], score, class index
        width = 2 * n + 2
        rows = first.reshape(-1, width) if first.size else np.zeros((0, width))
        return {"objects": [
            {"label": classes[int(r[-1])] if 0 <= int(r[-1]) < len(classes)
             else f"#{int(r[-1])}",
             "box": [float(v) for v in r[:2 * n]], "score": float(r[-2])}
            for r in rows]}


# -- remote HTTP (MONAI Label style) -------------------------------------------------------------
def nifti_bytes(image: NDArray[Any] | Pixels) -> bytes:
    """A gzipped NIfTI-1 file holding ``image`` (grey), its voxel spacing on the affine's
    diagonal (identity when unknown)."""
    import nibabel as nib

    px = as_pixels(image)
    affine = np.eye(4)
    if px.spacing is not None:
        for axis, size in enumerate(px.spacing[:3]):
            affine[axis, axis] = float(size)
    img = nib.Nifti1Image(np.ascontiguousarray(px.grey()), affine)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def read_nifti_bytes(data: bytes) -> NDArray[Any]:
    """The array of a NIfTI file given as bytes (gzipped or not)."""
    import nibabel as nib

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    img = nib.Nifti1Image.from_bytes(data)
    return np.asanyarray(img.dataobj)


@dataclass
class HttpInferAdapter:
    """Call a remote model: ``POST {url}/infer/{model}?output={json|image}``.

    The request is multipart: ``file`` (the image as ``image.nii.gz``) and ``params`` (JSON,
    from ``config["params"]``). A JSON answer is passed through (``probabilities`` or
    ``objects``; a ``label`` entry in MONAI Label's ``{"label": ..., "label_names": ...}`` form
    is accepted as well); a NIfTI answer is a label map whose indices ``config["label_names"]``
    names. A bearer token can be read from the environment variable ``config["token_env"]``
    (secrets never enter the database).
    """

    url: str
    model: str
    output: OutputKind
    config: Mapping[str, Any]
    timeout_s: float = 30.0
    device: str = "remote"

    def predict(self, image: NDArray[Any] | Pixels) -> Mapping[str, Any]:
        """Send ``image`` (an image or a volume, with its spacing) and read the answer."""
        import httpx

        mode = str(self.config.get("response", "json"))
        headers = {}
        token_env = self.config.get("token_env")
        if token_env and os.environ.get(str(token_env)):
            headers["Authorization"] = f"Bearer {os.environ[str(token_env)]}"
        try:
            response = httpx.post(
                f"{self.url.rstrip('/')}/infer/{self.model}",
                params={"output": mode},
                files={"file": ("image.nii.gz", nifti_bytes(image), "application/gzip")},
                data={"params": json.dumps(dict(self.config.get("params", {})))},
                headers=headers,
                timeout=self.timeout_s,
            )
        except httpx.TimeoutException:
            raise DraftRefused(f"the model did not answer within {self.timeout_s:g} s",
                               kind="timeout") from None
        except httpx.HTTPError as exc:
            raise DraftRefused(f"cannot reach the model: {type(exc).__name__}",
                               kind="unreachable") from None
        if response.status_code != 200:
            raise DraftRefused(f"the model answered HTTP {response.status_code}",
                               kind="unreachable")
        if mode == "image":
            try:
                label_map = read_nifti_bytes(response.content)
            except Exception:
                raise DraftRefused("the answer is not a readable NIfTI label map") from None
            values = np.asarray(label_map)
            if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
                values = values.astype(np.int64)  # NIfTI label maps are often stored as floats
            return {"label_map": values,
                    "label_names": dict(self.config.get("label_names", {}))}
        try:
            body = response.json()
        except ValueError:
            raise DraftRefused("the answer is not JSON") from None
        if isinstance(body, dict) and "label" in body and isinstance(body["label"], list):
            body = {"label_map": np.asarray(body["label"]),
                    "label_names": body.get("label_names", self.config.get("label_names", {}))}
        return body if isinstance(body, dict) else {"malformed": body}


# -- classical ------------------------------------------------------------------------------------
@dataclass
class ClassicalSegmenter:
    """Thresholds and connected components: no weights needed. Works on 2D images and 3D
    volumes alike (components are connected in 3D in a volume).

    Configuration:

    ``thresholds``
        ``{class: [low, high]}``: voxels with ``low <= value <= high`` belong to the class
        (values after ``normalise``); the first matching class wins where ranges overlap.
    ``normalise``
        ``true`` (default) rescales the image to [0, 1] (min-max) before thresholding.
    ``min_size``
        Smallest connected component kept, in voxels (default 10).
    ``min_size_mm``
        Smallest component kept in physical units — mm² for an image, mm³ for a volume — when
        the item's voxel spacing is known (both limits apply when both are given).
    ``connectivity``
        Which neighbours connect: 1 (default) faces only (4 in 2D, 6 in 3D), up to the number
        of axes (8 in 2D, 26 in 3D), as :func:`scipy.ndimage.generate_binary_structure`.
    ``smooth``
        Gaussian sigma in voxels applied before thresholding (default 0, none); ``smooth_mm``
        the same in mm (per axis from the spacing; anisotropic volumes are smoothed evenly).

    Each region's score is its contrast with a 3-voxel ring around it, as a share of the
    image's intensity range (in [0.05, 1]).
    ``positive``, ``negative``
        Classification output: ``positive`` when any component is found, else ``negative``;
        the probability grows with the largest component's size (``area_ref`` voxels = 0.95).
    """

    output: OutputKind
    config: Mapping[str, Any]
    device: str = "cpu"

    def predict(self, image: NDArray[Any] | Pixels) -> Mapping[str, Any]:
        """Segment ``image`` (an image or a volume)."""
        px = as_pixels(image)
        grey = px.grey().astype(np.float64)
        spacing = px.spacing if px.spacing and len(px.spacing) >= grey.ndim else None
        voxel = float(np.prod(spacing[:grey.ndim])) if spacing else None
        sigma: float | list[float] = float(self.config.get("smooth", 0))
        if self.config.get("smooth_mm") and spacing:
            sigma = [float(self.config["smooth_mm"]) / s for s in spacing[:grey.ndim]]
        if np.any(np.asarray(sigma) > 0):
            grey = ndimage.gaussian_filter(grey, sigma)
        if self.config.get("normalise", True):
            lo, hi = float(grey.min()), float(grey.max())
            grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
        thresholds = self.config.get("thresholds", {})
        min_size = int(self.config.get("min_size", 10))
        if voxel and self.config.get("min_size_mm") is not None:
            min_size = max(min_size, int(np.ceil(float(self.config["min_size_mm"]) / voxel)))
        structure = ndimage.generate_binary_structure(
            grey.ndim, min(max(int(self.config.get("connectivity", 1)), 1), grey.ndim))
        taken = np.zeros(grey.shape, dtype=bool)
        objects: list[dict[str, Any]] = []
        spread = float(grey.max() - grey.min()) or 1.0
        for name, (low, high) in thresholds.items():
            hit = (grey >= float(low)) & (grey <= float(high)) & ~taken
            taken |= hit
            components, count = ndimage.label(hit, structure=structure)
            if count == 0:
                continue
            sizes = ndimage.sum_labels(hit, components, index=np.arange(1, count + 1))
            boxes = ndimage.find_objects(components)
            for k in np.flatnonzero(sizes >= min_size):
                mask = components == (k + 1)
                # Score: contrast between the region and a 3-voxel ring around it (computed
                # on the region's bounding box grown by 3 voxels).
                crop = tuple(slice(max(sl.start - 3, 0), sl.stop + 3) for sl in boxes[k])
                local = mask[crop]
                ring = ndimage.binary_dilation(local, iterations=3) & ~local
                inside = float(grey[crop][local].mean())
                around = float(grey[crop][ring].mean()) if ring.any() else inside
                score = float(np.clip(abs(inside - around) / spread, 0.05, 1.0))
                objects.append({"label": str(name), "mask": mask, "score": score})
        if self.output == "classification":
            positive = str(self.config["positive"])
            negative = str(self.config["negative"])
            area = max((int(o["mask"].sum()) for o in objects), default=0)
            ref = float(self.config.get("area_ref", 100))
            p = 0.05 if area == 0 else float(min(0.95, 0.5 + 0.45 * min(area / ref, 1.0)))
            return {"probabilities": {positive: p, negative: 1 - p}}
        if self.output == "box":
            from truthset.prelabel.output import mask_box

            return {"objects": [{"label": o["label"], "score": o["score"],
                                 "box": list(mask_box(o["mask"]))} for o in objects]}
        return {"objects": objects}


def check_config(kind: str, output: str, config: Mapping[str, Any]) -> None:
    """Refuse a model registration whose configuration cannot work.

    Raises
    ------
    InputError
        Unknown kind or output, or a required setting is missing (the field is named).
    """
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; choose {', '.join(KINDS)}", field="kind")
    if output not in OUTPUT_KINDS:
        raise InputError(f"unknown output {output!r}; choose {', '.join(OUTPUT_KINDS)}",
                         field="output")
    if kind == "http":
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError("an HTTP model needs url: http(s)://host[:port]", field="config.url")
        if not isinstance(config.get("model"), str):
            raise InputError("an HTTP model needs model: <name on the server>",
                             field="config.model")
    if kind == "classical":
        thresholds = config.get("thresholds")
        if not isinstance(thresholds, Mapping) or not thresholds or not all(
                isinstance(v, list | tuple) and len(v) == 2 for v in thresholds.values()):
            raise InputError("a classical model needs thresholds: {class: [low, high]}",
                             field="config.thresholds")
        if output == "classification" and not (config.get("positive")
                                               and config.get("negative")):
            raise InputError("a classical classifier needs positive: and negative: classes",
                             field="config.positive")
    if kind == "onnx" and output in ("classification", "mask") and not config.get("classes"):
        raise InputError("an ONNX model needs classes: [output channel names]",
                         field="config.classes")


def describe_device() -> dict[str, Any]:
    """Where inference can run here: ONNX Runtime providers and torch's CUDA, if installed."""
    info: dict[str, Any] = {"onnxruntime": None, "torch_cuda": None}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.get_available_providers()
    except ImportError:
        pass
    try:
        import torch

        info["torch_cuda"] = bool(torch.cuda.is_available())
    except ImportError:
        pass
    return info
