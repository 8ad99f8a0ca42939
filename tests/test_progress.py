"""Progress output: a bar on a terminal, a few whole lines in a log."""

from __future__ import annotations

import io

from click.testing import CliRunner

from metaedge.cli import main
from metaedge.sdk.progress import LineProgress, progress


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_are_rate_limited_and_say_where_the_work_is():
    clock, out = _Clock(), io.StringIO()
    bar = LineProgress(range(10_000), total=10_000, desc="maml sinusoid", unit="it", file=out, interval=30.0,
                       clock=clock)
    for i in bar:
        clock.t = 0.03 * (i + 1)  # 300 s of work
        if i == 4_999:
            bar.set_postfix(loss="0.2500")
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 300 // 30 + 1 and "\r" not in out.getvalue()
    assert lines[0] == "maml sinusoid: 1000/10000 it (10%), 33.3 it/s"
    assert lines[-1] == "maml sinusoid: 10000/10000 it (100%), 33.3 it/s, loss=0.2500"


def test_a_stream_that_is_not_a_terminal_gets_lines_and_disabled_gets_nothing():
    out = io.StringIO()
    assert isinstance(progress(range(3), total=3, desc="d", unit="it", file=out), LineProgress)
    quiet = progress(range(3), total=3, desc="d", unit="it", enabled=False, file=out)
    assert list(quiet) == [0, 1, 2] and out.getvalue() == ""


def test_a_training_piped_to_a_file_writes_whole_lines(tmp_path):
    result = CliRunner().invoke(main, ["train", "--family", "sinusoid", "--algo", "fomaml", "--shots", "2",
                                       "--queries", "2", "--meta-batch", "1", "--iterations", "1000", "--hidden", "4",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and len(result.output.splitlines()) < 100
    assert "1000/1000 it (100%)" in result.output
