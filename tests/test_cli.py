"""The command line: help, version, and one clear line with a non-zero exit on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from metaedge import __version__
from metaedge.cli import main


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
    assert result.exit_code != 0
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
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: `metaedge {args[0]}` needs {missing}, which is not installed here; install it with pip install "
        f"'metaedge[{extra}]'")
