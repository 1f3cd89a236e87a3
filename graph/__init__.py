"""keel's graph: state, context, settings, dependencies and the compiled state machine."""
