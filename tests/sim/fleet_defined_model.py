"""A fleet file that defines a GPU model the code has never heard of (DESIGN.md, "Models a fleet
file defines"), for the tests that run the product on it.

X100-TEST is unlike every built-in model: 8 memory slices and 8 compute slices (an ``8g``), profile
IDs 31/42/53/61/71 that no built-in model uses, a ``+gfx`` profile, and no 3-slice profile.
"""

from __future__ import annotations

X100_MODEL = """\
models:
  X100-TEST:
    nvml_name: NVIDIA X100 Test
    memory_total_mib: 98304
    architecture: hopper
    memory_slices: 8
    compute_slices: 8
    pci_device_id: 0x2999
    profiles:
      - {name: 1g.12gb, enum: 0, id: 31, memory_mib: 11776, multiprocessors: 20, max_count: 8, slices: 1,
         placement_starts: [0, 1, 2, 3, 4, 5, 6, 7], placement_size: 1, copy_engines: 1}
      - {name: 2g.24gb, enum: 1, id: 42, memory_mib: 23808, multiprocessors: 40, max_count: 4, slices: 2,
         placement_starts: [0, 2, 4, 6], placement_size: 2, copy_engines: 2, decoders: 1}
      - {name: 4g.48gb, enum: 3, id: 53, memory_mib: 47872, multiprocessors: 80, max_count: 2, slices: 4,
         placement_starts: [0, 4], placement_size: 4, copy_engines: 4, decoders: 2}
      - {name: 8g.96gb, enum: 5, id: 61, memory_mib: 96000, multiprocessors: 160, max_count: 1, slices: 8,
         placement_starts: [0], placement_size: 8, copy_engines: 8, decoders: 4, jpeg: 2, ofa: 1}
      - {name: 1g.12gb+gfx, enum: 10, id: 71, memory_mib: 11776, multiprocessors: 20, max_count: 1, slices: 1,
         placement_starts: [0, 1, 2, 3, 4, 5, 6, 7], placement_size: 1, copy_engines: 1}
"""

# GPU 0 partitioned with placements the file gives, GPU 1 MIG enabled and empty, GPU 2 shared by
# two processes without MIG (what diagnose advises on and remediate partitions).
X100_FLEET = X100_MODEL + """\
gpus:
  - model: X100-TEST
    mig: enabled
    instances:
      - profile: 4g.48gb
        placement: 4
        processes: [{pid: 5001, name: python, used_memory_mib: 30000}]
      - {profile: 2g.24gb, placement: 2}
      - {profile: 1g.12gb, placement: 0}
  - {model: X100-TEST, mig: enabled}
  - model: X100-TEST
    processes:
      - {pid: 6001, name: python, used_memory_mib: 20000}
      - {pid: 6002, name: python, used_memory_mib: 30000}
"""
