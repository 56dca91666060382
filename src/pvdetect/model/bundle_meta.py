"""The contents of a bundle's ``bundle.json``, as pydantic models validated on load.

A file is validated strictly (:func:`parse_meta`, :func:`parse_meta_json`): a wrong JSON type
means a broken file (``"format_version": "1"`` or ``"tile_size": 64.0`` are refused), numbers
must be finite, and the values must make sense together (one band name and one mean and
standard deviation per input channel, every standard deviation > 0, the overlap smaller than the
tile). Keys written by newer versions are ignored; a newer ``format_version`` asks for an
upgrade. Every failure is one :class:`~pvdetect.errors.BundleError` line
``BUNDLE: bundle.json: FIELD: problem``. Metadata built in Python (training) is validated with
the usual pydantic conversions; the JSON on disk is :meth:`BundleMeta.to_dict`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pvdetect import __version__
from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA
from pvdetect.errors import BundleError
from pvdetect.validation import first_error, rule_error

__all__ = [
    "FORMAT_VERSION",
    "META_NAME",
    "BundleMeta",
    "SourceMeta",
    "UpscaleMeta",
    "parse_meta",
    "parse_meta_json",
]

#: the newest bundle format this pvdetect reads and the one it writes
FORMAT_VERSION = 1
META_NAME = "bundle.json"
#: band statistics every bundle holds, and those it may hold
_REQUIRED_STATS = ("mean", "std")
_OPTIONAL_STATS = ("p2", "p98")


class _Meta(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class UpscaleMeta(_Meta):
    """How inputs are upscaled before the model (factor 1 = not at all)."""

    factor: int = Field(1, description="Upscaling factor: 1, 2 or 4.")
    method: Literal["bicubic", "sr"] = Field(
        "bicubic", description="bicubic, or sr: the super-resolution model in the bundle."
    )
    sr_weights: str | None = Field(
        None, description="Inside a bundle: the file name of the super-resolution weights."
    )

    @field_validator("factor")
    @classmethod
    def _factor(cls, value: int) -> int:
        if value not in (1, 2, 4):
            expected = {"expected": "1, 2 or 4"}
            raise PydanticCustomError("literal_error", "must be 1, 2 or 4", expected)
        return value


class SourceMeta(_Meta):
    """One training source of a bundle (``bundle.json`` ``sources``)."""

    name: str = Field(min_length=1, description="Name of the source in metrics and reports.")
    kind: Literal["dataset", "synthetic"] = Field(
        "dataset", description="dataset (chips on disk) or synthetic (pvdetect.synth chips)."
    )
    weight: float = Field(1.0, gt=0.0, description="Sampling weight of the source.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="How the source was made: root, fractions, style..."
    )
    fingerprint: str = Field("", description="Fingerprint of the source's packed cache.")
    chips: dict[str, int] = Field(default_factory=dict, description="Chips per split.")
    band_stats: dict[str, list[float]] = Field(
        default_factory=dict, description="Band statistics of the source's training chips."
    )
    val_metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="Validation scores of the source's chips at the calibrated threshold.",
    )


class BundleMeta(_Meta):
    """Contents of ``bundle.json``; see docs/architecture.md."""

    arch: str = Field(min_length=1, description="smp architecture of the model.")
    encoder: str = Field(min_length=1, description="Encoder of the model.")
    band_stats: dict[str, list[float]] = Field(
        description="Training-split statistics per band: mean and std (used to normalise the "
        "input), optionally the p2 and p98 percentiles."
    )
    in_channels: int = Field(4, ge=1, description="Number of input bands.")
    band_order: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: list(BAND_NAMES),
        description="Names of the input bands, in the order the model reads them.",
    )
    input_scale: float = Field(
        1.0, gt=0.0, description="Factor applied to the raw reflectance before normalising."
    )
    nodata: float = Field(DEFAULT_NODATA, description="Nodata value of the training images.")
    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Calibrated PV probability threshold."
    )
    threshold_metric: str = Field("f1", description="Score the threshold maximises.")
    upscale: UpscaleMeta = Field(default_factory=UpscaleMeta, description="Input upscaling.")
    tile_size: int = Field(
        256, ge=1, description="Prediction tile side in input pixels at the native resolution."
    )
    overlap: int = Field(64, ge=0, description="Overlap of neighbouring tiles, in input pixels.")
    data_fingerprint: str = Field("", description="Fingerprint of the training data cache.")
    val_metrics: dict[str, Any] = Field(
        default_factory=dict, description="Validation scores at the calibrated threshold."
    )
    created: str = Field("", description="Creation time (ISO 8601, UTC).")
    pvdetect_version: str = Field(__version__, description="pvdetect version that wrote it.")
    format_version: int = Field(
        FORMAT_VERSION, ge=1, le=FORMAT_VERSION, description="Version of this format."
    )
    sources: list[SourceMeta] | None = Field(
        None,
        description="The training sources (datasets, synthetic chips) with their chips, band "
        "statistics and validation scores; absent in bundles of older versions.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BundleMeta:
        n = self.in_channels
        if len(self.band_order) != n:
            raise rule_error(
                f"{{0}}: expected {n} band names (in_channels), got {self.band_order!r}",
                "band_order",
            )
        for name in _REQUIRED_STATS + _OPTIONAL_STATS:
            values = self.band_stats.get(name)
            if values is None:
                if name in _REQUIRED_STATS:
                    raise rule_error("{0}: missing (a required field)", f"band_stats.{name}")
                continue
            if len(values) != n:
                raise rule_error(
                    f"{{0}}: expected {n} values (in_channels), got {len(values)}",
                    f"band_stats.{name}",
                )
        if min(self.band_stats["std"]) <= 0:
            raise rule_error(
                f"{{0}}: every value must be > 0, got {self.band_stats['std']!r}", "band_stats.std"
            )
        if self.overlap >= self.tile_size:
            raise rule_error(
                f"{{0}}: must be smaller than tile_size {self.tile_size}, got {self.overlap}",
                "overlap",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the contents of ``bundle.json``; no ``sources`` key when
        none are recorded, so an older bundle is written back unchanged)."""
        return self.model_dump(exclude={"sources"} if self.sources is None else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMeta:
        """Build from the dict form, strictly; unknown keys (newer versions) are ignored.

        Raises:
            pydantic.ValidationError: a wrong type or value (a ``ValueError``).
        """
        return cls.model_validate(data, strict=True)


def parse_meta(data: Any, source: str) -> BundleMeta:
    """Validate the decoded contents of ``bundle.json``.

    Args:
        data: What the JSON file holds.
        source: The bundle, as it is named in messages.

    Raises:
        BundleError: ``SOURCE: bundle.json: FIELD: problem``, or a format newer than this
            pvdetect reads.
    """
    if not isinstance(data, dict):
        raise BundleError(
            f"{source}: {META_NAME}: expected a JSON object, got {type(data).__name__}"
        )
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(
            f"{source}: bundle format {version} is newer than this pvdetect supports "
            f"({FORMAT_VERSION}); upgrade pvdetect"
        )
    try:
        return BundleMeta.from_dict(data)
    except ValidationError as exc:
        raise BundleError(f"{source}: {META_NAME}: {first_error(exc, BundleMeta)}") from None


def parse_meta_json(text: str, source: str) -> BundleMeta:
    """Decode and validate the text of ``bundle.json`` (see :func:`parse_meta`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{source}: {META_NAME}: invalid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno})"
        ) from None
    return parse_meta(data, source)
