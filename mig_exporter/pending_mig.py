"""What applies a pending MIG mode change: the one answer diagnose and remediate both give.

mig-facts.md: a mode change the driver could not activate (the GPU was in use) stays pending. On
Ampere (A100, A30) a GPU reset or a reboot applies it. On Hopper and later enabling MIG needs no
reset: setting the mode again once the GPU is idle applies it, and since the mode does not survive
a driver unload, a reboot ends with MIG off instead. The architecture is NVML's
(``nvmlDeviceGetArchitecture``); where NVML did not say, the reset is advised (it applies a
pending mode on any GPU) and nothing is claimed about a reboot.
"""

from __future__ import annotations

from dataclasses import dataclass

from mig_exporter.model import Gpu


@dataclass(frozen=True)
class PendingMigChange:
    enable: bool  # the mode waiting: True for a pending enable
    reset: bool  # a GPU reset applies it; False: enabling MIG again on the idle GPU does, no reset
    reboot: bool | None  # a reboot applies it too; None: not known (NVML did not name the architecture)

    def what_applies_it(self) -> str:
        """The clause both commands print: ``a GPU reset or a reboot applies it``."""
        if not self.reset:
            return ("on Hopper and later, enabling MIG again once the GPU is idle applies it with no reset; "
                    "a reboot would end with MIG off")
        return "a GPU reset or a reboot applies it" if self.reboot else "a GPU reset applies it"


def pending_mig_change(gpu: Gpu) -> PendingMigChange | None:
    """What applies ``gpu``'s pending MIG mode; None when no change is pending."""
    if not gpu.mig_pending_change:
        return None
    enable = bool(gpu.mig_mode_pending)
    architecture = None if gpu.mig_capability is None else gpu.mig_capability.architecture
    if architecture is None:
        return PendingMigChange(enable, reset=True, reboot=None if enable else True)
    if enable and architecture != "ampere":
        return PendingMigChange(enable, reset=False, reboot=False)
    return PendingMigChange(enable, reset=True, reboot=True)
