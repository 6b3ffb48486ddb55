"""keyart gateway."""
