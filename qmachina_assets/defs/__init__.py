"""The Dagster layer: one folder per stage; shared partitions and resources beside them."""
