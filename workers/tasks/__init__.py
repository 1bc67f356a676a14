"""Volunteer tasks, one module per capability; ``base`` holds what they share."""
