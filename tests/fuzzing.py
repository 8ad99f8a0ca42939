"""Fuzz targets and input strategies (hypothesis) for the runtime's readers of untrusted files.

Used by ``tests/test_fuzz.py`` (short runs in the default suite) and ``scripts/fuzz_runtime.py`` (long runs).
Each target takes a real, valid input (a small bundle, an adapted state, a CSV), mutates it as drawn by
hypothesis, feeds it to the reader and returns normally when the reader either works or raises one of the
project's own error type (BundleError for bundles; ValueError, its base, for states and CSV files); anything else
propagates as a finding.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from metaedge.runtime.bundle import Bundle, BundleError
from metaedge.runtime.tables import read_columns

CENTRAL = b"PK\x01\x02"  # central directory file header signature
LOCAL = b"PK\x03\x04"


def patch_central(data: bytes, index: int, offset: int, fmt: str, value: int, local_offset: int | None = None
                  ) -> bytes:
    """``data`` (a zip) with field ``fmt`` at ``offset`` of the ``index``-th central directory header set to
    ``value`` (and, with ``local_offset``, the same field of every local header). Offsets: flags 8, method 10,
    compressed size 20, uncompressed size 24, external attributes 38."""
    out = bytearray(data)
    starts = [i for i in _find_all(data, CENTRAL)]
    if starts:
        struct.pack_into(fmt, out, starts[index % len(starts)] + offset, value % (1 << (8 * struct.calcsize(fmt))))
    if local_offset is not None:
        for i in _find_all(data, LOCAL):
            struct.pack_into(fmt, out, i + local_offset, value % (1 << (8 * struct.calcsize(fmt))))
    return bytes(out)


def _find_all(data: bytes, needle: bytes):
    i = data.find(needle)
    while i >= 0:
        if i + 46 <= len(data):
            yield i
        i = data.find(needle, i + 1)


class Seeds:
    """The valid inputs the mutations start from, read once (a plain class: hypothesis prints it with findings)."""

    def __init__(self, bundle: Path, files: dict[str, bytes], state: bytes, state_v1: bytes, model) -> None:
        self.bundle = bundle  # directory (a private copy)
        self.files = files  # the bundle's files by name
        self.state = state  # an adapted state of that bundle, as Adapted.save writes it (format 2)
        self.state_v1 = state_v1  # the same state in format 1 (.npz), which the runtime still reads
        self.model = model  # the loaded Model (for Adapted.load)

    def __repr__(self) -> str:
        return f"Seeds({self.bundle})"


def make_seeds(bundle: Path, work: Path) -> Seeds:
    from metaedge.runtime.model import Adapted, Model

    bundle = shutil.copytree(bundle, work / "seed.meb")  # a private copy: a harness bug cannot damage the original
    model = Model.load(bundle, trust=())
    xs = np.array([[30.0, 25.0], [50.0, 30.0], [70.0, 40.0]])
    state_path = work / "seed-state.npz"
    adapted = model.adapt(xs, np.array([[10.0], [40.0], [70.0]]))
    adapted.save(state_path)
    Adapted.load(model, state_path)  # the seed itself must load
    v1 = io.BytesIO()
    np.savez(v1, theta=adapted.theta, steps_kept=np.int64(adapted.steps_kept),
             bundle_theta0_sha256=np.array(hashlib.sha256((bundle / "theta0.npy").read_bytes()).hexdigest()))
    (work / "seed-state-v1.npz").write_bytes(v1.getvalue())
    Adapted.load(model, work / "seed-state-v1.npz")
    files = {p.name: p.read_bytes() for p in sorted(bundle.iterdir()) if p.is_file()}
    return Seeds(bundle, files, state_path.read_bytes(), v1.getvalue(), model)


# --- bundle mutations ---------------------------------------------------------------------------------------------
NAMES = st.sampled_from(["manifest.json", "manifest.sig", "theta0.npy", "rates.npy", "forward.onnx", "model.mebin",
                         "../x", "/abs", "a/../../b", "dir/", "x\\y", "C:/z", "THETA0.NPY", "", ".", "a" * 300,
                         "sub/manifest.json", "sub/theta0.npy", "\x00"]) | st.text(min_size=0, max_size=20)

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=6)


def _paths(obj, prefix=()):
    """Every key path in a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@st.composite
