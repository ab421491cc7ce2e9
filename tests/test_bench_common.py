"""Where benchmark results go: `--out NAME` into bench/results/, `--out PATH` where it says."""

from __future__ import annotations

import json

from bench.common import RESULTS, result_path, write_result


def test_bare_name_goes_to_results():
    assert result_path("quality") == RESULTS / "quality.json"
    assert result_path("quality.json") == RESULTS / "quality.json"
    assert result_path("inference_batch1_long") == RESULTS / "inference_batch1_long.json"


def test_path_is_used_as_given_with_one_json_suffix(tmp_path):
    assert result_path(str(tmp_path / "ext.json")) == tmp_path / "ext.json"
    assert result_path(str(tmp_path / "ext")) == tmp_path / "ext.json"
    assert result_path(str(tmp_path / "run.v2")) == tmp_path / "run.v2.json"


def test_write_result_creates_the_folder_and_writes_json(tmp_path):
    path = write_result(str(tmp_path / "new" / "quality_ext.json"), {"rows": [{"bal": 0.5}]})
    assert path == tmp_path / "new" / "quality_ext.json"
    assert json.loads(path.read_text()) == {"rows": [{"bal": 0.5}]}
