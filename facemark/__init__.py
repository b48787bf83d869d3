"""facemark: 2D facial landmark detection — data, training, evaluation, export, inference, serving.

    import facemark
    faces = facemark.Landmarker().detect("photo.jpg")   # [Face(box, score, points (68, 2))]

``Landmarker`` and ``Face`` are loaded on first use, so training and evaluation (which never
use the inference API) do not import it.
"""

from facemark._version import __version__

__all__ = ["Face", "Landmarker", "__version__"]


def __getattr__(name: str):
    if name in ("Face", "Landmarker"):
        from facemark import api

        return getattr(api, name)
    raise AttributeError(f"module 'facemark' has no attribute {name!r}")
