"""What every workflow shares that is not the lifecycle itself: the saga, the approval
gate, step options and metrics (deterministic code only)."""
