"""Text for ``metaedge devices``: one row per profile, the matching one marked, then the detection evidence."""

from __future__ import annotations

from .detect import DetectionResult
from .fit import human_bytes
from .profiles import Profile


def _backends(profile: Profile) -> str:
    parts = []
    for b in profile.backends:
        if b.providers:
            short = [p.name.removesuffix("ExecutionProvider") for p in b.providers]
            parts.append(f"{b.name}({'/'.join(short)})")
        else:
            parts.append(b.name)
    return " > ".join(parts)


def _memory(profile: Profile) -> str:
    text = human_bytes(profile.memory_budget_bytes)
    return f"{text} RAM, {human_bytes(profile.flash_budget_bytes)} flash" if profile.flash_budget_bytes else text


def format_profiles(profiles: dict[str, Profile], detected: DetectionResult | None = None) -> str:
    """The profiles as an aligned table (``*`` marks the detected one), followed by what detection read."""
    header = ("", "device", "backends (preference order)", "precision fwd/adapt", "threads", "memory budget",
              "JetPack / TensorRT")
    rows = [header]
    for name, p in profiles.items():
        mark = "*" if detected is not None and detected.profile == name else ""
        jetpack = ", ".join(f"JP{j.jetpack}/TRT{j.tensorrt}" for j in p.jetpack) or "-"
        rows.append((mark, name, _backends(p), f"{p.precision['forward']}/{p.precision['adapt']}", str(p.threads),
                     _memory(p), jetpack))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if detected is not None:
        lines.append("")
        lines.append(f"detected: {detected.reason}")
        if detected.jetson.get("jetpack"):
            lines.append(f"JetPack {detected.jetson['jetpack']} (L4T R{detected.jetson['l4t']}): TensorRT "
                         f"{detected.jetson['tensorrt']} family")
    mcus = [n for n, p in profiles.items() if not p.auto_detectable]
    if mcus:
        lines.append(f"never auto-detected (microcontrollers, choose by name): {', '.join(mcus)}")
    return "\n".join(lines)
