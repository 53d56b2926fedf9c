"""Training data: token shards, pre-tokenisation, length-grouped sampling and batch sources."""
