"""Data: readers for annotation formats, the packed store and the training dataset."""

from facemark.data.record import DataError, FaceSample

__all__ = ["DataError", "FaceSample"]
