"""Model adapters: turn an item's pixels into a model's raw answer.

Three adapters, one interface (:class:`ModelAdapter`):

- :class:`OnnxAdapter` runs a user-provided ``.onnx`` file with ONNX Runtime, on CUDA where
  ``onnxruntime-gpu`` reports the CUDA execution provider, else on the CPU;
- :class:`HttpInferAdapter` calls a remote model with a MONAI Label-style ``POST /infer/{model}``
  (the image is sent as a NIfTI file; the answer is JSON or a NIfTI label map);
- :class:`ClassicalSegmenter` thresholds intensities and keeps connected components
  (``scipy.ndimage``): drafting works with no weights at all.

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


class ModelAdapter(Protocol):
    """Anything that answers for one image."""

    #: Where inference runs: ``"cpu"``, ``"cuda"`` or ``"remote"``.
    device: str

    def predict(self, image: NDArray[Any]) -> Mapping[str, Any]:
        """The model's raw answer for ``image`` (see :mod:`truthset.prelabel.output`)."""
        ...


def _grey(image: NDArray[Any]) -> NDArray[np.float32]:
    """A single-channel float32 view of a 2D image (colour is averaged)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    return arr.astype(np.float32, copy=False)


def spatial_shape(image: NDArray[Any]) -> tuple[int, ...]:
    """The spatial shape of an image: colour channels (a trailing axis of 3 or 4) left out."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return tuple(int(s) for s in arr.shape[:2])
    return tuple(int(s) for s in arr.shape)


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
        ``[rows, cols]`` the model expects; images are resized (bilinear) and label maps
        resized back (nearest).
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

    def predict(self, image: NDArray[Any]) -> Mapping[str, Any]:
        """Run the model on ``image`` (2D, grey or colour) and shape its answer."""
        grey = _grey(image)
        shape = grey.shape
        size = self.config.get("input_size")
        if size:
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
        if self.output == "mask":
            scores = first[0] if first.ndim == 4 else first
            label_map = (np.argmax(scores, axis=0) if scores.ndim == 3
                         else scores.astype(np.int64))
            if size and tuple(label_map.shape) != shape:
                factors = [s / t for s, t in zip(shape, label_map.shape, strict=True)]
                label_map = ndimage.zoom(label_map, factors, order=0)
            names = {c: k for k, c in enumerate(classes) if k > 0 and c not in ("", "background")}
            return {"label_map": label_map.astype(np.int64), "label_names": names}
        # box: [N, 6] rows of x0, y0, x1, y1, score, class index
        rows = first.reshape(-1, 6) if first.size else np.zeros((0, 6))
        return {"objects": [
            {"label": classes[int(r[5])] if 0 <= int(r[5]) < len(classes) else f"#{int(r[5])}",
             "box": [float(v) for v in r[:4]], "score": float(r[4])}
            for r in rows]}


# -- remote HTTP (MONAI Label style) -------------------------------------------------------------
def nifti_bytes(image: NDArray[Any]) -> bytes:
    """A gzipped NIfTI-1 file holding ``image`` (grey) with an identity affine."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(_grey(image)), np.eye(4))
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

    def predict(self, image: NDArray[Any]) -> Mapping[str, Any]:
        """Send ``image`` and read the answer."""
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
    """Thresholds and connected components: no weights needed.

    Configuration:

    ``thresholds``
        ``{class: [low, high]}``: pixels with ``low <= value <= high`` belong to the class
        (values after ``normalise``); the first matching class wins where ranges overlap.
    ``normalise``
        ``true`` (default) rescales the image to [0, 1] (min-max) before thresholding.
    ``min_size``
        Smallest connected component kept, in pixels (default 10).
    ``smooth``
        Gaussian sigma applied before thresholding (default 0, none).

    Each region's score is its contrast with a 3-pixel ring around it, as a share of the
    image's intensity range (in [0.05, 1]).
    ``positive``, ``negative``
        Classification output: ``positive`` when any component is found, else ``negative``;
        the probability grows with the largest component's area (``area_ref`` pixels = 0.95).
    """

    output: OutputKind
    config: Mapping[str, Any]
    device: str = "cpu"

    def predict(self, image: NDArray[Any]) -> Mapping[str, Any]:
        """Segment ``image``."""
        grey = _grey(image).astype(np.float64)
        sigma = float(self.config.get("smooth", 0))
        if sigma > 0:
            grey = ndimage.gaussian_filter(grey, sigma)
        if self.config.get("normalise", True):
            lo, hi = float(grey.min()), float(grey.max())
            grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
        thresholds = self.config.get("thresholds", {})
        min_size = int(self.config.get("min_size", 10))
        taken = np.zeros(grey.shape, dtype=bool)
        objects: list[dict[str, Any]] = []
        for name, (low, high) in thresholds.items():
            hit = (grey >= float(low)) & (grey <= float(high)) & ~taken
            taken |= hit
            components, count = ndimage.label(hit)
            if count == 0:
                continue
            sizes = ndimage.sum_labels(hit, components, index=np.arange(1, count + 1))
            boxes = ndimage.find_objects(components)
            spread = float(grey.max() - grey.min()) or 1.0
            for k in np.flatnonzero(sizes >= min_size):
                mask = components == (k + 1)
                # Score: contrast between the region and a 3-pixel ring around it (computed
                # on the region's bounding box grown by 3 pixels).
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
