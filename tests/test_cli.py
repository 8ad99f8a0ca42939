"""The command line: help, version, and one clear line with a non-zero exit on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from torch import nn

from metaedge import __version__
from metaedge.cli import BUG_EXIT, main
from metaedge.sdk.learners import ALGORITHMS, MAML, register_learner
from metaedge.sdk.models import registry as model_registry
from metaedge.sdk.run import Run


@pytest.fixture
def runner():
    return CliRunner()


def test_help_and_version(runner):
    assert runner.invoke(main, ["--help"]).exit_code == 0
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    assert "sensor-ntc" in runner.invoke(main, ["families"]).output


def test_train_and_eval_end_to_end(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--family", "sinusoid", "--iterations", "5", "--meta-batch", "4",
                                  "--hidden", "8,8", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(out), "--tasks", "6", "--steps", "0,1", "--no-baselines", "--json",
                                  "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["steps"] for r in report["rows"]] == [0, 1]


def test_eval_writes_a_report_directory(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--family", "sensor-pressure", "--algo", "ridge", "--iterations", "3",
                                  "--meta-batch", "4", "--hidden", "8", "--skip", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(out), "--tasks", "6", "--shots", "3", "--steps", "0,1", "--queries", "10",
                                  "--pretrain-steps", "3", "--report", str(tmp_path / "rep"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert {"report.json", "report.md", "calibration.png"} <= {p.name for p in (tmp_path / "rep").iterdir()}


def test_config_file_and_override(runner, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"family": "sinusoid", "iterations": 3, "meta_batch": 2, "hidden": [4]}))
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--config", str(cfg), "--algo", "reptile", "--out", str(out),
                                  "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["algo"] == "reptile" and saved["hidden"] == [4] and saved["iterations"] == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--family", "nope", "--out", "{tmp}/a"], "unknown task family 'nope'"),
        (["train", "--shots", "0", "--out", "{tmp}/a"], "shots must be a positive integer"),
        (["train", "--inner-lr", "nan", "--out", "{tmp}/a"], "inner_lr must be a positive finite number"),
        (["train", "--hidden", "4,x", "--out", "{tmp}/a"], "comma-separated integers"),
        (["train", "--family-option", "oops", "--out", "{tmp}/a"], "expected KEY=VALUE"),
        (["train", "--config", "{tmp}/bad.json", "--out", "{tmp}/a"], "is not valid JSON"),
        (["eval", "{tmp}/missing"], "does not exist"),
        (["train", "--adapt", "conv*", "--out", "{tmp}/a"], "selects no parameter"),
    ],
)
def test_bad_input_is_one_clear_line(runner, tmp_path, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    result = runner.invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code in (1, 2)  # 1: the project's error types; 2: click's usage errors
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "a" / "model.safetensors").exists()


@pytest.mark.parametrize("missing,args,extra", [
    ("torch", ["train", "--family", "sinusoid", "--out", "{tmp}/r"], "train"),
    ("torch", ["eval", "{tmp}"], "train"),
    ("torch", ["export", "{tmp}", "-o", "{tmp}/b"], "train"),
    ("onnxruntime", ["bench", "{bundle}", "--backend", "onnxruntime"], "runtime"),
])
def test_a_missing_optional_package_is_one_line_naming_the_extra(tmp_path, request, missing, args, extra):
    """As in an install without the extra (``pip install metaedge``): the package is made unimportable."""
    import subprocess
    import sys

    if "{bundle}" in args:
        args = [a.replace("{bundle}", str(request.getfixturevalue("sinusoid_bundle"))) for a in args]
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "from metaedge.cli import main\n"
            f"main({[a.replace('{tmp}', str(tmp_path)) for a in args]!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and missing in last and f"pip install 'metaedge[{extra}]'" in last, last


def test_project_errors_are_one_line_with_exit_1(runner, tmp_path):
    result = runner.invoke(main, ["eval", str(tmp_path / "missing")])
    assert result.exit_code == 1
    missing = tmp_path / "missing"
    assert result.output == f"Error: run directory {missing} does not exist; train one with `metaedge train`\n"


def test_any_other_exception_is_a_bug_with_its_traceback(runner, tmp_path, monkeypatch):
    def broken(path, device="cpu"):
        raise KeyError("internal")

    monkeypatch.setattr(Run, "load", broken)
    result = runner.invoke(main, ["eval", str(tmp_path)])
    assert result.exit_code == BUG_EXIT
    assert "Traceback (most recent call last)" in result.output and "KeyError: 'internal'" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith(f"This is a bug in metaedge {__version__}")


class _Linear(nn.Module):
    """A user's model: one linear layer on the flattened input."""

    def __init__(self, input_shape: list[int], out_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(int(np.prod(input_shape)), out_dim)

    def forward(self, x):
        return self.head(x.reshape(x.shape[0], -1))


@pytest.fixture
def user_registrations():
    """Registers a user's learner and model for one test, then restores the registries."""
    saved_algos, saved_models = dict(ALGORITHMS), dict(model_registry._MODELS)

    @register_learner
    class Toy(MAML):
        name = "test-toy"
        first_order = True

    model_registry.register_model("test-linear", _Linear)
    yield Toy
    ALGORITHMS.clear()
    ALGORITHMS.update(saved_algos)
    model_registry._MODELS.clear()
    model_registry._MODELS.update(saved_models)


def test_a_registered_learner_and_model_are_selectable_from_the_cli(runner, tmp_path, user_registrations):
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--family", "sinusoid", "--algo", "test-toy", "--model", "test-linear",
                                  "--iterations", "2", "--meta-batch", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "config.json").read_text())
    assert record["train"]["algo"] == "test-toy"
    assert record["model"] == {"kind": "test-linear", "input_shape": [1], "out_dim": 1}
    run = Run.load(out)
    assert type(run.learner) is user_registrations and isinstance(run.learner.model, _Linear)
    assert "test-toy" in runner.invoke(main, ["train", "--help"]).output
    # export reads what the learner declares: no export code knows the user's learner
    result = runner.invoke(main, ["export", str(out), "-o", str(tmp_path / "toy.meb"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "toy.meb" / "manifest.json").read_text())
    adaptation = manifest["adaptation"]
    assert (manifest["algo"], adaptation["solver"], adaptation["size"]) == ("test-toy", "sgd", 2)


def test_an_unregistered_algo_is_refused_naming_the_registered_ones(runner, tmp_path):
    result = runner.invoke(main, ["train", "--algo", "test-toy", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "'test-toy' is not one of 'maml', 'fomaml'" in result.output


def test_every_project_error_type_is_a_metaedge_error():
    from metaedge.devices import DoesNotFit, NoBackend, ProfileError
    from metaedge.errors import MetaedgeError
    from metaedge.export.tensorrt import TensorRTUnavailable as ExportTensorRTUnavailable
    from metaedge.runtime.backends.tensorrt import TensorRTUnavailable
    from metaedge.runtime.bundle import BundleError
    from metaedge.runtime.native import NativeError
    from metaedge.runtime.signing import KeyFileError, SignatureError

    for cls in (BundleError, NativeError, ProfileError, DoesNotFit, NoBackend, TensorRTUnavailable,
                ExportTensorRTUnavailable, KeyFileError, SignatureError):
        assert issubclass(cls, MetaedgeError), cls
    assert not issubclass(KeyError, MetaedgeError) and not issubclass(ValueError, MetaedgeError)
