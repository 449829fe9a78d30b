"""``mig-exporter diagnose``: ``report`` builds the data, ``explain`` words the findings,
``render_text`` and ``render_json`` print it, ``command`` gathers the inputs (NVML, /proc)."""
