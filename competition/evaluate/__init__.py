"""Evaluate stage: metrics, submission files, and the leaderboard."""
