"""``mig-exporter remediate``: partition GPUs with MIG, safely.

``layout`` turns flags or a mig-parted config into targets; ``plan`` (pure, with the placement
search of ``mig_exporter.packing``, which the advice shares) turns a Snapshot and the targets into
``steps`` and blockers; ``apply`` runs the steps through ``nvml.write`` under a ``lock`` and a
``journal``, undoing them on failure; ``verify`` compares the hardware read again with the plan;
``report`` and ``artifacts`` say what was done and how to use it.
"""
