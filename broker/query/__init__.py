"""One query on the broker: the pipeline, the channel to the sandbox, and secure sums across partitions."""
