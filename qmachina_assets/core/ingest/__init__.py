"""Ingest: raw Databento MBO files in, validated and immutable bronze partitions (date × symbol) out.

DBN decode/validate/write, the synthetic generator, the lake layout and landing, bronze and its checks.
"""
