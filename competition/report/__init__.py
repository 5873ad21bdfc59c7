"""Report stage: pictures a person would rather look at than read."""
