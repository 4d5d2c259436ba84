"""Activities against the stand-ins and real components, through the real client libraries."""
