"""Engine: bronze MBO records in, silver out (L3 book → absolute-tick physics → fixed-width bins of ±R ticks).

The same `Engine` object serves offline partitions, the replay stream and live ingestion; checkpoints round-trip it.
"""
