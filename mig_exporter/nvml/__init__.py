"""The NVML boundary: the only package (with the simulator) that imports pynvml.

``session`` owns NVML's lifecycle, ``read`` turns NVML into a Snapshot, ``write`` (remediate's)
is the only module that changes the hardware.
"""
