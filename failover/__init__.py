"""Failover: end-to-end probes, per-uplink decisions and route control."""
