"""Measurements of a cell: latency (timing), peak memory (memory), multiply-adds (macs),
counted traffic (traffic), power and energy (power, nvml, rapl) and contention
(contention). They never import the CLI, the runner or the worker."""
