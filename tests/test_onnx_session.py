"""facemark.onnx_session: every network facemark runs opens through cpu_session, with threads that
spin while a run lasts and stop when it ends, and the same outputs as ONNX Runtime's defaults."""

import re

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from facemark.api import Landmarker
from facemark.detectors import get_detector
from facemark.detectors.blazeface import weights_dir
from facemark.geometry import crops_to_input
from facemark.onnx_session import SESSION_CONFIG, check_threads, cpu_session
from facemark.predict import SAMPLE_IMAGE
from facemark.runtime import open_model
from facemark.spec import resolve_model


def _config(session: ort.InferenceSession) -> dict[str, str]:
    options = session.get_session_options()
    return {key: options.get_session_config_entry(key) for key in SESSION_CONFIG}


def test_the_threads_spin_during_a_run_and_stop_after_it():
    assert SESSION_CONFIG == {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}
    session = cpu_session(weights_dir() / "short_range.onnx", 2)
    assert _config(session) == SESSION_CONFIG
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_every_network_facemark_opens_gets_the_config():
    runner = open_model("default", num_threads=1).runner
    detector = get_detector("blazeface", threads=1)
    assert _config(runner.session) == SESSION_CONFIG
    assert _config(detector._session) == SESSION_CONFIG


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_a_thread_count_that_is_not_a_whole_number_from_1_is_refused_by_name(threads):
    message = f"must be a whole number from 1, or None for one per core; got {threads!r}"
    with pytest.raises(ValueError, match="^num_threads " + re.escape(message)):
        cpu_session(weights_dir() / "short_range.onnx", threads)
    with pytest.raises(ValueError, match="^num_threads " + re.escape(message)):
        Landmarker(num_threads=threads)  # not "not a readable ONNX file"
    with pytest.raises(ValueError, match="^threads " + re.escape(message)):
        get_detector("blazeface", threads=threads)
    assert check_threads(None) is None and check_threads(np.int64(2)) == 2


def test_outputs_are_those_of_onnx_runtimes_defaults():
    path = resolve_model("default")  # the INT8 file
    image = cv2.resize(cv2.imread(str(SAMPLE_IMAGE)), (128, 128))
    batch = crops_to_input(np.stack([image, image[:, ::-1]]))
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = cpu_session(path, 2)
    for _ in range(3):  # a few runs: the threads stop and spin again between them
        assert all(np.array_equal(a, b) for a, b in zip(ours.run(None, {"image": batch}),
                                                          plain.run(None, {"image": batch})))
