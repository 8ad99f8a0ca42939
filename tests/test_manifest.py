"""The typed manifest: round trip, one-sentence errors for every missing or mistyped key, format-1 bundles."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metaedge.cli import main
from metaedge.runtime.bundle import Bundle, BundleError
from metaedge.runtime.manifest import Layout, Manifest, ManifestError
from metaedge.runtime.model import Model

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("manifest_errors", ROOT / "scripts" / "manifest_errors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return SCRIPT.export_small(tmp_path_factory.mktemp("manifest"))


@pytest.fixture(scope="module")
def raw(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _unit():
    xs = np.array([[40, 25], [55, 25], [70, 25]], np.float32)
    return xs, np.array([[30], [55], [80]], np.float32)


def test_round_trip_and_attributes(bundle, raw):
    m = Manifest.parse(raw)
    assert Manifest.parse(json.loads(m.to_json())) == m
    assert json.loads(m.to_json()) == raw  # the exporter writes exactly what the parts hold
    assert m.input.names == ("bridge_output", "temperature") and m.output.names == ("pressure",)
    assert m.adaptation.solver == "sgd" and m.adaptation.size == sum(p["size"] for p in raw["adaptation"]["parameters"])
    assert m.has_mebin and m.graphs.files()["forward"] == "forward.onnx" and m.footprint.shots == 3


def test_layout_split_and_flatten_against_slicing(raw):
    layout = Manifest.parse(raw).adaptation.layout
    flat = np.arange(layout.size, dtype=np.float32)
    parts = layout.split(flat, "theta.")
    for e in raw["adaptation"]["parameters"]:  # the reference: the manifest's own offsets, sliced by hand
        expected = flat[e["offset"]: e["offset"] + e["size"]].reshape(e["shape"])
        np.testing.assert_array_equal(parts[f"theta.{e['name']}"], expected)
    np.testing.assert_array_equal(layout.flatten(parts, "theta."), flat)
    assert Layout.build({n: p.shape for n, p in zip(layout.names, layout.parameters)}) == layout
    with pytest.raises(ValueError, match=rf"has shape \({layout.size},\), got \(3,\)"):
        layout.split(np.zeros(3, np.float32))


def test_every_key_deleted_or_mistyped_names_the_field(raw):
    """Manifest.parse over the script's full case list: a required key's deletion and every wrong type is one
    ManifestError naming the field; deleting an optional key still parses."""
    optional, refused = [], 0
    for field, change, broken in SCRIPT.cases(raw):
        try:
            Manifest.parse(broken)
        except ManifestError as e:
            message = str(e)
            assert f"manifest field {field} " in message, (field, change, message)
            assert message.count("; ") == 1 and message.endswith("re-export the bundle with `metaedge export`")
            refused += 1
            continue
        assert change == "deleted", f"{field} with a wrong type was accepted"
        optional.append(field)
    # what the version rules make optional: keys added after the first format-1 bundles, parts a bundle may lack,
    # and entries of maps (an operator count, a device's fit record)
    expected = {
        "adaptation.prototypes", "adaptation.solver", "devices", "devices.cortex-m4", "firmware", "firmware.h",
        "firmware.mebin", "footprint", "footprint.graphs.forward.onnx", "footprint.native", "graphs.adapt_predict",
        "graphs.adapt_steps",
        "native_parity", "ops", "ops.adapt_predict.onnx", "ops.adapt_predict.onnx.ops.Cast", "parity",
        "parity_max_relative_difference", "tensorrt", "uncertainty"}
    if "native" not in raw["footprint"]:  # the C library is not built here: no arena figures were recorded
        expected.remove("footprint.native")
    assert set(optional) == expected
    assert refused == 188 - len(optional)  # 172 cases, then 14 for the uncertainty part, 2 for adapt_predict


@pytest.mark.parametrize("field, change", [("adaptation.size", "deleted"), ("input", "deleted"),
                                           ("adaptation.parameters[0].shape", "wrong type"),
                                           ("normalization.x_std", "wrong type"), ("graphs.forward", "deleted")])
def test_cli_adapt_gives_one_sentence_and_exit_1(bundle, raw, tmp_path, field, change):
    broken = {(f, c): m for f, c, m in SCRIPT.cases(raw)}[(field, change)]
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "manifest.json").write_text(json.dumps(broken))
    support = tmp_path / "support.csv"
    support.write_text(SCRIPT.SUPPORT)
    result = CliRunner().invoke(main, ["adapt", str(copy), "--support", str(support), "--out", str(tmp_path / "s.npz"),
                                       "--backend", "onnxruntime"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"Error: {copy}: manifest field {field} "), line


def test_a_key_error_is_a_bug_with_its_traceback(monkeypatch, bundle, tmp_path):
    """The CLI no longer turns KeyError into a user message: a bug in a command keeps its traceback."""
    def broken(*args, **kwargs):
        raise KeyError("x_mean")

    monkeypatch.setattr("metaedge.runtime.tables.read_columns", broken)
    result = CliRunner().invoke(main, ["adapt", str(bundle), "--support", str(tmp_path / "s.csv"), "--out",
                                       str(tmp_path / "s.npz")])
    from metaedge.cli import BUG_EXIT

    assert result.exit_code == BUG_EXIT and "KeyError: 'x_mean'" in result.output and "Traceback" in result.output


def test_semantic_problems_name_the_field(raw):
    gap = json.loads(json.dumps(raw))
    gap["adaptation"]["parameters"][1]["offset"] += 1
    with pytest.raises(ManifestError, match=r"adaptation.parameters\[1\].offset must be \d+ \(the parameters are "):
        Manifest.parse(gap)
    proto = json.loads(json.dumps(raw))
    proto["adaptation"]["prototypes"] = True
    with pytest.raises(ManifestError, match="adaptation.prototypes is true but the solver is 'sgd'"):
        Manifest.parse(proto)
    newer = {**raw, "format_version": 99}
    with pytest.raises(BundleError, match="format version 99 but this runtime reads up to 1; upgrade metaedge"):
        Manifest.parse(newer)
    with pytest.raises(ManifestError, match="format_version must be a positive integer, got True"):
        Manifest.parse({**raw, "format_version": True})
    with pytest.raises(ManifestError, match="manifest.json must hold a JSON object, got a list"):
        Manifest.parse([raw])


#: a subscript or .get on a manifest (or the ``m`` it is bound to), or a JSON re-read of manifest.json
RAW_ACCESS = re.compile(r"((manifest|\bm)(\[|\.get\()|json\.loads\(.*manifest\.json)")


def test_no_raw_manifest_access_outside_the_manifest_module():
    """Everything but tests reads the manifest through its attributes (the count was 79 before the typed one)."""
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"  # (sdk/ never sees a bundle: it may not import runtime)
             for folder in ("metaedge", "runtime", "export", "devices", "benchmarks", "scripts", "examples")
             for path in sorted((ROOT / folder).rglob("*.py")) if path != ROOT / "runtime" / "manifest.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if RAW_ACCESS.search(line)]
    assert found == []


#: what the first format-1 exporter wrote (commit 7a3aa35): no solver, firmware, ops, devices, footprint or parity
#: record, only ``parity_max_relative_difference``
FIRST_FORMAT_1_KEYS = {"format_version", "task_kind", "loss", "algo", "family", "input", "output", "normalization",
                       "adaptation", "graphs", "files", "provenance", "parity_max_relative_difference"}


def test_a_first_format_1_bundle_still_loads_and_adapts_the_same(bundle, raw, tmp_path):
    old = tmp_path / "old.meb"
    shutil.copytree(bundle, old)
    legacy = {k: v for k, v in raw.items() if k in FIRST_FORMAT_1_KEYS}
    legacy["adaptation"] = {k: raw["adaptation"][k] for k in ("spec", "inner_steps", "parameters", "size")}
    for name in ("model.mebin", "model_data.h"):  # no C format yet
        del legacy["files"][name]
        (old / name).unlink()
    (old / "manifest.json").write_text(json.dumps(legacy))
    m = Bundle.open(old).manifest
    assert m.adaptation.solver == "sgd" and m.footprint is None and not m.has_mebin and m.ops == {}
    then, now = Model.load(old), Model.load(bundle, backend="onnxruntime")
    assert then.backend == "onnxruntime"
    xs, ys = _unit()
    a, b = then.adapt(xs, ys), now.adapt(xs, ys)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.predict(xs), b.predict(xs))
