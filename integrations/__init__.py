"""One module per outside system; nodes depend on the small protocols these implement."""
