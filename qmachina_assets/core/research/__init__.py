"""Research: silver + gold in, evaluated models out (config chain, datasets, signals, TP/SL evaluation, sweeps).

Walk-forward sweeps write an append-only results store and MLflow runs that the registry promotes from.
"""
