"""The I/O side of kepler/: what starters, activities and the worker use to talk to
Temporal (operations, freezes, the connection) and to read Kubernetes (clusters, pod
logs). Workflows never import these; everything else in kepler/ is pure."""
