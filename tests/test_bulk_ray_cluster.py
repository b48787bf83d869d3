"""facemark bulk on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``: two raylets on
this machine, one CPU each): the actors are spread over both nodes, read their files themselves,
and the rows are the local engine's. About 30 s on the 2-core development machine."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.predict import SAMPLE_IMAGE

pq = pytest.importorskip("pyarrow.parquet")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from facemark.bulk import bulk  # noqa: E402


def rows(out: Path) -> dict:
    table = pq.read_table(out)
    found = {(row["path"], row["face"]): row for row in table.to_pylist()}
    assert len(found) == table.num_rows  # no duplicate (path, face)
    return found


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_node_cluster_writes_the_local_rows(tmp_path):
    from ray.cluster_utils import Cluster

    photos = tmp_path / "photos"
    photos.mkdir()
    image = cv2.imread(str(SAMPLE_IMAGE))
    for i in range(6):  # six photos, one of them mirrored, one without a face, one that is no image
        cv2.imwrite(str(photos / f"{i}.jpg"), image if i % 2 else np.ascontiguousarray(image[:, ::-1]))
    cv2.imwrite(str(photos / "blank.png"), np.full((90, 160, 3), 128, np.uint8))
    (photos / "junk.jpg").write_bytes(b"no image")
    local = bulk([photos], tmp_path / "local", batch_size=2, progress=False)

    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        summary = bulk([photos], tmp_path / "ray", engine="ray", address=cluster.address, workers=2, batch_size=2,
                       progress=False)
        nodes = cluster.list_all_nodes()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 2 and (summary["cpus"], summary["workers"], summary["threads"]) == (2, 2, 1)
    assert (summary["images"], summary["faces"], summary["errors"]) == (local["images"], local["faces"], 1)
    ours, theirs = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert ours.keys() == theirs.keys()
    for key, row in ours.items():
        assert row["error"] == theirs[key]["error"] and row["width"] == theirs[key]["width"]
        if row["points"] is not None:
            assert np.abs(np.asarray(row["points"]) - np.asarray(theirs[key]["points"])).max() <= 0.01
    assert time.perf_counter() - start < 60
