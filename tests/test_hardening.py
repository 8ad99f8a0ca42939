"""Hardened reading: zip bombs, links, traversal, duplicates and limits in zipped and directory bundles; CSV limits.

Every refusal leaves nothing behind: the tests point ``tempfile`` at an empty folder and check it stays empty."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import patch_central

from metaedge.runtime import bundle as bundle_module
from metaedge.runtime import tables
from metaedge.runtime.bundle import Bundle, BundleError
from metaedge.runtime.manifest import Manifest
from metaedge.runtime.tables import read_columns

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "zip_bomb_check.py"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty folder that ``tempfile`` (and so :func:`unpack`) writes into for this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    """A zip of ``members``: (ZipInfo or name, bytes) pairs, in order (duplicates allowed)."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for info, data in members:
            if isinstance(info, zipfile.ZipInfo):
                info.compress_type = info.compress_type or compression
            z.writestr(info, data)
    return path


def _members(bundle, prefix=""):
    return [(prefix + f.name, f.read_bytes()) for f in sorted(bundle.iterdir())]


def test_zip_bomb_and_link_refused_small_and_clean(small_bundle):
    """The reproducer of scripts/zip_bomb_check.py with a 64 MiB bomb (the script's default is 4 GiB)."""
    env = {k: v for k, v in os.environ.items() if k != "METAEDGE_TRUST"}
    result = subprocess.run([sys.executable, str(SCRIPT), str(small_bundle), "--claimed-mib", "64", "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    rows = {r["zip"]: r for r in json.loads(result.stdout)}
    bomb, link, valid = rows["bomb"], rows["link"], rows["valid"]
    assert bomb["claimed_mib"] > 64 and bomb["zip_mib"] < 1
    assert "unpacks to 10" in bomb["message"] and "times its compressed size" in bomb["message"]
    assert "entry 'theta0.npy' is a symbolic link" in link["message"]
    for r in (bomb, link):
        assert r["exit"] == 1 and r["peak_rss_mib"] < 100
        assert not r["state_written"] and r["tmp_left"] == []
    assert valid["exit"] == 0 and valid["state_written"]


@pytest.mark.parametrize("make, message", [
    (lambda b: [("../escaped.txt", b"x")], "would be written outside the bundle"),
    (lambda b: [("/abs/manifest.json", b"x")], "would be written outside the bundle"),
    (lambda b: [("a\\..\\..\\x", b"x")], "would be written outside the bundle"),
    (lambda b: [("C:/x", b"x")], "would be written outside the bundle"),
    (lambda b: [*_members(b), ("rates.npy", b"x")], "entry 'rates.npy' appears twice"),
    (lambda b: [*_members(b), ("RATES.npy", b"x")], "entry 'RATES.npy' appears twice"),
    (lambda b: [("README", b"x"), ("x/manifest.json", b"{}"), ("y/manifest.json", b"{}")],
     "holds more than one manifest.json"),
    (lambda b: [("README", b"x")], "holds no manifest.json"),
])
def test_unsafe_archives_are_refused_before_writing(small_bundle, tmp_path, scratch, make, message):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names these archives need
        archive = _zip(tmp_path / "bad.zip", make(small_bundle))
    with pytest.raises(BundleError, match=message):
        Bundle.open(archive)
    assert list(scratch.iterdir()) == []


def test_links_encryption_and_odd_compression_are_refused(small_bundle, tmp_path, scratch):
    link = zipfile.ZipInfo("notes")
    link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(BundleError, match="entry 'notes' is a symbolic link"):
        Bundle.open(_zip(tmp_path / "link.zip", [*_members(small_bundle), (link, b"/etc/passwd")]))
    with pytest.raises(BundleError, match="uses zip features bundles do not .flags 0x0, compression method 12"):
        Bundle.open(_zip(tmp_path / "bz.zip", _members(small_bundle), zipfile.ZIP_BZIP2))
    members = _members(small_bundle)
    plain = _zip(tmp_path / "plain.zip", members).read_bytes()
    index = [n for n, _ in members].index("theta0.npy")
    archive = tmp_path / "enc.zip"
    archive.write_bytes(patch_central(plain, index, 8, "<H", 0x1))  # general purpose flag bit 0: encrypted
    with pytest.raises(BundleError, match="entry 'theta0.npy' is encrypted"):
        Bundle.open(archive)
    assert list(scratch.iterdir()) == []


def test_limits_on_entries_sizes_and_ratio(small_bundle, tmp_path, scratch, monkeypatch):
    members = _members(small_bundle)
    archive = _zip(tmp_path / "ok.zip", members)
    monkeypatch.setattr(bundle_module, "MAX_ENTRIES", len(members) - 1)
    with pytest.raises(BundleError, match=f"holds {len(members)} entries, more than the {len(members) - 1}"):
        Bundle.open(archive)
    monkeypatch.setattr(bundle_module, "MAX_ENTRIES", 1000)
    largest = max(len(d) for _, d in members)
    monkeypatch.setattr(bundle_module, "MAX_FILE_BYTES", largest - 1)
    with pytest.raises(BundleError, match="unpacks to more than"):
        Bundle.open(archive)
    monkeypatch.setattr(bundle_module, "MAX_FILE_BYTES", 1 << 30)
    monkeypatch.setattr(bundle_module, "MAX_TOTAL_BYTES", sum(len(d) for _, d in members) - 1)
    with pytest.raises(BundleError, match="would unpack to more than"):
        Bundle.open(archive)
    monkeypatch.setattr(bundle_module, "MAX_TOTAL_BYTES", 256 << 20)
    monkeypatch.setattr(bundle_module, "RATIO_FREE_BYTES", 1000)  # model_data.h (C text) deflates ~4:1
    monkeypatch.setattr(bundle_module, "MAX_RATIO", 2)
    with pytest.raises(BundleError, match=r"times its compressed size \(at most 2 allowed"):
        Bundle.open(archive)
    assert list(scratch.iterdir()) == []


def test_streamed_copy_stops_at_the_limits_whatever_the_header_says(tmp_path):
    """:func:`_copy` counts what it streams: an entry longer than its header declares, or over a limit, stops
    at the first chunk beyond it."""
    info = zipfile.ZipInfo("x")
    info.file_size, info.compress_size = 10, 10
    src = io.BytesIO(bytes(5 << 20))
    with pytest.raises(BundleError, match="unpacks to more than its header declares"):
        bundle_module._copy(tmp_path, src, info, io.BytesIO(), [1 << 30], 1 << 30)
    assert src.tell() == bundle_module._CHUNK  # one chunk read, not the whole entry
    info.file_size = 1 << 30
    with pytest.raises(BundleError, match="exceeds the size limits"):
        bundle_module._copy(tmp_path, io.BytesIO(bytes(5 << 20)), info, io.BytesIO(), [1 << 30], 2 << 20)
    budget = [(3 << 20) - 1]
    with pytest.raises(BundleError, match="exceeds the size limits"):
        bundle_module._copy(tmp_path, io.BytesIO(bytes(3 << 20)), info, io.BytesIO(), budget, 1 << 30)
    out = io.BytesIO()
    assert bundle_module._copy(tmp_path, io.BytesIO(b"abc"), info, out, [10], 10) == b"" and out.getvalue() == b"abc"


def test_only_listed_files_are_extracted_and_a_top_folder_works(small_bundle, tmp_path):
    listed = set(json.loads((small_bundle / "manifest.json").read_text())["files"]) | {"manifest.json"}
    archive = _zip(tmp_path / "extra.zip", [*_members(small_bundle, "model.meb/"), ("model.meb/notes.txt", b"x"),
                                            ("other/junk.bin", bytes(100))])
    opened = Bundle.open(archive)
    assert {p.name for p in opened.path.iterdir()} == listed
    assert opened.manifest == Manifest.parse(json.loads((small_bundle / "manifest.json").read_text()))


def test_directory_bundles_refuse_links(small_bundle, tmp_path):
    copy = shutil.copytree(small_bundle, tmp_path / "b.meb")
    real = tmp_path / "theta0.npy"
    shutil.move(copy / "theta0.npy", real)
    (copy / "theta0.npy").symlink_to(real)  # same bytes, same hash: still refused
    with pytest.raises(BundleError, match="theta0.npy is a symbolic link"):
        Bundle.open(copy)
    (copy / "theta0.npy").unlink()
    shutil.move(real, copy / "theta0.npy")
    shutil.move(copy / "manifest.json", tmp_path / "manifest.json")
    (copy / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match="manifest.json is a symbolic link"):
        Bundle.open(copy)
    (copy / "manifest.json").unlink()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"]["../outside"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest names '../outside' outside the bundle"):
        Bundle.open(copy)


def _csv(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_csv_limits_and_malformed_files(tmp_path, monkeypatch):
    ok = _csv(tmp_path / "ok.csv", "\ufeffa,b\n1,2\n3,4.5\n")  # a spreadsheet's byte-order mark is fine
    np.testing.assert_array_equal(read_columns(ok, ["b", "a"]), np.array([[2, 1], [4.5, 3]], np.float32))
    monkeypatch.setattr(tables, "MAX_CSV_ROWS", 1)
    with pytest.raises(ValueError, match=r"has more than 1 rows \(metaedge.runtime.tables.MAX_CSV_ROWS\)"):
        read_columns(ok, ["a"])
    monkeypatch.setattr(tables, "MAX_CSV_ROWS", 10)
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 1 << 20)
    big = _csv(tmp_path / "big.csv", "a,b\n" + "1,2\n" * (1 << 18))
    with pytest.raises(ValueError, match=r"is larger than 1 MiB \(metaedge.runtime.tables.MAX_CSV_BYTES\)"):
        read_columns(big, ["a"])
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 64 << 20)
    for text, message in [(b"a,b\n1,\x002\n", r"line 2: every value of a, b must be a number"),
                          (b"a,b\n1,\xff\n", r"is not UTF-8 text \(byte 6: invalid start byte\)"),
                          ("a,b\n1," + "9" * 200_000 + "\n", "line 2 is not valid CSV"),
                          ("a,b\n1,x\n", "line 2: every value of a, b must be a number"),
                          ("a\n1\n", "lacks column")]:
        with pytest.raises(ValueError, match=message):
            read_columns(_csv(tmp_path / "bad.csv", text), ["a", "b"])
