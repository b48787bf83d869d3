"""The one promise every reader keeps: bad input raises :class:`DataError` naming the file, nothing else."""

from __future__ import annotations

import functools
from pathlib import Path

from facemark.data.record import DataError
from facemark.extras import MissingExtra

_REASON_CHARS = 300  # a foreign message can quote the input (a 50 MB "file name"): keep errors one short line


def reader(read):
    """Decorator for ``read(path, ...)``: whatever else it raises becomes a :class:`DataError` naming ``path``.

    A reader is handed arbitrary bytes, and the libraries under it (scipy, h5py, OpenCV, PIL, the
    XML parser) each fail their own way, so the promise is kept here, once, with the original
    exception's type in the message; the readers still raise their own, more precise errors first.
    """

    @functools.wraps(read)
    def wrapper(path, *args, **kwargs):
        try:
            return read(path, *args, **kwargs)
        except DataError as err:
            if len(err.reason) <= _REASON_CHARS:
                raise
            raise DataError(err.path, _short(err.reason), err.line) from None
        except MissingExtra:  # not the file's fault: the install lacks an extra (one line naming it)
            raise
        except Exception as err:  # noqa: BLE001 - see the docstring
            raise DataError(Path(path), f"cannot read ({type(err).__name__}: {_short(str(err))})") from None

    return wrapper


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "..."
