"""Probes: one measurement each (timing, memory, flops, power). They never import the CLI."""
