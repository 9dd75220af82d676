"""The GPU side of the resource sampler: a small seam, and NVML behind it.

This is the only module that imports ``pynvml`` (the ``nvidia-ml-py``
distribution).  The sampler (:mod:`producers.sampler`) talks to a
:class:`GpuBackend` only, so tests drive it with a fake on machines without
a GPU, and :class:`NvmlBackend` is the real adapter.

Readings are grouped: one group is one NVML call (or a fixed pair of calls)
and yields one or more values whose names carry their unit:

==============  ==============================================================
group           values
==============  ==============================================================
``utilization`` ``util_pct`` (SM busy), ``mem_util_pct`` (memory controller busy)
``memory``      ``mem_used_bytes``, ``mem_total_bytes``
``power``       ``power_w``
``power_limit`` ``power_limit_w`` (the enforced limit)
``temperature`` ``temp_c``
``clocks``      ``sm_clock_mhz``, ``mem_clock_mhz``
``ecc``         ``ecc_corrected_count``, ``ecc_uncorrected_count`` (volatile: since the driver loaded)
``pcie``        ``pcie_tx_bytes_per_s``, ``pcie_rx_bytes_per_s`` (NVML samples these over ~20 ms)
==============  ==============================================================

Plus :meth:`GpuBackend.process_memory` (group ``processes``): GPU memory per
process id, from ``nvmlDeviceGetComputeRunningProcesses``.

A group the device does not support raises :class:`FieldUnsupported`; the
sampler then switches that group off for that device for good.  Any other
failure of a read raises :class:`GpuError` and is retried at the next sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

try:  # nvidia-ml-py is a base dependency, but a trainer may run without it
    import pynvml
except ImportError:  # pragma: no cover - exercised only where it is absent
    pynvml = None

#: Every group :meth:`GpuBackend.read` understands, in sampling order.
GROUPS: tuple[str, ...] = (
    "utilization",
    "memory",
    "power",
    "power_limit",
    "temperature",
    "clocks",
    "ecc",
    "pcie",
)


class GpuUnavailable(Exception):
    """No GPU can be sampled (no NVML library, no driver, no device)."""


class GpuError(Exception):
    """One reading failed this time (a transient driver error); retried next sample."""


class FieldUnsupported(GpuError):
    """The device does not support this reading; asking again will not help."""


@dataclass(frozen=True)
class GpuFacts:
    """What does not change during a run: the driver and each device's identity."""

    driver_version: str
    cuda_driver_version: int
    #: One map per device, by NVML index: ``index``, ``name``, ``uuid``.
    devices: list[dict[str, Any]] = field(default_factory=list)

    def to_map(self) -> dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "gpus": [dict(d) for d in self.devices],
        }


class GpuBackend(Protocol):
    """What the sampler needs from a GPU library.  Methods may block (driver calls)."""

    def open(self) -> GpuFacts:
        """Initialise the library; return the static facts. Raises :class:`GpuUnavailable`."""
        ...

    def read(self, index: int, group: str) -> dict[str, float]:
        """The values of ``group`` (see :data:`GROUPS`) for device ``index``.

        Raises :class:`FieldUnsupported` or :class:`GpuError`.
        """
        ...

    def process_memory(self, index: int) -> dict[int, int]:
        """GPU memory in bytes used by each process (pid) on device ``index``.

        Raises :class:`FieldUnsupported` or :class:`GpuError`.
        """
        ...

    def close(self) -> None:
        """Release the library (never raises)."""
        ...


def _unsupported_codes() -> frozenset[int]:
    if pynvml is None:
        return frozenset()
    names = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_FUNCTION_NOT_FOUND")
    return frozenset(int(getattr(pynvml, n)) for n in names if hasattr(pynvml, n))


