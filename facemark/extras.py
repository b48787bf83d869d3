"""The optional extras: which pip extra installs which module, and the one-line error when one is missing.

``pip install facemark`` runs models (ONNX Runtime, OpenCV, numpy); the rest comes in extras::

    train   torch, tensorboard, onnx, scikit-learn, matplotlib, scipy, h5py: training, export, INT8,
            the seed recipe, ERT/LBF training, loss curves, the MATLAB data formats
    plots   matplotlib: the CED plots of `facemark eval`
    data    scipy, h5py: the MATLAB formats (300W-LP / AFLW2000-3D .mat, COFW)
    serve   fastapi, uvicorn, python-multipart: `facemark serve`
    ray     ray[data], pyarrow: `facemark bulk --engine ray`
    dlib    dlib-bin, face-recognition-models: the dlib detectors and baselines

Modules of optional extras are imported where they are used: these, and facemark's own modules
that import one at their top (``facemark.train``: torch), are the only function-level imports in
facemark (``tests/test_layers.py`` checks it). The CLI turns a missing one into ``facemark: error:
<what> needs <module>: pip install "facemark[<extra>]"`` (:func:`missing_extra_message`).
"""

from __future__ import annotations

import importlib

#: top-level module -> the extra that installs it
EXTRAS = {
    "torch": "train", "tensorboard": "train", "onnx": "train", "sklearn": "train", "matplotlib": "plots",
    "scipy": "data", "h5py": "data", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
    "starlette": "serve", "ray": "ray", "pyarrow": "ray", "dlib": "dlib", "face_recognition_models": "dlib",
    "threadpoolctl": "train",  # installed with scikit-learn
}


class MissingExtra(ImportError):
    """An optional module is not installed; the message names the pip extra that installs it."""


def missing_extra_message(module: str | None, what: str = "this") -> str | None:
    """``"<what> needs <module>, which is not installed: pip install "facemark[<extra>]""`` for a module
    of an extra (its top-level name), else None."""
    top = (module or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f'{what} needs {top}, which is not installed: pip install "facemark[{extra}]"'


def require(module: str, what: str):
    """Import ``module`` (of an extra) or raise :class:`MissingExtra` naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == module.split(".")[0]:
            raise MissingExtra(missing_extra_message(module, what)) from None
        raise
