"""facemark: 2D facial landmark detection — data, training, evaluation, export, inference, serving.

    import facemark
    faces = facemark.Landmarker().detect("photo.jpg")   # [Face(box, score, points (68, 2))]
"""

__version__ = "0.1.0"

from facemark.api import Face, Landmarker  # noqa: E402

__all__ = ["Face", "Landmarker", "__version__"]
