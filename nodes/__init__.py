"""One module per node. A node is a small async function `(state, runtime) -> partial update`,
built by a `make_*` factory that closes over the long-lived `Deps`."""
