"""Each workflow, every branch, on the time-skipping server with in-memory activities; replay."""
