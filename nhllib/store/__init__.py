"""Run folders on disk: the schema of every table, atomic writes, completion markers, folder locks."""
