"""The `keel` command line: serve, ingest, chat, eval, bench."""
