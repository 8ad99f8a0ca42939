"""Industrial sensor-calibration task families, in physical units.

A task is one manufactured sensor unit with its own manufacturing spread. The support set is a few
reference points (the unit's raw reading at known true values); the query set covers the unit's full
operating range. Both are drawn uniformly over the range (and, for two-input sensors, uniformly over
the temperature range too). Inputs are ``(raw reading[, measured temperature])``; the target is the
true physical quantity.

Per-unit parameters are drawn uniformly within the datasheet tolerance band (``U(a, b)``), or from a
triangular distribution where a datasheet gives min / typ / max (``Tri(min, typ, max)``). Values
marked "typical of" are representative of that class of datasheet rather than a quoted number.

Families:

=============== ================================= ============ ================ ==================
registry name   inputs                            output       true-value range temperature range
=============== ================================= ============ ================ ==================
sensor-ntc      adc_counts [counts]               temperature  -40 .. 125 degC  (is the output)
                                                  [degC]
sensor-loadcell bridge_signal [mV/V],             load [kg]    0 .. 50 kg       -10 .. 40 degC
                temperature [degC]
sensor-pressure bridge_output [mV],               pressure     0 .. 100 kPa     -20 .. 85 degC
                temperature [degC]                [kPa]
=============== ================================= ============ ================ ==================

Production lots: every family takes a ``lot`` option (``make_family("sensor-pressure", lot="B")``, or
``--family-option lot=B``). Lot ``A`` (the default) is the spread of the datasheets below; lot ``B`` is a second
supplier of the same part class, whose units differ systematically (span, temperature coefficients,
nonlinearity): the situation a model update from fleet records exists for. Each family's ``LOTS`` table holds
the numbers and why they are plausible.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError
from .base import Split, Task, TaskFamily, register_family

_T0 = 273.15  # 0 degC in kelvin
Range = tuple[float, float]
Triangle = tuple[float, float, float]  # (min, typ, max) of a datasheet


class _SensorFamily(TaskFamily):
    """Shared sampling: draw a unit, true values over the range, raw readings with noise.

    Subclasses set ``y_range`` (true output range), ``aux_ranges`` (ranges of the secondary true
    inputs, e.g. ambient temperature) and implement :meth:`draw_unit`, :meth:`raw_reading` and
    :meth:`true_value`.
    """

    output_dim = 1
    primary_input = 0
    normalize = True
    calibration = True
    #: range of the true output quantity, physical units
    y_range: tuple[float, float] = (0.0, 1.0)
    #: ranges of the secondary inputs (true values), physical units
    aux_ranges: tuple[tuple[float, float], ...] = ()
    #: rms noise of the measured secondary inputs (the reference temperature sensor)
    aux_noise: float = 0.0
    #: manufacturing spreads per production lot (a frozen dataclass per family); ``"A"`` is the default
    LOTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, lot: str = "A") -> None:
        if lot not in self.LOTS:
            raise InputError(f"unknown lot {lot!r} for {self.name}; choose one of {', '.join(sorted(self.LOTS))}")
        self.lot = lot
        self.spread = self.LOTS[lot]

    @abstractmethod
    def draw_unit(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw one unit's physical parameters (plain floats)."""

    @abstractmethod
    def raw_reading(self, info: dict[str, Any], y: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Noiseless primary raw reading ``(n,)`` for true outputs ``y (n,)`` and secondary inputs
        ``aux (n, n_aux)``."""

    @abstractmethod
    def true_value(self, info: dict[str, Any], raw: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`raw_reading`: true output ``(n,)`` for raw readings ``raw (n,)``."""

    def measure(self, info: dict[str, Any], raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The unit's reading ``(n,)``: noiseless ``raw (n,)`` plus Gaussian noise, rms ``info["noise"]``."""
        return raw + info["noise"] * rng.standard_normal(raw.shape)

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        info = self.draw_unit(rng)
        n = shots + queries
        y = rng.uniform(*self.y_range, size=n)
        lo, hi = np.asarray(self.aux_ranges, dtype=np.float64).reshape(-1, 2).T
        aux = rng.uniform(lo, hi, size=(n, len(lo)))
        raw = self.measure(info, self.raw_reading(info, y, aux), rng)
        aux_meas = aux + self.aux_noise * rng.standard_normal(aux.shape)
        x = np.column_stack([raw, aux_meas]).astype(np.float32)
        y = y[:, None].astype(np.float32)
        return Task(x[:shots], y[:shots], x[shots:], y[shots:], info)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lot": self.lot}

    def curve(self, info: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """Noiseless true output ``(n, 1)`` float32 of this unit for raw inputs ``x (n, n_inputs)``."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return self.true_value(info, x[:, 0], x[:, 1:])[:, None].astype(np.float32)


# ------------------------------------------------------------------------------------------- NTC
#: Steinhart-Hart-type coefficients A1, B1, C1, D1 of 1/T = sum_k c_k ln(R/R25)^k, T in kelvin, for
#: the Vishay NTCLE100E3 10 kOhm, B25/85 = 3977 K material (Vishay NTCLE100E3 datasheet).
_NTC_SH = np.array([3.354016e-3, 2.569850e-4, 2.620131e-6, 6.383091e-8])
_NTC_B = 3977.0


@dataclass(frozen=True)
class NTCLot:
    """Per-unit spreads of one NTC production lot: relative tolerances ``U(low, high)`` around the nominal values,
    ADC errors in LSB."""

    r25: Range
    b_value: Range
    r_fix: Range
    adc_gain_lsb: Range
    adc_offset_lsb: Range
    noise_lsb: Range


def _ntc_ln_ratio(t_kelvin: np.ndarray) -> np.ndarray:
    """``ln(R/R25)`` ``(n,)`` of the nominal NTC material at ``t_kelvin (n,)``: Newton on the cubic."""
    inv_t = 1.0 / t_kelvin
    x = _NTC_B * (inv_t - _NTC_SH[0])  # Beta-equation starting point
    coef, dcoef = _NTC_SH[::-1], np.polyder(_NTC_SH[::-1])
    for _ in range(8):
        x = x - (np.polyval(coef, x) - inv_t) / np.polyval(dcoef, x)
    return x


@register_family("sensor-ntc")
class NTCThermistor(_SensorFamily):
    """10 kOhm NTC thermistor in a ratiometric divider read by a 12-bit SAR ADC; counts -> degC.

    Circuit: ``Vref -- R_fix -- node -- NTC -- GND``, the node read by an ADC referenced to the same
    ``Vref``, so counts = 2^bits * R/(R + R_fix) * gain + offset (+ noise, rounded, clipped). Counts
    *decrease* with temperature. Range -40 .. 125 degC (the part's continuous operating range).

    The unit's R(T) is the datasheet material curve scaled by its own R25 and B-value:
    ``ln R = ln R25 + (B25/85 / 3977 K) * x(T)``, with ``x(T)`` solving the Vishay 4-term
    Steinhart-Hart fit (a B-value tolerance scales ``ln(R/R25)`` at a given temperature).

    =================== ============================= ===================================================
    parameter           per-unit spread               source
    =================== ============================= ===================================================
    R25                 10 kOhm, U(+-2 %)             Vishay NTCLE100E3 datasheet (R25 tol. +-2/3/5 %)
    B25/85              3977 K, U(+-0.75 %)           Vishay NTCLE100E3 datasheet (10 kOhm type)
    R(T) curve shape    A1..D1 = 3.354016e-3 ..       Vishay NTCLE100E3 datasheet (4-term fit)
    divider R_fix       10 kOhm, U(+-1 %)             typical 1 % thick-film chip resistor
    ADC resolution      12 bit                        typical MCU SAR ADC (e.g. STM32F4)
    ADC gain error      U(+-3 LSB at full scale)      typical of STM32F4 datasheet ADC table (E_G max)
    ADC offset error    U(+-2.5 LSB)                  typical of STM32F4 datasheet ADC table (E_O max)
    ADC noise           U(0.5, 1.5) LSB rms           typical of MCU SAR ADCs on a real board (assumed)
    self-heating        neglected                     <= 0.27 mW vs 7 mW/K dissipation factor: < 0.05 K
    =================== ============================= ===================================================

    Lot ``B``: a second supplier's 10 kOhm / 3977 K part in the wider +-5 % R25 grade (the NTCLE100E3 grades
    are +-2/3/5 %), whose B-value sits high in its band, U(+0.25, +1.75) % (the +-0.75 % band of one
    supplier moved by another's material batch; assumed), on a board with 5 % divider resistors: every unit
    reads systematically cold at the hot end.
    """

    LOTS = {
        "A": NTCLot(r25=(-0.02, 0.02), b_value=(-0.0075, 0.0075), r_fix=(-0.01, 0.01), adc_gain_lsb=(-3.0, 3.0),
                    adc_offset_lsb=(-2.5, 2.5), noise_lsb=(0.5, 1.5)),
        "B": NTCLot(r25=(-0.05, 0.05), b_value=(0.0025, 0.0175), r_fix=(-0.05, 0.05), adc_gain_lsb=(-3.0, 3.0),
                    adc_offset_lsb=(-2.5, 2.5), noise_lsb=(0.5, 1.5)),
    }

    name = "sensor-ntc"
    input_shape = (1,)
    input_names = ("adc_counts",)
    output_names = ("temperature",)
    input_units = ("counts",)
    output_units = ("degC",)
    y_range = (-40.0, 125.0)
    bits = 12

    def draw_unit(self, rng: np.random.Generator) -> dict[str, float]:
        lot = self.spread
        return {
            "r25_ohm": 10e3 * (1 + rng.uniform(*lot.r25)),
            "b25_85_k": _NTC_B * (1 + rng.uniform(*lot.b_value)),
            "r_fix_ohm": 10e3 * (1 + rng.uniform(*lot.r_fix)),
            "adc_gain": 1 + rng.uniform(*lot.adc_gain_lsb) / 2**self.bits,
            "adc_offset_lsb": rng.uniform(*lot.adc_offset_lsb),
            "noise": rng.uniform(*lot.noise_lsb),
            "bits": float(self.bits),
        }

    def raw_reading(self, info: dict[str, Any], y: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Noiseless, unquantised ADC counts ``(n,)`` at temperatures ``y (n,)`` in degC."""
        ln_r = np.log(info["r25_ohm"]) + info["b25_85_k"] / _NTC_B * _ntc_ln_ratio(y + _T0)
        ratio = 1.0 / (1.0 + info["r_fix_ohm"] * np.exp(-ln_r))
        return 2.0 ** info["bits"] * info["adc_gain"] * ratio + info["adc_offset_lsb"]

    def true_value(self, info: dict[str, Any], raw: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Temperature ``(n,)`` in degC at ADC counts ``raw (n,)`` (closed form through the fit)."""
        ratio = (raw - info["adc_offset_lsb"]) / (2.0 ** info["bits"] * info["adc_gain"])
        ratio = np.clip(ratio, 1e-6, 1 - 1e-6)
        x = np.log(info["r_fix_ohm"] * ratio / (1 - ratio) / info["r25_ohm"]) * _NTC_B / info["b25_85_k"]
        return 1.0 / np.polyval(_NTC_SH[::-1], x) - _T0

    def physics_baselines(self) -> dict[str, Any]:
        """Domain calibrations a test engineer would use instead of a generic polynomial."""
        return {"Steinhart-Hart 3-term": self.steinhart_hart_fit}

    def steinhart_hart_fit(self, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> np.ndarray:
        """The thermistor industry's 3-point calibration: ``1/T = A + B ln R + C (ln R)^3``.

        ``R`` is computed from counts with the *nominal* divider (10 kOhm, ideal ADC), so the unit's
        resistor and ADC errors are what the fit must absorb. Least squares when ``k > 3``.
        Args: xs ``(k, 1)`` counts, ys ``(k, 1)`` degC, xq ``(q, 1)`` counts. Returns ``(q, 1)`` degC.
        """

        def design(counts: np.ndarray) -> np.ndarray:
            ratio = np.clip(counts[:, 0].astype(np.float64) / 2.0**self.bits, 1e-6, 1 - 1e-6)
            ln_r = np.log(10e3 * ratio / (1 - ratio))
            return np.column_stack([np.ones_like(ln_r), ln_r, ln_r**3])

        coef, *_ = np.linalg.lstsq(design(xs), 1.0 / (ys[:, 0].astype(np.float64) + _T0), rcond=None)
        return (1.0 / (design(xq) @ coef) - _T0)[:, None]

    def measure(self, info: dict[str, Any], raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy counts, rounded to integers and clipped to ``[0, 2^bits - 1]``."""
        return np.clip(np.rint(super().measure(info, raw, rng)), 0, 2.0 ** info["bits"] - 1)


# ------------------------------------------------------------------------------ bridge sensors
@dataclass(frozen=True)
class BridgeLot:
    """Per-unit spreads of one bridge-sensor production lot, in the raw units of :class:`_BridgeSensor`'s model.

    ``span`` and ``zero`` are ``Tri(min, typ, max)`` (pressure) or relative ``U(low, high)`` of the rated output
    (load cell, see the family); ``tcs`` in 1/degC, ``tc_zero`` in raw units per degC (or relative to RO),
    ``nonlinearity`` as a fraction of span.
    """

    span: Range | Triangle
    zero: Range | Triangle
    tcs: Range
    tc_zero: Range
    nonlinearity: Range


def _draw(rng: np.random.Generator, spread: Range | Triangle) -> float:
    """``U(low, high)`` for a pair, ``Tri(min, typ, max)`` for a triple."""
    return float(rng.triangular(*spread)) if len(spread) == 3 else float(rng.uniform(*spread))


class _BridgeSensor(_SensorFamily):
    """Wheatstone-bridge sensor with temperature cross-sensitivity; inputs (raw, temperature).

    ``raw = zero + tc_zero*dT + span*(1 + tcs*dT) * u*(1 + 4*nonlinearity*(1 - u))`` with
    ``u = y / y_full_scale`` and ``dT = T - t_ref``: zero (offset) and its drift, span and its
    temperature coefficient, and a quadratic end-point nonlinearity peaking at mid-scale (value
    ``nonlinearity`` as a fraction of span). ``info`` keys: ``zero``, ``tc_zero`` (raw units and
    raw units per degC), ``span`` (raw units), ``tcs`` (1/degC), ``nonlinearity``, ``noise`` (raw rms).
    """

    input_shape = (2,)
    #: reference temperature of the datasheet spec, degC
    t_ref: float = 25.0
    #: rms scatter of the reference temperature sensor, degC (assumed)
    aux_noise = 0.1

    def raw_reading(self, info: dict[str, Any], y: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Noiseless raw output ``(n,)`` for true values ``y (n,)`` at temperatures ``aux[:, 0]``."""
        dt = aux[:, 0] - self.t_ref
        u = y / self.y_range[1]
        shape = u * (1 + 4 * info["nonlinearity"] * (1 - u))
        return info["zero"] + info["tc_zero"] * dt + info["span"] * (1 + info["tcs"] * dt) * shape

    def true_value(self, info: dict[str, Any], raw: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """True value ``(n,)`` for raw outputs ``raw (n,)`` at temperatures ``aux[:, 0]`` (quadratic root)."""
        dt = aux[:, 0] - self.t_ref
        c = (raw - info["zero"] - info["tc_zero"] * dt) / (info["span"] * (1 + info["tcs"] * dt))
        a = 4 * info["nonlinearity"]  # solve a u^2 - (1 + a) u + c = 0, the root near u = c
        u = 2 * c / ((1 + a) + np.sqrt(np.maximum((1 + a) ** 2 - 4 * a * c, 0.0)))
        return u * self.y_range[1]


@register_family("sensor-loadcell")
class LoadCell(_BridgeSensor):
    """50 kg single-point strain-gauge load cell read by a 24-bit bridge ADC; (mV/V, degC) -> kg.

    Raw signal in mV/V (ratiometric), load 0 .. 50 kg, ambient -10 .. 40 degC (the usual compensated
    range), reference temperature 20 degC. Hysteresis and creep are not modelled (load applied
    increasing only, as datasheets define nonlinearity).

    ================== =========================== =========================================================
    parameter          per-unit spread             source
    ================== =========================== =========================================================
    capacity           50 kg                       typical single-point cell (HBM PW6D / Zemic L6D class)
    rated output (RO)  2.0 mV/V, U(+-0.1 %)        typical of trimmed OIML C3 single-point cell datasheets
    zero balance       U(+-2 % RO)                 typical of load cell datasheets (+-1 .. 2 % RO)
    nonlinearity       U(+-0.02 % RO)              typical of OIML C3 cells (0.017 .. 0.03 % RO)
    TC of span         U(+-0.002 %/degC)           typical of C3 datasheets (0.0015 .. 0.003 % per degC)
    TC of zero         U(+-0.003 % RO/degC)        typical of C3 datasheets (0.002 .. 0.005 % RO per degC)
    ADC noise          3e-5 mV/V rms               Avia Semiconductor HX711 datasheet: 50 nV rms input noise
                                                   (gain 128, 10 SPS) = 1e-5 mV/V at 5 V excitation; x3 for
                                                   excitation/board noise
                                                   (assumed; bench tests report 14-16 noise-free bits)
    temperature sensor 0.1 degC rms scatter        assumed
    ================== =========================== =========================================================

    Lot ``B``: a second supplier's untrimmed cell of the lower OIML C1 class (tolerances about three times
    C3's): rated output 2.0 mV/V U(-0.5, +0.1) % (untrimmed cells ship low), zero balance U(+-5 % RO), TC of span
    U(-0.008, -0.002) %/degC (uncompensated: one sign), TC of zero U(+-0.008 % RO/degC), nonlinearity
    U(+0.02, +0.06) % RO (a systematic bow of a softer spring element). Assumed, typical of C1 datasheets.
    """

    LOTS = {
        "A": BridgeLot(span=(-1e-3, 1e-3), zero=(-0.02, 0.02), tcs=(-2e-5, 2e-5), tc_zero=(-3e-5, 3e-5),
                       nonlinearity=(-2e-4, 2e-4)),
        "B": BridgeLot(span=(-5e-3, 1e-3), zero=(-0.05, 0.05), tcs=(-8e-5, -2e-5), tc_zero=(-8e-5, 8e-5),
                       nonlinearity=(2e-4, 6e-4)),
    }

    name = "sensor-loadcell"
    input_names = ("bridge_signal", "temperature")
    output_names = ("load",)
    input_units = ("mV/V", "degC")
    output_units = ("kg",)
    y_range = (0.0, 50.0)
    aux_ranges = ((-10.0, 40.0),)
    t_ref = 20.0
    rated_output = 2.0  # mV/V

    def draw_unit(self, rng: np.random.Generator) -> dict[str, float]:
        ro, lot = self.rated_output, self.spread
        return {
            "zero": ro * _draw(rng, lot.zero),
            "tc_zero": ro * _draw(rng, lot.tc_zero),
            "span": ro * (1 + _draw(rng, lot.span)),
            "tcs": _draw(rng, lot.tcs),
            "nonlinearity": _draw(rng, lot.nonlinearity),
            "noise": 3e-5,
        }


@register_family("sensor-pressure")
class PiezoPressure(_BridgeSensor):
    """Uncompensated piezoresistive (MEMS) pressure sensor, 0 .. 100 kPa; (mV, degC) -> kPa.

    Raw differential bridge output in mV at 3.0 V excitation (ratiometric), pressure 0 .. 100 kPa,
    temperature -20 .. 85 degC, reference 25 degC. The large negative span TC of uncompensated
    silicon (about -0.2 %/degC) makes the temperature cross-sensitivity clearly visible.

    ================= ============================ =========================================================
    parameter         per-unit spread              source
    ================= ============================ =========================================================
    full-scale span   Tri(45, 60, 90) mV           NXP/Freescale MPX100 / MPX53 datasheets (min/typ/max,
                                                   Vs = 3 V)
    offset            Tri(0, 20, 35) mV            typical of NXP MPX100 / MPX10 uncompensated datasheets
    TC of span        U(-0.22, -0.16) %/degC       typical of NXP MPX10 / MPX53 / MPX100 (TCVFSS)
    TC of offset      U(+-15) uV/degC              typical of NXP MPX100 / MPX53 (TCVoff, typ. +-15 uV/C)
    nonlinearity      U(+-0.25 %) of span          typical of NXP MPX100 (end-point linearity)
    ADC noise         10 uV rms                    assumed: ~1 LSB of TI ADS1115 at +-0.256 V range
    temp. sensor      0.1 degC rms scatter         assumed
    ================= ============================ =========================================================

    Lot ``B``: a second supplier's die with lower-doped piezoresistors on a thinner diaphragm. Lower doping
    raises both the piezoresistive coefficient's temperature dependence and the sheet resistance (Kanda, IEEE
    Trans. Electron Devices 29(1), 1982: the p-type coefficient falls about 0.25-0.3 %/degC near 1e18 cm^-3
    against about 0.15-0.2 %/degC near 1e19-1e20), and a thin diaphragm bends with membrane stiffening, a
    same-sign bow of several tenths of a percent:

    ================= ============================ =========================================================
    parameter         lot B spread                 why plausible
    ================= ============================ =========================================================
    full-scale span   Tri(35, 45, 60) mV           other die and bridge resistance (assumed)
    offset            Tri(-15, 0, 15) mV           a laser-untrimmed bridge of another process (assumed)
    TC of span        U(-0.30, -0.24) %/degC       lower doping (Kanda 1982; see above)
    TC of offset      U(0, +40) uV/degC            a one-sided bridge mismatch (assumed)
    nonlinearity      U(+0.3, +0.8) % of span      thin-diaphragm membrane stiffening (assumed)
    ================= ============================ =========================================================
    """

    LOTS = {
        "A": BridgeLot(span=(45.0, 60.0, 90.0), zero=(0.0, 20.0, 35.0), tcs=(-0.0022, -0.0016),
                       tc_zero=(-0.015, 0.015), nonlinearity=(-0.0025, 0.0025)),
        "B": BridgeLot(span=(35.0, 45.0, 60.0), zero=(-15.0, 0.0, 15.0), tcs=(-0.0030, -0.0024),
                       tc_zero=(0.0, 0.040), nonlinearity=(0.003, 0.008)),
    }

    name = "sensor-pressure"
    input_names = ("bridge_output", "temperature")
    output_names = ("pressure",)
    input_units = ("mV", "degC")
    output_units = ("kPa",)
    y_range = (0.0, 100.0)
    aux_ranges = ((-20.0, 85.0),)
    t_ref = 25.0

    def draw_unit(self, rng: np.random.Generator) -> dict[str, float]:
        lot = self.spread
        return {
            "zero": _draw(rng, lot.zero),
            "tc_zero": _draw(rng, lot.tc_zero),
            "span": _draw(rng, lot.span),
            "tcs": _draw(rng, lot.tcs),
            "nonlinearity": _draw(rng, lot.nonlinearity),
            "noise": 0.01,
        }
