"""Fakes of vendor libraries at the suite's seams (NVML) for tests without the hardware."""
