"""Gold: silver in, features out (the built-in force block and flow score, and Gold DSL feature sets).

One numba kernel per formula, shared by the batch path (a partition) and the stream path (one bin at a time).
"""
