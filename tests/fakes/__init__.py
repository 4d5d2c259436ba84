"""In-memory activities and sample workflows the workflow tests share."""
