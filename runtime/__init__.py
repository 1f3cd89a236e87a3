"""keel's runtime: the app container, the run manager, the event log's producers and the limits.

Both HTTP dialects (and the CLI) are thin layers over this package; nothing here imports `api`.
"""
