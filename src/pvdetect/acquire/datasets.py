"""Public PV datasets pvdetect can download: where they are and how to check them.

Solar Plants Brazil is the dataset of the capstone project this tool grew from (UCSD ML
Bootcamp, https://github.com/FederCO23/UCSD_MLBootcamp_Capstone): 272 chips of
256 x 256 px, 4 bands Red, Green, Blue, NIR from the Brazil Data Cube's Sentinel-2 16-day
cubes, float32, with binary masks, in ``{train,val,test}/input/img(N).tif`` and
``{train,val,test}/labels/target(N).tif``. It is published on Hugging Face
(``FederCO23/solar-plants-brazil``) as one zip archive; torchgeo's ``SolarPlantsBrazil``
dataset downloads the same file.

The publisher gives no checksum of the archive, and none could be taken here (no network):
``sha256`` is None, and the download then refuses to extract unverified data unless the
user gives ``--sha256`` (for instance the SHA-256 that Hugging Face shows on the file's page,
which is that of its Git LFS object) or ``--no-verify``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvdetect.errors import ConfigError


@dataclass(frozen=True)
class DatasetSource:
    """One downloadable dataset.

    Attributes:
        name: Name on the command line.
        url: Address of the archive.
        filename: Archive file name.
        sha256: Hex SHA-256 of the archive, or None where it is not known.
        layout: Layout the archive holds (``brazil``: the Solar-Plants-Brazil folders).
        homepage: Where the dataset is described.
        checksum_note: Where a checksum can be found when ``sha256`` is None.
    """

    name: str
    url: str
    filename: str
    sha256: str | None
    layout: str
    homepage: str
    checksum_note: str = ""


DATASETS: dict[str, DatasetSource] = {
    "solar-plants-brazil": DatasetSource(
        name="solar-plants-brazil",
        url=(
            "https://huggingface.co/datasets/FederCO23/solar-plants-brazil/resolve/main/"
            "solarplantsbrazil.zip"
        ),
        filename="solarplantsbrazil.zip",
        sha256=None,
        layout="brazil",
        homepage="https://huggingface.co/datasets/FederCO23/solar-plants-brazil",
        checksum_note=(
            "compare with the SHA-256 on "
            "https://huggingface.co/datasets/FederCO23/solar-plants-brazil/blob/main/"
            "solarplantsbrazil.zip"
        ),
    ),
}


def get_dataset(name: str) -> DatasetSource:
    """The registry entry of ``name``.

    Raises:
        ConfigError: Unknown name.
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise ConfigError(f"DATASET: unknown dataset {name!r}; known: {known}") from None
