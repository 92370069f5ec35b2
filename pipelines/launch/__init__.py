"""Jobs on a cluster or on this machine through submitit: the executors by name, the cluster options
every launching command shares, and submitting / waiting for / summarising a job array
(`executors`); the `extract features` array (`extract_array`)."""
