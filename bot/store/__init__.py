"""SQLite: the connection, group commit, checkpoints, rows, queries, migrations, backup.

SQL lives only in this package; callers ask ``Store`` (database.py) for what they need.
"""