class NvmlBackend:
    """:class:`GpuBackend` on NVML through ``pynvml``.

    ``open`` raises :class:`GpuUnavailable` when the library, the driver or
    every device is missing.  NVML calls release the GIL (ctypes), so a
    background sampler thread does not hold up the training thread while the
    driver answers.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._open = False
        self._unsupported = _unsupported_codes()

    def open(self) -> GpuFacts:
        if pynvml is None:
            raise GpuUnavailable("nvidia-ml-py (pynvml) is not installed")
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise GpuUnavailable(f"NVML could not start: {_describe(exc)}") from None
        self._open = True
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            cuda = int(_optional(pynvml.nvmlSystemGetCudaDriverVersion, default=0))
            devices = [
                {
                    "index": i,
                    "name": _text(_optional(pynvml.nvmlDeviceGetName, h, default="")),
                    "uuid": _text(_optional(pynvml.nvmlDeviceGetUUID, h, default="")),
                }
                for i, h in enumerate(self._handles)
            ]
        except Exception as exc:  # noqa: BLE001 - any driver failure here means no GPU sampling
            self.close()
            raise GpuUnavailable(f"NVML could not list devices: {_describe(exc)}") from None
        if not self._handles:
            self.close()
            raise GpuUnavailable("NVML found no GPU")
        return GpuFacts(driver_version=driver, cuda_driver_version=cuda, devices=devices)

    def read(self, index: int, group: str) -> dict[str, float]:
        reader = _READERS.get(group)
        if reader is None:
            raise FieldUnsupported(f"unknown group {group!r}")
        return self._call(reader, self._handles[index])

    def process_memory(self, index: int) -> dict[int, int]:
        procs = self._call(pynvml.nvmlDeviceGetComputeRunningProcesses, self._handles[index])
        out: dict[int, int] = {}
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            # None (NVML_VALUE_NOT_AVAILABLE) under some virtualisation modes.
            if isinstance(used, int) and used >= 0:
                out[int(p.pid)] = out.get(int(p.pid), 0) + used
        return out

    def close(self) -> None:
        if self._open:
            self._open = False
            self._handles = []
            try:
                pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001, S110 - nothing useful to do at shutdown
                pass

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except GpuError:
            raise
        except Exception as exc:  # noqa: BLE001 - pynvml raises NVMLError subclasses
            code = getattr(exc, "value", None)
            if code in self._unsupported:
                raise FieldUnsupported(_describe(exc)) from None
            raise GpuError(_describe(exc)) from None


def _utilization(h: Any) -> dict[str, float]:
    u = pynvml.nvmlDeviceGetUtilizationRates(h)
    return {"util_pct": float(u.gpu), "mem_util_pct": float(u.memory)}


def _memory(h: Any) -> dict[str, float]:
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    return {"mem_used_bytes": float(m.used), "mem_total_bytes": float(m.total)}


def _power(h: Any) -> dict[str, float]:
    return {"power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0}  # NVML reports mW


def _power_limit(h: Any) -> dict[str, float]:
    return {"power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0}


def _temperature(h: Any) -> dict[str, float]:
    return {"temp_c": float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))}


def _clocks(h: Any) -> dict[str, float]:
    return {
        "sm_clock_mhz": float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
        "mem_clock_mhz": float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
    }


def _ecc(h: Any) -> dict[str, float]:
    def total(kind: int) -> float:
        return float(pynvml.nvmlDeviceGetTotalEccErrors(h, kind, pynvml.NVML_VOLATILE_ECC))

    return {
        "ecc_corrected_count": total(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
        "ecc_uncorrected_count": total(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
    }


def _pcie(h: Any) -> dict[str, float]:
    # NVML reports KB/s.
    tx = pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_TX_BYTES)
    rx = pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_RX_BYTES)
    return {"pcie_tx_bytes_per_s": tx * 1024.0, "pcie_rx_bytes_per_s": rx * 1024.0}


_READERS: dict[str, Callable[[Any], dict[str, float]]] = {
    "utilization": _utilization,
    "memory": _memory,
    "power": _power,
    "power_limit": _power_limit,
    "temperature": _temperature,
    "clocks": _clocks,
    "ecc": _ecc,
    "pcie": _pcie,
}


def _optional(fn: Callable[..., Any], *args: Any, default: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a fact the driver does not know is left at its default
        return default


def _text(value: Any) -> str:
    if isinstance(value, bytes):  # older pynvml returned bytes
        return value.decode("utf-8", "replace")
    return str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:256]
