"""Partitions of the data layers: (UTC trading date × contract symbol).

Dates are a daily time dimension (backfills by range, `--from/--to`); symbols are dynamic, added by
the raw-file sensor as contracts of the locked root appear in the lake.
"""

import dagster as dg

DATE_START = "2020-01-01"

date_partitions_def = dg.DailyPartitionsDefinition(start_date=DATE_START, timezone="UTC", end_offset=1)
symbol_partitions_def = dg.DynamicPartitionsDefinition(name="symbols")
date_symbol_partitions_def = dg.MultiPartitionsDefinition(
    {"date": date_partitions_def, "symbol": symbol_partitions_def}
)


def partition_key(date: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date, "symbol": symbol})
