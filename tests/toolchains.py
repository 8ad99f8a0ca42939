"""Probes that prove a C toolchain or emulator works before a test relies on it.

A tool on the PATH is not a working tool: a cross compiler without its target's C library links nothing
(``cannot find Scrt1.o``). Each probe compiles and links a trivial program with the same flags the project's
presets use and runs it (under the emulator where there is one); it returns ``None`` when everything works, else
the reason in one line.

Where ``scripts/install_toolchains.sh`` installed the tools, ``.ci/run`` sets ``METAEDGE_REQUIRE_TOOLCHAINS=1``:
then a failing probe fails the test instead of skipping it, so a broken install cannot hide behind a skip.

Run as a script (``python tests/toolchains.py [NAME ...]``) it prints each probe's verdict and exits non-zero
when one fails; the install script uses that to check what it installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "examples" / "firmware"
HELLO = '#include <stdio.h>\n#include <math.h>\nint main(void) { printf("probe %.1f\\n", sqrt(16.0)); return 0; }\n'
FUZZ = ("#include <stdint.h>\n#include <stddef.h>\n"
        "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return n > 0 && d[0] == 7 ? 0 : 0; }\n")
CORTEX_M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]


def _run(cmd: list[str], cwd: Path, timeout: int = 60) -> tuple[bool, str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{cmd[0]}: {e}"
    text = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode == 0, (text[-1] if text else f"exit code {out.returncode}")


def _missing(*tools: str) -> str | None:
    gone = [t for t in tools if shutil.which(t) is None]
    return f"{', '.join(gone)} not installed (Debian: sudo bash scripts/install_toolchains.sh)" if gone else None


def _steps(steps: list[tuple[list[str], str]], cwd: Path) -> str | None:
    """Run ``(command, what)`` pairs in order; the first failure's reason, or None."""
    for cmd, what in steps:
        ok, last = _run(cmd, cwd)
        if not ok:
            return f"{what} failed ({last})"
    return None


def _probe(name: str, tools: tuple[str, ...], steps, expect: str | None = "probe 4.0") -> str | None:
    missing = _missing(*tools)
    if missing:
        return missing
    with tempfile.TemporaryDirectory(prefix=f"metaedge-probe-{name}-") as tmp:
        work = Path(tmp)
        (work / "hello.c").write_text(HELLO)
        (work / "fuzz.c").write_text(FUZZ)
        *build, (run_cmd, what) = steps(work)
        reason = _steps(build, work)
        if reason:
            return f"{name}: {reason}"
        ok, last = _run(run_cmd, work)
        if not ok or (expect is not None and expect not in last):
            return f"{name}: {what} failed ({last})"
    return None


@cache
def host() -> str | None:
    """The host C compiler builds and runs a program; cmake is there for the presets."""
    return _probe("host", ("cc", "cmake", "ctest"), lambda w: [
        (["cc", "hello.c", "-o", "hello", "-lm"], "compiling and linking with cc"),
        ([str(w / "hello")], "running the program")])


@cache
def aarch64() -> str | None:
    """aarch64-linux-gnu-gcc links against the arm64 C library and qemu-aarch64 runs the result."""
    return _probe("aarch64", ("aarch64-linux-gnu-gcc", "qemu-aarch64", "cmake", "ctest", "file"), lambda w: [
        (["aarch64-linux-gnu-gcc", "hello.c", "-o", "hello", "-lm"],
         "linking for aarch64 (needs libc6-dev-arm64-cross)"),
        (["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(w / "hello")], "running under qemu-aarch64")])


@cache
def cortex_m4() -> str | None:
    """arm-none-eabi-gcc with newlib links the example's start-up and linker script; qemu-system-arm's
    mps2-an386 board runs it with semihosting."""
    return _probe("cortex-m4", ("arm-none-eabi-gcc", "qemu-system-arm", "cmake"), lambda w: [
        (["arm-none-eabi-gcc", *CORTEX_M4_FLAGS, "-Os", "hello.c", str(FIRMWARE / "startup_cortex_m4.c"),
          "-nostartfiles", "--specs=rdimon.specs", f"-T{FIRMWARE / 'cortex_m4.ld'}", "-lm", "-o", "hello.elf"],
         "linking for Cortex-M4 with newlib (needs libnewlib-arm-none-eabi)"),
        (["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native",
          "-kernel", "hello.elf"], "running on qemu-system-arm mps2-an386")])


@cache
def fuzzer() -> str | None:
    """clang links libFuzzer with ASan + UBSan and the fuzzer runs."""
    return _probe("fuzz", ("clang", "cmake"), lambda w: [
        (["clang", "-g", "-fsanitize=fuzzer,address,undefined", "fuzz.c", "-o", "fuzz"],
         "linking libFuzzer (needs libclang-rt-N-dev)"),
        ([str(w / "fuzz"), "-runs=100"], "running the fuzzer")], expect="Done 100 runs")


PROBES = {"host": host, "aarch64": aarch64, "cortex-m4": cortex_m4, "fuzz": fuzzer}


def required() -> bool:
    """True where the project's install script put the toolchains here (``.ci/run`` says so)."""
    return os.environ.get("METAEDGE_REQUIRE_TOOLCHAINS") == "1"


def need(name: str) -> None:
    """Skip the calling test with the probe's reason, or fail it where the toolchains are required."""
    import pytest

    reason = PROBES[name]()
    if reason is None:
        return
    if required():
        pytest.fail(f"{reason}; scripts/install_toolchains.sh installed this toolchain, so it must work")
    pytest.skip(reason)


def need_tools(*tools: str) -> None:
    """Skip the calling test when one of these plain tools (e.g. ``nm`` from binutils) is not on the PATH."""
    import pytest

    missing = _missing(*tools)
    if missing:
        pytest.skip(missing)


def main(names: list[str]) -> int:
    failed = 0
    for name in names or list(PROBES):
        reason = PROBES[name]()
        print(f"toolchain {name}: {'works' if reason is None else reason}")
        failed += reason is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