def manifest_bytes(draw, seeds_manifest: bytes) -> bytes:
    """A JSON-level mutation of a real manifest: keys deleted, values replaced by other JSON, files renamed; or
    byte-level damage of the text."""
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "whole"]))
    if kind == "whole":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "bytes":
        data = bytearray(seeds_manifest)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)
    manifest = json.loads(seeds_manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(manifest) if p]
        path = draw(st.sampled_from(paths))
        parent = manifest
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["delete", "replace", "rename"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            parent[draw(NAMES)] = parent.pop(path[-1])
    return json.dumps(manifest, indent=2).encode()


@st.composite
def zip_bytes(draw, seeds: Seeds) -> bytes:
    """A zipped bundle built from the real one with entries renamed, duplicated, dropped, replaced, under a folder,
    as links, with lying sizes, truncated or with flipped bytes."""
    entries = [(n, d) for n, d in seeds.files.items()]
    if draw(st.booleans()):
        entries = [(n, draw(manifest_bytes(d)) if n == "manifest.json" else d) for n, d in entries]
    for _ in range(draw(st.integers(0, 3))):
        if not entries:
            break
        op = draw(st.sampled_from(["rename", "duplicate", "drop", "replace", "folder"]))
        j = draw(st.integers(0, len(entries) - 1))
        name, data = entries[j]
        if op == "rename":
            entries[j] = (draw(NAMES), data)
        elif op == "duplicate":
            entries.append((draw(st.sampled_from([name, name.upper()])), draw(st.sampled_from([data, b"", b"x"]))))
        elif op == "drop":
            entries.pop(j)
        elif op == "replace":
            entries[j] = (name, draw(st.binary(max_size=64)))
        else:
            entries = [(f"top/{n}", d) for n, d in entries]
    method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(buf, "w", method) as z:
            for name, data in entries:
                try:
                    z.writestr(name, data)
                except (ValueError, OSError, IndexError):  # names zipfile cannot write (NUL byte, empty)
                    pass
    data = buf.getvalue()
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from([(8, "<H", 6), (10, "<H", 8), (20, "<I", 18), (24, "<I", 22), (38, "<I", None),
                                      (42, "<I", None), (28, "<H", 26)]))
        value = draw(st.sampled_from([0, 1, 0xFFFFFFFF, 1 << 31, 12, 99, (0o120777 << 16)]) | st.integers(0, 2**32))
        data = patch_central(data, draw(st.integers(0, 20)), field[0], field[1], value,
                             field[2] if draw(st.booleans()) else None)
    if draw(st.booleans()):
        mutable = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            mutable[draw(st.integers(0, len(mutable) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(mutable)
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def open_zip(seeds: Seeds, data: bytes) -> None:
    """Target: ``Bundle.open`` on a mutated zip."""
    with tempfile.TemporaryDirectory(prefix="fuzz-zip-") as tmp:
        path = Path(tmp) / "bundle.zip"
        path.write_bytes(data)
        try:
            Bundle.open(path, trust=())
        except BundleError:
            pass


@st.composite
def directory_ops(draw, seeds: Seeds) -> list[tuple]:
    """Mutations of a bundle directory: a new manifest, flipped or truncated files, removals, links, renames."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["manifest", "flip", "truncate", "remove", "link", "rename", "dir"]))
        name = draw(st.sampled_from(sorted(seeds.files)))
        if op == "manifest":
            ops.append((op, draw(manifest_bytes(seeds.files["manifest.json"]))))
        elif op == "flip":
            ops.append((op, name, draw(st.integers(0, 1 << 20)), draw(st.integers(1, 255))))
        elif op == "truncate":
            ops.append((op, name, draw(st.integers(0, 1 << 20))))
        elif op == "link":
            ops.append((op, name, draw(st.sampled_from(["inside", "outside", "dangling", "self"]))))
        elif op == "rename":
            ops.append((op, name, draw(st.sampled_from(sorted(seeds.files)) | st.just("elsewhere"))))
        else:
            ops.append((op, name))
    return ops


def open_directory(seeds: Seeds, ops: list[tuple]) -> None:
    """Target: ``Bundle.open`` on a mutated copy of the bundle directory."""
    with tempfile.TemporaryDirectory(prefix="fuzz-dir-") as tmp:
        root = Path(tmp) / "b.meb"
        shutil.copytree(seeds.bundle, root)
        outside = Path(tmp) / "outside.bin"
        outside.write_bytes(b"not part of the bundle")
        for op, *args in ops:
            path = root / (args[0] if op != "manifest" else "manifest.json")
            if path.is_symlink() and op != "remove":  # never write through a link made by an earlier op
                continue
            if op == "manifest":
                if not path.is_dir():
                    path.write_bytes(args[0])
            elif not path.exists():
                continue
            elif op == "flip" and path.is_file():
                data = bytearray(path.read_bytes())
                if data:
                    data[args[1] % len(data)] ^= args[2]
                    path.write_bytes(bytes(data))
            elif op == "truncate" and path.is_file():
                path.write_bytes(path.read_bytes()[: args[1]])
            elif op == "remove" and (path.is_file() or path.is_symlink()):
                path.unlink()
            elif op == "link":
                target = {"inside": root / "rates.npy", "outside": outside, "dangling": root / "nowhere",
                          "self": path}[args[1]]
                if path.is_dir():
                    continue
                path.unlink()
                path.symlink_to(target)
            elif op == "rename" and path.is_file() and not (root / args[1]).is_dir():
                path.rename(root / args[1])
            elif op == "dir" and path.is_file():
                path.unlink()
                path.mkdir()
        try:
            Bundle.open(root, trust=())
        except BundleError:
            pass


# --- adapted states -------------------------------------------------------------------------------------------------
ARRAYS = st.sampled_from([
    np.zeros(0, np.float32), np.zeros((2, 3)), np.array(3), np.array("x"), np.array([b"ab"]), np.array([1 + 2j]),
    np.array([np.nan, 1.0]), np.array([True]), np.arange(4, dtype=np.int8), np.array(["a", "b"]),
    np.zeros((1 << 12,), np.float64),
])


@st.composite
def state_bytes(draw, seeds: Seeds) -> bytes:
    """A mutated adapted-state file: arrays replaced, dropped or added; a plain .npy; byte damage; truncation."""
    kind = draw(st.sampled_from(["arrays", "arrays", "bytes", "npy", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=256))
    with np.load(io.BytesIO(seeds.state_v1), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, draw(ARRAYS) if draw(st.booleans()) else arrays["theta"])
        return buf.getvalue()
    if kind == "arrays":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(["theta", "steps_kept", "bundle_theta0_sha256", "extra"]))
            op = draw(st.sampled_from(["replace", "drop", "scale"]))
            if op == "drop":
                arrays.pop(key, None)
            elif op == "scale" and key == "theta" and arrays.get("theta", np.array("")).dtype.kind == "f":
                with np.errstate(invalid="ignore", over="ignore"):
                    arrays[key] = (arrays[key] * draw(st.sampled_from([np.inf, np.nan, -1.0, 1e38]))
                                   ).astype(np.float32)
            else:
                arrays[key] = draw(ARRAYS)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()
    data = bytearray(seeds.state if draw(st.booleans()) else seeds.state_v1)
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


def load_state(seeds: Seeds, data: bytes) -> None:
    """Target: ``Adapted.load`` on a mutated state file; a state that loads must be finite and of the bundle's size."""
    from metaedge.runtime.model import Adapted

    with tempfile.TemporaryDirectory(prefix="fuzz-state-") as tmp:
        path = Path(tmp) / "state.npz"
        path.write_bytes(data)
        try:
            state = Adapted.load(seeds.model, path)
        except ValueError:
            return
        assert state.theta.shape == seeds.model.theta0.shape and np.isfinite(state.theta).all()


# --- CSV ------------------------------------------------------------------------------------------------------------
CELLS = st.sampled_from(["1", "-2.5e3", "", "nan", "inf", "x", '"1"', '"a,b"', "1e999", " 3 ", "0x10", "\x00", "\ufeff"]
                        ) | st.text(max_size=6)


@st.composite
def csv_bytes(draw) -> bytes:
    """CSV text around the columns ``a``, ``b``: random headers, cells, quoting, encodings and raw bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    header = draw(st.lists(st.sampled_from(["a", "b", "c", "", '"a"', "a "]), min_size=0, max_size=4))
    rows = draw(st.lists(st.lists(CELLS, max_size=5), max_size=6))
    text = "\n".join([",".join(header), *(",".join(r) for r in rows)])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def read_csv(data: bytes) -> None:
    """Target: ``read_columns`` on a CSV file; a result must be float32 ``(n, 2)``."""
    with tempfile.TemporaryDirectory(prefix="fuzz-csv-") as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        try:
            out = read_columns(path, ["a", "b"])
        except ValueError:
            return
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 2


#: name -> (strategy factory taking the seeds, target taking (seeds, drawn value))
TARGETS: dict[str, tuple[Callable, Callable]] = {
    "bundle-zip": (zip_bytes, open_zip),
    "bundle-directory": (directory_ops, open_directory),
    "adapted-state": (state_bytes, load_state),
    "csv": (lambda seeds: csv_bytes(), lambda seeds, data: read_csv(data)),
}
