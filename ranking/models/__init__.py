"""The offline click models, by the name ``keyart train`` knows them by.

DeepFM needs PyTorch (the ``train`` extra); it is imported only when asked for,
so the other models and serving work without it.
"""

from __future__ import annotations

import importlib

from ranking.models.base import ClickModel

__all__ = ["MODEL_KINDS", "ClickModel", "TorchMissingError", "model_class"]

_MODULES = {
    "lr": ("ranking.models.lr", "LogisticRegressionModel"),
    "gbdt": ("ranking.models.gbdt", "GradientBoostedTreesModel"),
    "fm": ("ranking.models.fm", "FactorizationMachineModel"),
    "deepfm": ("ranking.models.deepfm", "DeepFMModel"),
}
MODEL_KINDS = tuple(_MODULES)


class TorchMissingError(ImportError):
    """DeepFM was asked for without PyTorch installed."""


def model_class(kind: str) -> type[ClickModel]:
    """The model class for ``kind`` (one of :data:`MODEL_KINDS`).

    Raises
    ------
    ValueError
        For an unknown kind.
    TorchMissingError
        For ``deepfm`` when PyTorch is not installed.
    """
    if kind not in _MODULES:
        raise ValueError(f"unknown model {kind!r}; choose one of {MODEL_KINDS}")
    module_name, class_name = _MODULES[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == "torch":
            raise TorchMissingError(
                f"{kind} needs PyTorch: pip install 'keyart[train]' "
                "(torch==2.13.0, the CPU build)"
            ) from None
        raise
    cls: type[ClickModel] = getattr(module, class_name)
    return cls
