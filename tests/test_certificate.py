"""Calibration certificates (knowledge/certificate.py): content, replay with the runtime, headless-Chromium render."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace

import numpy as np
import pytest

from metaedge.errors import ExistsError, InputError
from metaedge.knowledge.certificate import (
    Certificate,
    CheckReading,
    ReferencePoint,
    _chain,
    render_html,
    replay,
    screenshot,
    write_certificate,
)


def _cert(**over) -> Certificate:
    points = (ReferencePoint((20.0, 25.0), (10.0,), (12.5,), (10.1,)),
              ReferencePoint((45.0, 25.0), (50.0,), (47.0,), (49.8,)),
              ReferencePoint((70.0, 25.0), (90.0,), (93.0,), (90.05,)))
    checks = (CheckReading("2026-02-01T08:00:00+00:00", (44.0, 22.0), (50.0,), (50.3,)),)
    base = dict(unit="PX-<0042>", calibrated="2026-01-05T09:30:00+00:00", issued="2026-03-01T10:00:00+00:00",
                device="line-3 (cpu-x86_64)", input_names=("bridge_output", "temperature"), input_units=("mV", "degC"),
                output_names=("pressure",), output_units=("kPa",), bundle_id="ab" * 32, run_id="cd" * 32,
                algo="metasgd", signing_key_id="key-7f3a", record_id="0123456789abcdef0123456789abcdef",
                state_sha256="ef" * 32, steps_kept=5, recalibration=False, state_verified=True, points=points,
                checks=checks)
    return Certificate(**{**base, **over})


def test_errors_and_summary_figures():
    cert = _cert()
    assert cert.error_before[:, 0] == pytest.approx([2.5, -3.0, 3.0])
    assert cert.error_after[:, 0] == pytest.approx([0.1, -0.2, 0.05])
    assert cert.check_errors[:, 0] == pytest.approx([0.3])
    page = render_html(cert)
    rms_before = np.sqrt((2.5**2 + 3.0**2 + 3.0**2) / 3)  # 2.84312...
    assert f"{rms_before:.6g}" in page and f"{np.sqrt((0.01 + 0.04 + 0.0025) / 3):.6g}" in page
    for text in ("PX-&lt;0042&gt;", "ab" * 32, "cd" * 32, "key-7f3a", "2026-01-05T09:30:00+00:00",
                 "pressure [kPa]", "bridge_output [mV]", "2026-02-01T08:00:00+00:00", "metasgd"):
        assert text in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # no external assets
    assert "unsigned bundle" in render_html(_cert(signing_key_id=None, checks=()))
    assert "No in-service check" in render_html(_cert(checks=()))
    assert "does NOT reproduce" in render_html(_cert(state_verified=False))


def test_no_points_and_no_overwrite(tmp_path):
    with pytest.raises(InputError, match="at least one reference point"):
        _cert(points=())
    out = write_certificate(_cert(), tmp_path / "cert.html")
    assert out.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ExistsError, match="already exists"):
        write_certificate(_cert(), out)


@dataclass(frozen=True)
class _Adaptation:
    """The fields of an adaptation row the replay reads (the knowledge base's AdaptationRow has them)."""

    time: str
    support_x: tuple[tuple[float, ...], ...]
    support_y: tuple[tuple[float, ...], ...]
    steps_kept: int
    state_sha256: str | None
    start_state_sha256: str | None = None


def test_replay_matches_the_device_state(small_bundle, tmp_path):
    from metaedge.runtime.model import Adapted, Model
    from metaedge.sdk.tasks import make_family

    model = Model.load(small_bundle)
    task = make_family("sensor-pressure").sample_task(np.random.default_rng(5), 3, 20)
    second = make_family("sensor-pressure").sample_task(np.random.default_rng(6), 3, 20)
    # what the device did: adapt, save the state; later recalibrate from that state with 3 new points
    model.adapt(task.x_support, task.y_support, steps=3).save(tmp_path / "s1.mest")
    device_1 = Adapted.load(model, tmp_path / "s1.mest")
    device_2 = model.adapt(second.x_support, second.y_support, steps=2, start=device_1.theta)
    a1 = _Adaptation("2026-01-01T00:00:00+00:00", tuple(map(tuple, task.x_support.tolist())),
                     tuple(map(tuple, task.y_support.tolist())), 3, "s1")
    a2 = _Adaptation("2026-02-01T00:00:00+00:00", tuple(map(tuple, second.x_support.tolist())),
                     tuple(map(tuple, second.y_support.tolist())), 2, "s2", start_state_sha256="s1")
    before, after, _ = replay(model, [a1])
    assert after == pytest.approx(device_1.predict(task.x_support), abs=1e-4)
    assert before == pytest.approx(Adapted(model, model.theta0).predict(task.x_support), abs=1e-6)
    assert _chain([a2, a1]) == [a1, a2] and _chain([replace(a2, start_state_sha256=None), a1]) == [
        replace(a2, start_state_sha256=None)]
    _, after2, _ = replay(model, _chain([a1, a2]))
    assert after2 == pytest.approx(device_2.predict(second.x_support), abs=1e-4)


def test_certificate_renders_in_headless_chromium(tmp_path):
    if shutil.which("chromium") is None:
        if os.environ.get("METAEDGE_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is not installed but METAEDGE_REQUIRE_SERVICES=1 (scripts/install_chromium.sh)")
        pytest.skip("chromium is not installed (Debian package chromium; scripts/install_chromium.sh installs it)")
    from PIL import Image

    html_path = write_certificate(_cert(), tmp_path / "cert.html")
    screenshot(html_path, tmp_path / "cert.png", tmp_path / "profile")
    img = np.asarray(Image.open(tmp_path / "cert.png").convert("L"), dtype=np.float64)
    assert img.shape == (1400, 1000)
    assert img.std() > 10  # not a blank page
    assert (img < 80).mean() > 0.005  # dark text pixels
    assert (img > 200).mean() > 0.5  # mostly white paper
