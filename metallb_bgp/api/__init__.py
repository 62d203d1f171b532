"""What users write: pydantic models of the metallb.io kinds and of the core objects we read."""
