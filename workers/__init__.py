"""keyart workers."""
