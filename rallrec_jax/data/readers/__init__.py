"""Readers for the official file formats of MovieLens (1M, 100K), Book-Crossing and Amazon 2018, one module per
data set: movielens.py, bookcrossing.py, amazon.py.

Each reader returns a `RawDataset` (raw.py): the interactions as parallel numpy arrays of official ids, plus
item and user tables of text fields. Readers check what the format promises and fail loudly, naming
the file and the 1-based line, on anything else (truncated lines, non-numeric fields, unknown ids,
undecodable bytes, empty or missing files; the line and field access with those errors is lines.py). The
documented exceptions are skipped and *counted* in `RawDataset.skipped`: the Book-Crossing dump's known dirt,
and the ratings a temporal data set cannot use (a negative timestamp; MovieLens: a repeated (user, item)
rating). Every reader accounts for every row of every file it reads (`RawDataset.accounting`: rows = kept +
each skip reason, checked), so the statistics show every row that did not make it, and why.
"""
