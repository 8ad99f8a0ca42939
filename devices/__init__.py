"""Device profiles (CPU, Jetson, Cortex-M) as data, detection and backend choice.

Standard library only (plus numpy where needed): the on-device runtime consults this package.

    from metaedge.devices import load_profiles, detect, choose_backend, check_fits
    profile, found = resolve_device("auto")          # or a name such as "jetson-orin-nano"
    check_fits(profile, manifest)                    # DoesNotFit (ValueError) with one sentence
    choice = choose_backend(profile, manifest, available)
    print(choice.log_line())
"""

from .detect import DetectionResult, detect, parse_cpuinfo, parse_tegra_release
from .fit import (
    BundleTraits,
    DoesNotFit,
    FitRecord,
    MemoryEstimate,
    backend_support,
    check_fits,
    checked_devices,
    fit_problems,
    memory_estimate,
)
from .profiles import Backend, JetPack, Profile, ProfileError, Provider, get_profile, load_profiles, read_profile
from .render import format_profiles
from .select import Choice, NoBackend, choose_backend, resolve_device

__all__ = [
    "Backend", "BundleTraits", "Choice", "DetectionResult", "DoesNotFit", "FitRecord", "JetPack", "MemoryEstimate",
    "NoBackend", "Profile",
    "ProfileError", "Provider", "backend_support", "check_fits", "checked_devices", "choose_backend", "detect",
    "fit_problems", "format_profiles", "get_profile", "load_profiles", "memory_estimate", "parse_cpuinfo",
    "parse_tegra_release", "read_profile", "resolve_device",
]
