"""The WebSocket stream: a served version in, `runtime_config` + per-bin frames out to every subscriber.

protocol (messages, close codes), source (registry → served version), replay (engine → bin frames),
session (one replay fanned out to its clients), wire (frame bytes written once per bin).
"""
