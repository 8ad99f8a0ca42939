"""Device profiles, detection from fake roots, backend choice and fit checks (metaedge.devices)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from metaedge.devices import (
    DoesNotFit,
    NoBackend,
    ProfileError,
    backend_support,
    check_fits,
    checked_devices,
    choose_backend,
    detect,
    format_profiles,
    get_profile,
    load_profiles,
    memory_estimate,
    parse_tegra_release,
    read_profile,
    resolve_device,
)
from metaedge.devices.profiles import PROFILE_DIR
from metaedge.runtime.bundle import Bundle
from metaedge.runtime.manifest import Firmware, TensorRTEngines

PROFILES = load_profiles()

# --- fake roots: the files as real machines print them --------------------------------------------------------------

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 \
movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm avx2 bmi2
bogomips\t: 4899.99
"""

ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

ORIN_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat \
ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd42
"""

ARMV7_CPUINFO = """processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
"""


def tegra(major: int, revision: str, board: str = "generic") -> str:
    return (f"# R{major} (release), REVISION: {revision}, GCID: 38968081, BOARD: {board}, EABI: aarch64, "
            "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
            "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n")


JETSONS = {
    "jetson-orin-nano": ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                         "nvidia,p3768-0000+p3767-0005-super\0nvidia,p3767-0005\0nvidia,tegra234\0", tegra(36, "4.3")),
    "jetson-orin-nx": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                       "nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0", tegra(36, "3.0")),
    "jetson-agx-orin": ("NVIDIA Jetson AGX Orin Developer Kit",
                        "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0", tegra(36, "4.0")),
    "jetson-xavier-nx": ("NVIDIA Jetson Xavier NX Developer Kit",
                         "nvidia,p3509-0000+p3668-0001\0nvidia,p3668-0001\0nvidia,tegra194\0",
                         tegra(35, "5.0", "t186ref")),
}


def make_root(tmp: Path, cpuinfo: str | None = None, model: str | None = None, compatible: str | None = None,
              tegra_release: str | None = None) -> Path:
    files = {"proc/cpuinfo": cpuinfo, "etc/nv_tegra_release": tegra_release,
             # device-tree string properties end with a NUL byte
             "proc/device-tree/model": None if model is None else model + "\0",
             "proc/device-tree/compatible": compatible}
    for rel, text in files.items():
        if text is not None:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
    return tmp


# --- profiles -----------------------------------------------------------------------------------------------------

def test_the_eight_profiles_load_and_are_consistent():
    assert set(PROFILES) == {"cpu-x86_64", "cpu-aarch64", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin",
                             "jetson-xavier-nx", "cortex-m4", "cortex-m7"}
    for p in PROFILES.values():
        if p.kind == "jetson":
            assert p.backend_names[0] == "tensorrt" and p.arch == "aarch64"
            providers = [pr.name for pr in p.backend("onnxruntime").providers]
            assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
            trt_ep = p.backend("onnxruntime").providers[0].options
            assert trt_ep["trt_fp16_enable"] is True and trt_ep["trt_engine_cache_enable"] is True
            assert trt_ep["trt_engine_cache_path"].endswith(p.name)
        if p.kind == "mcu":
            assert p.backend_names == ("native",) and not p.auto_detectable and p.flash_budget_bytes
    # JetPack 6 ships TensorRT 10, JetPack 7 TensorRT 11; Xavier NX stops at JetPack 5
    nano = PROFILES["jetson-orin-nano"]
    assert nano.jetpack_for_l4t("36").tensorrt == "10" and nano.jetpack_for_l4t("38").tensorrt == "11"
    assert [j.jetpack for j in PROFILES["jetson-xavier-nx"].jetpack] == ["5"]
    assert PROFILES["cortex-m4"].memory_budget_bytes < PROFILES["cortex-m7"].memory_budget_bytes


def _write(tmp: Path, name: str, data) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _backend(profile: dict, name: str) -> dict:
    return next(b for b in profile["backends"] if b["name"] == name)


def _good() -> dict:
    return json.loads((PROFILE_DIR / "cpu-x86_64.json").read_text())


@pytest.mark.parametrize("change, message", [
    (lambda d: d["backends"].append({"name": "openvino"}), "unknown backend 'openvino'; known: tensorrt"),
    (lambda d: _backend(d, "onnxruntime")["providers"].append({"name": "DmlExecutionProvider"}),
     "unknown execution provider 'DmlExecutionProvider'"),
    (lambda d: d.pop("memory_budget_bytes"), "missing key 'memory_budget_bytes'"),
    (lambda d: d.update(threads=True), "'threads' must be int"),
    (lambda d: d.update(precision={"forward": "int8", "adapt": "fp32"}), "unknown precision.forward 'int8'"),
    (lambda d: d.update(match={"cpu_flags": ["avx"]}), "unknown match key 'cpu_flags'"),
    (lambda d: d.update(backends=[{"name": "native"}, {"name": "native"}]), "a backend is listed twice"),
    (lambda d: d.update(kind="jetson"), "must list its JetPack / TensorRT families"),
    (lambda d: _backend(d, "native").update(providers=[]), "only the 'onnxruntime' backend takes providers"),
])
def test_bad_profiles_are_clear_errors(tmp_path, change, message):
    data = _good()
    change(data)
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_profile(_write(tmp_path, "cpu-x86_64", data))


def test_bad_json_wrong_name_and_empty_directory(tmp_path):
    with pytest.raises(ProfileError, match="not valid JSON"):
        read_profile(_write(tmp_path, "cpu-x86_64", '{"name": "cpu-x86_64",'))
    (tmp_path / "cpu-x86_64.json").unlink()
    with pytest.raises(ProfileError, match="names itself 'cpu-x86_64'; a profile file must be named"):
        read_profile(_write(tmp_path, "laptop", _good()))
    with pytest.raises(ProfileError, match="holds no profile files"):
        load_profiles(tmp_path / "nothing-here")
    with pytest.raises(ProfileError, match="unknown device 'jetson-nano'; choose one of cortex-m4, cortex-m7, "):
        get_profile("jetson-nano")


def test_devices_package_needs_only_the_standard_library():
    code = ("import sys; import metaedge.devices as d; d.load_profiles(); d.detect(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'numpy') "
            "or m.startswith(('metaedge.sdk', 'metaedge.export', 'metaedge.runtime'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- detection ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(JETSONS))
def test_each_jetson_is_detected_from_its_device_tree_and_l4t_release(tmp_path, name):
    model, compatible, release = JETSONS[name]
    found = detect(make_root(tmp_path, ORIN_CPUINFO, model, compatible, release))
    assert found.profile == name
    assert f"/proc/device-tree/model: {model!r}" in found.evidence
    expected = {"36": ("6", "10"), "35": ("5", "8.5")}[found.jetson["l4t_major"]]
    assert (found.jetson["jetpack"], found.jetson["tensorrt"]) == expected
    assert found.machine == "aarch64" and "asimd" in found.features


@pytest.mark.parametrize("name", sorted(JETSONS))
def test_jetson_module_part_number_is_the_fallback(tmp_path, name):
    _, compatible, release = JETSONS[name]
    found = detect(make_root(tmp_path, ORIN_CPUINFO, None, compatible, release))
    assert found.profile == name
    assert any(e.startswith("/proc/device-tree/compatible:") for e in found.evidence)


def test_jetpack_7_maps_to_tensorrt_11_and_unknown_releases_are_reported(tmp_path):
    model, compatible, _ = JETSONS["jetson-agx-orin"]
    found = detect(make_root(tmp_path, ORIN_CPUINFO, model, compatible, tegra(38, "2.0")))
    assert (found.profile, found.jetson["jetpack"], found.jetson["tensorrt"]) == ("jetson-agx-orin", "7", "11")
    model, compatible, _ = JETSONS["jetson-xavier-nx"]
    found = detect(make_root(tmp_path / "x", ORIN_CPUINFO, model, compatible, tegra(36, "4.3")))
    assert found.profile == "jetson-xavier-nx" and "tensorrt" not in found.jetson
    assert "L4T R36 is not a release jetson-xavier-nx lists (R35 (JetPack 5))" in found.evidence


def test_cpu_profiles_from_cpuinfo(tmp_path):
    x86 = detect(make_root(tmp_path / "x86", X86_CPUINFO))
    assert (x86.profile, x86.machine) == ("cpu-x86_64", "x86_64")
    assert {"avx2", "fma", "f16c"} <= set(x86.features)
    pi = detect(make_root(tmp_path / "pi", ARM64_CPUINFO, "Raspberry Pi 4 Model B Rev 1.4"))
    assert (pi.profile, pi.machine) == ("cpu-aarch64", "aarch64")
    assert "/proc/device-tree/model: 'Raspberry Pi 4 Model B Rev 1.4'" in pi.evidence
    assert detect(make_root(tmp_path / "given", None), machine="aarch64").profile == "cpu-aarch64"


def test_what_matches_nothing_says_why(tmp_path):
    armv7 = detect(make_root(tmp_path / "v7", ARMV7_CPUINFO, "Raspberry Pi 3 Model B Rev 1.2"))
    assert armv7.profile is None and "no profile for architecture armv7l" in armv7.evidence
    empty = detect(tmp_path / "empty")
    assert empty.profile is None and "neither uname nor /proc/cpuinfo" in empty.reason
    # a Jetson no profile lists (a TX2) runs as a generic 64-bit Arm CPU
    tx2 = detect(make_root(tmp_path / "tx2", ORIN_CPUINFO, "quill", "nvidia,p2771-0000\0nvidia,tegra186\0",
                           tegra(32, "7.4", "t186ref")))
    assert tx2.profile == "cpu-aarch64"
    assert "a Jetson whose model no profile lists; treated as a generic CPU" in tx2.evidence


def test_microcontrollers_are_never_detected_only_chosen_by_name(tmp_path):
    roots = [make_root(tmp_path / n, ORIN_CPUINFO, *JETSONS[n]) for n in JETSONS]
    roots += [make_root(tmp_path / "x86", X86_CPUINFO), make_root(tmp_path / "pi", ARM64_CPUINFO),
              make_root(tmp_path / "v7", ARMV7_CPUINFO), tmp_path / "empty"]
    assert not any((detect(r).profile or "").startswith("cortex-m") for r in roots)
    for name in ("cortex-m4", "cortex-m7"):
        profile, found = resolve_device(name)
        assert profile.name == name and found is None


def test_live_root_uses_uname_and_resolve_auto(tmp_path):
    found = detect()
    import os

    assert found.machine == os.uname().machine and f"uname: {found.machine}" in found.evidence
    with pytest.raises(ProfileError, match="could not tell which device this is .*pass --device with one of"):
        resolve_device("auto", root=make_root(tmp_path, ARMV7_CPUINFO))
    profile, found = resolve_device("auto", root=make_root(tmp_path / "pi", ARM64_CPUINFO))
    assert profile.name == "cpu-aarch64" and found.profile == "cpu-aarch64"


def test_parse_tegra_release():
    assert parse_tegra_release(tegra(36, "4.3")) == {"l4t_major": "36", "l4t": "36.4.3", "board": "generic"}
    assert parse_tegra_release("garbage") == {}


def test_format_profiles_marks_the_detected_one(tmp_path):
    model, compatible, release = JETSONS["jetson-orin-nano"]
    found = detect(make_root(tmp_path, ORIN_CPUINFO, model, compatible, release))
    text = format_profiles(PROFILES, found)
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in text.splitlines()[1:9]}
    assert set(rows) == set(PROFILES)
    assert rows["jetson-orin-nano"].startswith("*") and not rows["cpu-x86_64"].startswith("*")
    assert "tensorrt > onnxruntime(Tensorrt/CUDA/CPU) > native" in rows["jetson-orin-nano"]
    assert "JP6/TRT10, JP7/TRT11" in rows["jetson-orin-nano"]
    assert "JetPack 6 (L4T R36.4.3): TensorRT 10 family" in text
    assert "never auto-detected (microcontrollers, choose by name): cortex-m4, cortex-m7" in text


# --- a real bundle for backend choice and fit checks ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(sinusoid_bundle):
    """The session's small sinusoid MAML bundle (ONNX graphs and the C library's model) and its footprint."""
    from metaedge.export.footprint import footprint

    manifest = Bundle.open(sinusoid_bundle).manifest
    return sinusoid_bundle, replace(manifest, footprint=footprint(sinusoid_bundle, manifest.graphs, manifest.firmware,
                                                                   shots=10))


def test_footprint_is_measured_from_the_graphs(bundle):
    _, m = bundle
    fp = m.footprint
    assert fp == Bundle.open(bundle[0]).manifest.footprint  # what export recorded
    assert fp.shots == 10 and fp.activations.unsized_tensors == 0
    # the forward graph holds 1761 adapted parameters as inputs: each sample adds at least its hidden activations
    assert fp.graphs["forward.onnx"].per_sample_bytes >= 4 * (40 + 40 + 1)
    assert fp.graphs["forward.onnx"].fixed_bytes >= 4 * 1761
    assert fp.activations.per_sample_bytes >= fp.graphs["adapt_step.onnx"].per_sample_bytes
    assert fp.native.mebin_bytes == (bundle[0] / "model.mebin").stat().st_size
    assert 0 < fp.native.arena_bytes < 1 << 20
    est = memory_estimate(m)
    assert est.complete and est.total == est.weights + est.parameters + est.activations
    assert est.parameters == 4 * 1761 * (3 + 2)


def test_choose_backend_follows_the_profile_and_says_why(bundle):
    _, m = bundle
    cpu = {"onnxruntime": ["CPUExecutionProvider"], "tensorrt": False, "native": True, "cuda": False}
    c = choose_backend(PROFILES["cpu-x86_64"], m, cpu)  # CPUs prefer the C library where the bundle has one
    assert (c.backend, c.threads) == ("native", 1)
    assert c.reason == "the first of cpu-x86_64's backends (native, onnxruntime)"
    assert c.log_line().startswith("metaedge: device cpu-x86_64: backend native")
    ort_ = choose_backend(PROFILES["cpu-aarch64"], m, {**cpu, "native": False})
    assert (ort_.backend, ort_.providers) == ("onnxruntime", ("CPUExecutionProvider",))
    assert "native skipped: the metaedge C library is not built here" in ort_.reason
    no_ort = choose_backend(PROFILES["cpu-aarch64"], m, {**cpu, "onnxruntime": None})
    assert no_ort.backend == "native"
    # a Jetson without TensorRT engines in the bundle: ONNX Runtime with the GPU providers it has, in order
    gpu = {"onnxruntime": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
           "tensorrt": True, "native": True, "cuda": True}
    j = choose_backend(PROFILES["jetson-orin-nano"], m, gpu)
    assert j.backend == "onnxruntime" and j.providers == tuple(gpu["onnxruntime"])
    assert "the bundle has no TensorRT engines for jetson-orin-nano" in j.reason
    assert not j.provider_options[0]["trt_engine_cache_path"].startswith("~")
    assert j.provider_options[1]["gpu_mem_limit"] == PROFILES["jetson-orin-nano"].memory_budget_bytes
    # with engines recorded for this device, TensorRT comes first; without a GPU it is passed over
    engines = TensorRTEngines(engines={"forward": "forward.jetson-orin-nano.plan"}, outputs={}, tensorrt_version="10.3",
                              precision={"forward": "fp16"}, max_shots=64, max_batch=256)
    with_engines = replace(m, tensorrt={"jetson-orin-nano": engines})
    assert choose_backend(PROFILES["jetson-orin-nano"], with_engines, gpu).backend == "tensorrt"
    no_gpu = choose_backend(PROFILES["jetson-orin-nano"], with_engines, {**gpu, "cuda": False})
    assert no_gpu.providers == ("CPUExecutionProvider",)
    assert "tensorrt skipped: no CUDA GPU answers" in no_gpu.reason
    assert "CUDAExecutionProvider skipped: no CUDA GPU answers" in no_gpu.reason
    # a plain pip onnxruntime on a Jetson has only the CPU provider
    plain = choose_backend(PROFILES["jetson-agx-orin"], m, {**gpu, "tensorrt": False,
                                                             "onnxruntime": ["CPUExecutionProvider"]})
    assert plain.providers == ("CPUExecutionProvider",)
    assert "CUDAExecutionProvider is not in this onnxruntime build" in plain.reason


def test_no_backend_lists_every_reason(bundle):
    _, m = bundle
    with pytest.raises(NoBackend, match="no backend of cpu-x86_64 can run this bundle here: native skipped: the "
                                        "metaedge C library is not built here; onnxruntime skipped: onnxruntime is "
                                        "not installed"):
        choose_backend(PROFILES["cpu-x86_64"], m, {"onnxruntime": None, "tensorrt": False, "native": False})
    onnx_only = replace(m, firmware=Firmware())
    with pytest.raises(NoBackend, match="native skipped: the bundle has no model.mebin"):
        choose_backend(PROFILES["cortex-m4"], onnx_only, {"onnxruntime": None, "native": True})


def test_check_fits_accepts_and_refuses_with_one_sentence(bundle):
    _, m = bundle
    for name in PROFILES:
        check_fits(PROFILES[name], m)  # the small sinusoid MLP fits everywhere, microcontrollers included
    huge = replace(m, footprint=replace(m.footprint, weights_bytes=600 << 20))
    check_fits(PROFILES["cpu-x86_64"], huge)
    with pytest.raises(DoesNotFit, match=r"^this bundle does not fit cpu-aarch64: the bundle needs about 600\.\d MiB "
                                         r"\(graph constants 600\.0 MiB.*memory budget is 512\.0 MiB; use a smaller"):
        check_fits(PROFILES["cpu-aarch64"], huge)
    with pytest.raises(DoesNotFit, match="activations for 1000000 samples"):
        check_fits(PROFILES["cpu-aarch64"], m, batch=1_000_000)

    def with_native(**figures):
        return replace(m, footprint=replace(m.footprint, native=replace(m.footprint.native, **figures)))

    tight = with_native(arena_bytes=200 << 10)
    check_fits(PROFILES["cortex-m7"], tight)
    with pytest.raises(DoesNotFit, match=r"arena for 64 samples is 200\.0 KiB but cortex-m4 has 128\.0 KiB of RAM"):
        check_fits(PROFILES["cortex-m4"], tight)
    tight = with_native(arena_bytes=200 << 10, mebin_bytes=2 << 20)
    with pytest.raises(DoesNotFit, match=r"model\.mebin is 2\.0 MiB but cortex-m7 has 1\.5 MiB of flash"):
        check_fits(PROFILES["cortex-m7"], tight)
    with pytest.raises(DoesNotFit, match="none of cortex-m4's backends can run this bundle .native: the bundle has "
                                         "no model.mebin"):
        check_fits(PROFILES["cortex-m4"], replace(m, firmware=Firmware()))
    with pytest.raises(DoesNotFit, match="records no firmware footprint"):
        check_fits(PROFILES["cortex-m4"], replace(m, footprint=None))


def test_operators_outside_tensorrt_leave_a_jetson_its_other_backends(bundle):
    _, m = bundle
    forward = m.ops["forward.onnx"]
    odd = replace(m, ops={**m.ops, "forward.onnx": replace(forward, ops={**forward.ops, "NonMaxSuppression": 1})})
    support = backend_support(PROFILES["jetson-orin-nx"], odd)
    assert support == {"tensorrt": "its graphs use NonMaxSuppression, outside TensorRT's operator set",
                       "onnxruntime": None, "native": None}
    check_fits(PROFILES["jetson-orin-nx"], odd)


def test_checked_devices_records_every_profile(bundle):
    _, m = bundle
    huge = replace(m, footprint=replace(m.footprint, weights_bytes=3 << 30))
    report = checked_devices(huge, PROFILES)
    assert set(report) == set(PROFILES)
    assert report["cpu-x86_64"].fits and report["jetson-agx-orin"].fits
    assert not report["cpu-aarch64"].fits and "memory budget is 512.0 MiB" in report["cpu-aarch64"].problems[0]
    assert not report["jetson-orin-nano"].fits and report["cortex-m4"].fits
