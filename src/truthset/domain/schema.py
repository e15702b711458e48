"""Label schemas: what readers may say about an item, written in YAML and versioned.

A schema names one question asked of every item of a project::

    name: chest-xray-finding
    kind: classification        # classification | box | polygon | mask | measurement
    mode: single                # classification only: single | multi | ordinal
    classes:
      - name: normal
        definition: No radiographic abnormality.
        risk: low               # low | medium | high (drives review policy)
      - name: nodule
        definition: Round opacity up to 30 mm.
        risk: high
    measurement: {unit: mm}     # measurement only

Parsing is pure: :func:`parse_schema` takes the YAML *text* and reports the line of a bad field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from truthset.domain.errors import InputError


class SchemaKind(StrEnum):
    """What a schema's labels are."""

    CLASSIFICATION = "classification"
    BOX = "box"
    POLYGON = "polygon"
    MASK = "mask"
    MEASUREMENT = "measurement"


class ClassificationMode(StrEnum):
    """How many classes one label holds, and whether they are ordered."""

    SINGLE = "single"
    MULTI = "multi"
    ORDINAL = "ordinal"


class RiskLevel(StrEnum):
    """Clinical risk of getting a class wrong; review policies depend on it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LabelClass(BaseModel):
    """One class of a schema, with its clinical definition and risk level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    definition: str = ""
    risk: RiskLevel = RiskLevel.LOW
    code: str | None = Field(default=None, description="Optional coded concept, e.g. SNOMED CT.")


class MeasurementSpec(BaseModel):
    """Unit and range of a measurement schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str = Field(min_length=1)
    minimum: float | None = None
    maximum: float | None = None


class LabelSchema(BaseModel):
    """A validated label schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    kind: SchemaKind
    mode: ClassificationMode | None = None
    classes: tuple[LabelClass, ...] = Field(min_length=1)
    measurement: MeasurementSpec | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {', '.join(duplicates)}")
        if self.kind == SchemaKind.CLASSIFICATION and self.mode is None:
            raise ValueError("a classification schema needs mode: single, multi or ordinal")
        if self.kind != SchemaKind.CLASSIFICATION and self.mode is not None:
            raise ValueError(f"mode applies to classification schemas only, not {self.kind}")
        if self.kind == SchemaKind.CLASSIFICATION and len(self.classes) < 2:
            raise ValueError("a classification schema needs at least two classes")
        if self.kind == SchemaKind.MEASUREMENT and self.measurement is None:
            raise ValueError("a measurement schema needs measurement: {unit: ...}")
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names in schema order (the order ordinal methods use)."""
        return tuple(c.name for c in self.classes)

    def class_named(self, name: str) -> LabelClass:
        """The class called ``name``.

        Raises
        ------
        InputError
            No class has that name.
        """
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise InputError(
            f"unknown class {name!r}; the schema has {', '.join(self.class_names)}",
            field="label",
        )

    def validate_payload(self, payload: Any) -> dict[str, Any]:
        """Check an annotation payload against this schema; return it normalised.

        Classification payloads are ``{"label": name}`` (single, ordinal) or
        ``{"labels": [names]}`` (multi). Geometric kinds carry ``{"objects": [...]}`` with a
        ``label`` per object; measurements ``{"value": number, "label": name}``.

        Raises
        ------
        InputError
            The payload does not fit the schema (the field is named).
        """
        if not isinstance(payload, dict):
            raise InputError("an annotation payload must be an object", field="payload")
        if self.kind == SchemaKind.CLASSIFICATION:
            if self.mode == ClassificationMode.MULTI:
                labels = payload.get("labels")
                if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                    raise InputError("a multi-label payload needs labels: [class, ...]",
                                     field="labels")
                for k, name in enumerate(labels):
                    try:
                        self.class_named(name)
                    except InputError as exc:
                        raise InputError(exc.reason, field=f"labels.{k}") from None
                return {"labels": sorted(set(labels))}
            label = payload.get("label")
            if not isinstance(label, str):
                raise InputError("a classification payload needs label: class", field="label")
            self.class_named(label)
            return {"label": label}
        if self.kind == SchemaKind.MEASUREMENT:
            value = payload.get("value")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InputError("a measurement payload needs a numeric value", field="value")
            spec = self.measurement
            assert spec is not None
            if (spec.minimum is not None and value < spec.minimum) or (
                spec.maximum is not None and value > spec.maximum
            ):
                raise InputError(
                    f"value {value} {spec.unit} is outside [{spec.minimum}, {spec.maximum}]",
                    field="value",
                )
            self.class_named(str(payload.get("label", self.classes[0].name)))
            return dict(payload)
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise InputError(f"a {self.kind} payload needs objects: [...]", field="objects")
        for k, obj in enumerate(objects):
            if not isinstance(obj, dict) or not isinstance(obj.get("label"), str):
                raise InputError("each object needs a label", field=f"objects.{k}.label")
            try:
                self.class_named(obj["label"])
            except InputError as exc:
                raise InputError(exc.reason, field=f"objects.{k}.label") from None
        return dict(payload)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what the store keeps beside the YAML text)."""
        return self.model_dump(mode="json", exclude_none=True)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line in the YAML text of the node at ``loc`` (the closest existing parent)."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                break
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_schema(text: str, *, source: str | None = None) -> LabelSchema:
    """Parse and validate a label schema from YAML text.

    Raises
    ------
    InputError
        Invalid YAML, or a field that fails validation; the message names the line and field.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            source=source,
            location=f"line {mark.line + 1}" if mark else None,
        ) from exc
    if not isinstance(data, dict):
        raise InputError("a label schema must be a YAML mapping", source=source)
    try:
        return LabelSchema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(root, loc)
        field = ".".join(str(p) for p in loc) or None
        raise InputError(
            first["msg"].removeprefix("Value error, "),
            source=source,
            location=f"line {line}" if line else None,
            field=field,
        ) from exc
