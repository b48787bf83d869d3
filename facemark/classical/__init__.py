"""Classical landmark models on facemark's standard crops: dlib's ERT and a numpy LBF.

Both are cascaded shape regressors, ``S(t+1) = S(t) + r_t(phi(I, S(t)))``: ERT (Kazemi & Sullivan
2014, trained by dlib) regresses straight from pixel-difference features with boosted trees; LBF
(Ren et al. 2014, :mod:`facemark.classical.lbf`) learns per-landmark forests whose leaves are
binary features, then one linear regression from all leaves to the whole shape.

They run on the same input as the CNNs: a uint8 BGR crop ``(S, S, 3)`` cut by the crop rule of
:mod:`facemark.geometry` (unclipped, so the landmark box sits at a fixed place in every crop:
:func:`facemark.geometry.landmark_box_in_crop`),
and they return ``(K, 2)`` points in 0..1 of the crop. So :class:`facemark.Landmarker`, ``facemark
eval`` and the benchmarks use them like an ONNX model::

    lm = facemark.Landmarker("runs/ert_300w/model.dat")        # + model.dat.json beside it
    lm = facemark.Landmarker("runs/lbf_300w/model.lbf.npz")    # metadata inside the file

Training lives in :mod:`facemark.classical.train` (``facemark train --method ert|lbf``).
"""

from __future__ import annotations

from pathlib import Path

from facemark.classical.ert import ErtRunner
from facemark.classical.lbf import LbfModel

#: file suffixes of classical models, for :class:`facemark.Landmarker`'s model resolution
SUFFIXES = (".dat", ".npz")


def load_classical(path: str | Path, num_threads: int | None = None):
    """``(runner, metadata)`` for a classical model file; the runner maps uint8 BGR crops
    ``(B, S, S, 3)`` to ``(B, K, 2)`` normalised points, like the CNN runners of :mod:`facemark.api`."""
    path = Path(path)
    if path.suffix == ".dat":
        runner = ErtRunner(path)
    elif path.suffix == ".npz":
        runner = LbfModel.load(path)
    else:
        raise ValueError(f"{path}: not a classical model (expected one of {SUFFIXES})")
    return runner, runner.meta
