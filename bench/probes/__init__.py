"""Measurements of a cell, one kind of object in one registry (``base``: the protocol and
its phases; ``registry``: the ordered registry): latency (timing), peak memory (memory),
parameters and MACs (counts, with sizes and macs), counted traffic and the roofline
(traffic, roofline), the output check (output_check), power and energy (power, nvml,
rapl), contention (contention, gpu_processes) and the speed canary (canary). They never
import the CLI, the runner or the worker."""
