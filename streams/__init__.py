"""keyart streams."""
