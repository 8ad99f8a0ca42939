"""Signed bundles: keygen, export --sign, and the runtime's refusal of unsigned, foreign-signed and tampered bundles
once a trusted key is configured (--trust, Model.load(trust=...), METAEDGE_TRUST)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from metaedge.cli import main
from metaedge.runtime.bundle import Bundle, BundleError
from metaedge.runtime.model import Model
from metaedge.runtime.signing import (
    SIGNATURE_FILE,
    KeyFileError,
    SignatureError,
    generate_key,
    load_public_key,
    sign_bundle,
    trusted_keys,
)

XS = np.array([[30.0, 25.0], [50.0, 30.0], [70.0, 40.0]])
YS = np.array([[10.0], [40.0], [70.0]])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {name: (root / name, generate_key(root / name)) for name in ("vendor", "other")}


@pytest.fixture
def signed(small_bundle, keys, tmp_path):
    """A copy of the small bundle signed by the vendor key."""
    copy = shutil.copytree(small_bundle, tmp_path / "signed.meb")
    sign_bundle(copy, keys["vendor"][0])
    return copy


def test_keygen_writes_a_private_key_0600_and_its_public_key(keys, tmp_path):
    private, public = keys["vendor"]
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_public_key(private.with_name("vendor.pub"))
    assert loaded.raw == public.raw and len(public.raw) == 32
    assert public.key_id == hashlib.sha256(public.raw).hexdigest()[:16]
    assert public.key_id != keys["other"][1].key_id
    runner = CliRunner()
    result = runner.invoke(main, ["keygen", str(tmp_path / "k")])
    assert result.exit_code == 0 and "key id" in result.output, result.output
    before = (tmp_path / "k").read_bytes()
    result = runner.invoke(main, ["keygen", str(tmp_path / "k")])
    assert result.exit_code == 1 and "already exists" in result.output and result.output.count("\n") == 1
    assert (tmp_path / "k").read_bytes() == before  # never overwritten
    (tmp_path / "lonely").unlink(missing_ok=True)
    (tmp_path / "lonely.pub").write_text("x")
    with pytest.raises(KeyFileError, match="lonely.pub already exists"):
        generate_key(tmp_path / "lonely")
    assert not (tmp_path / "lonely").exists()  # refused before writing either file


def test_a_tampered_bundle_is_never_signed(small_bundle, keys, tmp_path):
    copy = shutil.copytree(small_bundle, tmp_path / "b.meb")
    _edit_file(copy)
    with pytest.raises(BundleError, match="rates.npy does not match its sha256"):
        sign_bundle(copy, keys["vendor"][0])
    assert not (copy / SIGNATURE_FILE).exists()


def test_manifest_sig_format_signs_the_exact_manifest_bytes(signed, keys):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = json.loads((signed / SIGNATURE_FILE).read_text())
    assert set(sig) == {"algorithm", "key_id", "signature"} and sig["algorithm"] == "ed25519"
    assert sig["key_id"] == keys["vendor"][1].key_id
    raw = base64.b64decode(sig["signature"])
    Ed25519PublicKey.from_public_bytes(keys["vendor"][1].raw).verify(raw, (signed / "manifest.json").read_bytes())


def _edit_manifest(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["normalization"]["y_mean"] = [m + 1.0 for m in manifest["normalization"]["y_mean"]]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _edit_file(bundle):
    data = bytearray((bundle / "rates.npy").read_bytes())
    data[-1] ^= 0x01
    (bundle / "rates.npy").write_bytes(bytes(data))


#: the five cases of docs/bundle.md's signing table (vendor key trusted): how the bundle is made, what is said
CASES = {
    "signed by the trusted key": (None, None),
    "unsigned": (lambda b, k: (b / SIGNATURE_FILE).unlink(), r"is not signed \(no manifest.sig\) but this device "
                 r"only accepts bundles signed by trusted keys"),
    "signed by another key": (lambda b, k: sign_bundle(b, k["other"][0]), r"is signed by key [0-9a-f]{16}, which is "
                              r"not trusted here \(trusted: [0-9a-f]{16}\)"),
    "manifest edited": (lambda b, k: _edit_manifest(b), r"manifest.json does not match its signature by trusted key "
                        r"[0-9a-f]{16}; the manifest was changed after signing"),
    "listed file edited": (lambda b, k: _edit_file(b), r"rates.npy does not match its sha256 in manifest.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trusted_key_accepts_only_intact_bundles_it_signed(signed, keys, small_bundle, case):
    tamper, message = CASES[case]
    trust = [keys["vendor"][0].with_name("vendor.pub")]
    if tamper is None:
        model = Model.load(signed, trust=trust)
        reference = Model.load(small_bundle, trust=())
        np.testing.assert_array_equal(model.adapt(XS, YS).predict(XS), reference.adapt(XS, YS).predict(XS))
        return
    tamper(signed, keys)
    with pytest.raises(BundleError, match=message):
        Model.load(signed, trust=trust)
    if case != "listed file edited":  # without trusted keys only the hashes count
        Model.load(signed, trust=())


def test_cli_trust_and_environment(signed, keys, small_bundle, tmp_path, monkeypatch):
    runner = CliRunner()
    support = tmp_path / "support.csv"
    support.write_text("bridge_output,temperature,pressure\n" + "".join(f"{a},{b},{c}\n" for (a, b), (c,) in
                                                                          zip(XS, YS)))
    vendor_pub, other_pub = (str(keys[k][0].with_name(f"{k}.pub")) for k in ("vendor", "other"))

    def adapt(bundle, *extra):
        return runner.invoke(main, ["adapt", str(bundle), "--support", str(support), "--out",
                                    str(tmp_path / "state.npz"), *extra])

    result = adapt(signed, "--trust", other_pub, "--trust", vendor_pub)
    assert result.exit_code == 0, result.output
    result = adapt(small_bundle, "--trust", vendor_pub)
    assert result.exit_code == 1 and "is not signed" in result.output and result.output.count("Error") == 1
    monkeypatch.setenv("METAEDGE_TRUST", os.pathsep.join([other_pub]))
    for command in (["bench", str(signed), "--repeats", "2"], ["predict", str(signed), "--input", str(support)]):
        result = runner.invoke(main, command)
        assert result.exit_code == 1 and "is signed by key" in result.output, result.output
    assert runner.invoke(main, ["predict", str(signed), "--input", str(support), "--trust", vendor_pub]).exit_code == 0
    with pytest.raises(SignatureError, match="not trusted here"):
        Bundle.open(signed)  # trust=None: METAEDGE_TRUST's keys
    assert Bundle.open(signed, trust=()).manifest  # an explicit empty trust list requires no signature
    monkeypatch.setenv("METAEDGE_TRUST", str(tmp_path / "missing.pub"))
    with pytest.raises(KeyFileError, match="trusted key .*missing.pub does not exist"):
        trusted_keys()
    result = adapt(signed)
    assert result.exit_code == 1 and "missing.pub does not exist" in result.output


def test_signed_zip_and_bad_signature_files(signed, keys, tmp_path):
    trust = [keys["vendor"][1]]
    archive = tmp_path / "signed.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(signed.iterdir()):
            z.write(f, f.name)
    opened = Bundle.open(archive, trust=trust)
    assert (opened.path / SIGNATURE_FILE).is_file()
    for text, message in [("not json", "is not a metaedge signature"),
                          ('{"algorithm": "rsa", "key_id": "x", "signature": "AAAA"}', "holds a 'rsa' signature"),
                          ('{"algorithm": "ed25519", "key_id": 1, "signature": "AAAA"}', "not a metaedge signature"),
                          ('{"algorithm": "ed25519", "key_id": "x", "signature": "@@"}', "not a metaedge signature")]:
        (signed / SIGNATURE_FILE).write_text(text)
        with pytest.raises(SignatureError, match=message):
            Bundle.open(signed, trust=trust)
    (signed / SIGNATURE_FILE).write_text("x" * 20000)
    with pytest.raises(BundleError, match="manifest.sig is larger than 16 KiB"):
        Bundle.open(signed, trust=trust)
    (signed / "k.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="is not a PEM public key"):
        Bundle.open(signed, trust=[signed / "k.pub"])


def test_export_sign_writes_a_bundle_that_verifies(small_bundle, keys, tmp_path):
    runner = CliRunner()
    run = small_bundle.parent / "run"
    result = runner.invoke(main, ["export", str(run), "-o", str(tmp_path / "b.meb"), "--no-check", "--sign",
                                  str(keys["vendor"][0])])
    assert result.exit_code == 0 and f"key id {keys['vendor'][1].key_id}" in result.output, result.output
    Bundle.open(tmp_path / "b.meb", trust=[keys["vendor"][1]])
    result = runner.invoke(main, ["export", str(run), "-o", str(tmp_path / "c.meb"), "--no-check", "--sign",
                                  str(keys["vendor"][0].with_name("vendor.pub"))])
    assert result.exit_code == 1 and "is not an unencrypted PEM private key" in result.output
    assert not (tmp_path / "c.meb").exists()


BLOCK_CRYPTOGRAPHY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cryptography":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def test_without_cryptography_unsigned_runs_and_trust_says_what_to_install(signed, keys):
    script = BLOCK_CRYPTOGRAPHY + textwrap.dedent(f"""
        import numpy as np
        from metaedge.runtime.model import Model
        from metaedge.runtime.bundle import BundleError
        m = Model.load({str(signed)!r})  # no trust configured: the signature is not needed
        print(m.adapt(np.array([[30.0, 25.0], [50.0, 30.0]]), np.array([[10.0], [40.0]])).predict([[60.0, 30.0]]).shape)
        try:
            Model.load({str(signed)!r}, trust=[{str(keys["vendor"][0].with_name("vendor.pub"))!r}])
        except BundleError as e:
            print("refused:", e)
        assert "cryptography" not in sys.modules
    """)
    env = {k: v for k, v in os.environ.items() if k != "METAEDGE_TRUST"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 1)" in result.stdout
    assert "refused: signed bundles need the `cryptography` package, which is not installed here; run `pip install " \
           "cryptography`" in result.stdout
